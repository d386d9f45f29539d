"""The actuator interface and the factory that builds one from the rollout config."""

from __future__ import annotations

import logging
from typing import Protocol

from meshlens.analytics.errors import RolloutConfigError
from meshlens.analytics.gate.config import RolloutConfig
from meshlens.analytics.gate.routes import check_weights

log = logging.getLogger(__name__)


class Actuator(Protocol):
    """Moves the traffic split. `set_canary_weight` applies (100 - w, w), reads it back and
    raises (ActuatorError, RouteNotOwned, WeightError) unless the result is verified."""

    name: str

    def set_canary_weight(self, weight: int) -> None: ...

    def current_canary_weight(self) -> int | None: ...

    def describe(self) -> str: ...


class NoneActuator:
    """Advise only: the decision is printed and recorded, no traffic moves."""

    name = "none"

    def __init__(self, rollout: str) -> None:
        self.rollout = rollout
        self.advised: list[int] = []

    def set_canary_weight(self, weight: int) -> None:
        check_weights(100 - weight, weight)
        self.advised.append(weight)
        log.info(
            "gate %s advises: baseline %d%%, canary %d%% (actuator none: nothing applied)",
            self.rollout,
            100 - weight,
            weight,
        )

    def current_canary_weight(self) -> int | None:
        return self.advised[-1] if self.advised else None

    def describe(self) -> str:
        return "none (advice only)"


def build_actuator(cfg: RolloutConfig) -> Actuator:
    """The actuator the config names (imports only the one needed)."""
    kind, opts = cfg.actuator.type, cfg.actuator.options
    if kind == "none":
        return NoneActuator(cfg.rollout)
    if kind == "envoy":
        from meshlens.analytics.gate.actuators.envoy import EnvoyActuator

        return EnvoyActuator.from_options(opts, cfg)
    if kind == "file":
        from meshlens.analytics.gate.actuators.file import FileActuator

        return FileActuator.from_options(opts, cfg)
    if kind == "kubernetes":
        from meshlens.analytics.gate.actuators.kubernetes import KubernetesActuator

        return KubernetesActuator.from_options(opts, cfg)
    raise RolloutConfigError(cfg.source, "actuator.type", f"unknown actuator {kind!r}")
