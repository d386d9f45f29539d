"""Move live weights on a running Envoy through its admin runtime.

The route uses `weighted_clusters` with `runtime_key_prefix: P`; Envoy then reads each
cluster's weight from the runtime key `P.<cluster name>` (the config value is the default).
Both keys change in ONE `POST /runtime_modify?P.base=90&P.canary=10` (an admin layer must be
configured in `layered_runtime`), and `GET /runtime` reads the values back for verification.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests

from meshlens.analytics.errors import ActuatorError, RolloutConfigError
from meshlens.analytics.gate.config import RolloutConfig
from meshlens.analytics.gate.routes import check_weights


class EnvoyActuator:
    name = "envoy"

    def __init__(
        self, admin_url: str, baseline_key: str, canary_key: str, timeout_s: float = 5.0
    ) -> None:
        self.admin_url = admin_url.rstrip("/")
        self.baseline_key = baseline_key
        self.canary_key = canary_key
        self.timeout_s = timeout_s

    @classmethod
    def from_options(cls, opts: Mapping[str, Any], cfg: RolloutConfig) -> EnvoyActuator:
        admin = str(opts.get("admin") or opts.get("adminUrl") or opts.get("admin_url") or "")
        if not admin:
            raise RolloutConfigError(
                cfg.source,
                "actuator.admin",
                "the Envoy admin URL is required, e.g. http://127.0.0.1:15000",
            )
        if not admin.startswith(("http://", "https://")):
            admin = "http://" + admin
        prefix = str(opts.get("runtimeKeyPrefix") or opts.get("runtime_key_prefix") or "")
        b_key = str(opts.get("baselineKey") or opts.get("baseline_key") or "")
        c_key = str(opts.get("canaryKey") or opts.get("canary_key") or "")
        if not (b_key and c_key) and opts.get("host") and opts.get("port") and not prefix:
            # The local mesh's convention (meshlens/localmesh/bootstrap.py): prefix
            # meshlens.weights.<host>.<port>, subset clusters outbound|<port>|<subset>|<host>.
            host, port = str(opts["host"]), int(opts["port"])
            prefix = f"meshlens.weights.{host}.{port}"
            b_key = f"{prefix}.outbound|{port}|{cfg.baseline}|{host}"
            c_key = f"{prefix}.outbound|{port}|{cfg.canary}|{host}"
        if not (b_key and c_key):
            b_cluster = str(opts.get("baselineCluster") or opts.get("baseline_cluster") or "")
            c_cluster = str(opts.get("canaryCluster") or opts.get("canary_cluster") or "")
            if not (prefix and b_cluster and c_cluster):
                raise RolloutConfigError(
                    cfg.source,
                    "actuator",
                    "give runtimeKeyPrefix + baselineCluster + canaryCluster, baselineKey + "
                    "canaryKey, or host + port (the local mesh's keys)",
                )
            b_key, c_key = f"{prefix}.{b_cluster}", f"{prefix}.{c_cluster}"
        return cls(admin, b_key, c_key, float(opts.get("timeout", 5.0)))

    def _request(self, method: str, path: str, **kw: Any) -> requests.Response:
        url = self.admin_url + path
        try:
            resp = requests.request(method, url, timeout=self.timeout_s, **kw)
        except requests.RequestException as exc:
            raise ActuatorError("envoy", self.admin_url, f"{method} {path}: {exc}") from None
        if resp.status_code != 200:
            raise ActuatorError(
                "envoy",
                self.admin_url,
                f"{method} {path} -> HTTP {resp.status_code}: {resp.text.strip()[:200]}",
            )
        return resp

    def runtime(self) -> dict[str, str]:
        """The final runtime values of our two keys ("" when not set in any layer)."""
        try:
            entries = self._request("GET", "/runtime").json().get("entries", {})
        except ValueError:
            raise ActuatorError("envoy", self.admin_url, "GET /runtime is not JSON") from None
        return {
            k: str((entries.get(k) or {}).get("final_value", ""))
            for k in (self.baseline_key, self.canary_key)
        }

    def set_canary_weight(self, weight: int) -> None:
        check_weights(100 - weight, weight)
        # One request: Envoy applies both keys in one runtime snapshot (no moment at 100+w).
        self._request(
            "POST",
            "/runtime_modify",
            params={self.baseline_key: str(100 - weight), self.canary_key: str(weight)},
        )
        got = self.runtime()
        want = {self.baseline_key: str(100 - weight), self.canary_key: str(weight)}
        if got != want:
            raise ActuatorError("envoy", self.admin_url, f"read back {got}, expected {want}")

    def current_canary_weight(self) -> int | None:
        got = self.runtime()
        try:
            b, c = int(got[self.baseline_key]), int(got[self.canary_key])
        except ValueError:
            return None  # not overridden: Envoy uses the weights in its config
        check_weights(b, c)
        return c

    def describe(self) -> str:
        return f"envoy {self.admin_url} runtime {self.baseline_key} / {self.canary_key}"
