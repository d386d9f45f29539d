"""The rollout config (`rollout.yaml`): what to roll out, how to step, what the verdicts do, and
which actuator moves the traffic. Parsed once into frozen values; every field is checked here so
the state machine never sees a bad number.

```yaml
rollout: productpage                 # name: state file, verdict rows, metrics label
service: productpage.default.svc.cluster.local
baseline: v1                         # judged against each other on `selector`
canary: v2
selector: version
judge: {config: canary.yaml}         # the judge's CanaryConfig file (default: the judge's defaults)
analysis:
  interval: 1m
  window: rollout                    # rollout | step | a lookback such as 10m
  stepWeight: 10                     # with maxWeight: 10, 20, ... maxWeight
  maxWeight: 50
  # stepWeights: [5, 10, 25, 50]     # or an explicit list
  successesPerStep: 1
  failureLimit: 2                    # cumulative failed analyses that roll back
  consecutiveFailureLimit: 0         # 0 = off
  inconclusive: hold                 # hold | pause | fail
  inconclusiveLimit: 0               # with hold: pause after this many in a row (0 = never)
  progressDeadline: 30m              # 0 = off
  deadlineAction: rollback           # rollback | pause
dryRun: false
apply: {retries: 3, backoff: 1s}
notify: {url: "", timeout: 5s}
actuator: {type: none}               # kubernetes | file | envoy | none (options per type)
```
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from meshlens.analytics import yaml_input
from meshlens.analytics.errors import RolloutConfigError
from meshlens.analytics.gate.state import rollout_name_problem
from meshlens.settings import parse_duration

ACTUATORS: Final = ("kubernetes", "file", "envoy", "none")
INCONCLUSIVE_POLICIES: Final = ("hold", "pause", "fail")
DEADLINE_ACTIONS: Final = ("rollback", "pause")


@dataclass(frozen=True, slots=True)
class ActuatorConfig:
    type: str = "none"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RolloutConfig:
    rollout: str
    service: str
    baseline: str
    canary: str
    selector: str = "version"
    judge_config: str = ""
    steps: tuple[int, ...] = (10, 20, 30, 40, 50)
    interval_s: float = 60.0
    window: str = "rollout"  # rollout | step | lookback (window_s)
    window_s: float = 0.0
    successes_per_step: int = 1
    failure_limit: int = 2
    consecutive_failure_limit: int = 0
    inconclusive: str = "hold"
    inconclusive_limit: int = 0
    progress_deadline_s: float = 0.0
    deadline_action: str = "rollback"
    dry_run: bool = False
    apply_retries: int = 3
    apply_backoff_s: float = 1.0
    notify_url: str = ""
    notify_timeout_s: float = 5.0
    actuator: ActuatorConfig = field(default_factory=ActuatorConfig)
    source: str = ""  # the file it came from, for messages

    @property
    def max_weight(self) -> int:
        return self.steps[-1]


def step_weights(
    step_weight: int | None, max_weight: int | None, explicit: list[int] | None, path: str = ""
) -> tuple[int, ...]:
    """The canary weights to walk through before promotion. stepWeight/maxWeight stops AT
    maxWeight (Flagger overshoots: 20, 40, 60 for max 50; we cap the last step at 50)."""
    if explicit:
        steps = tuple(int(w) for w in explicit)
        if any(not 0 < w <= 100 for w in steps):
            raise RolloutConfigError(path, "analysis.stepWeights", "each weight must be in 1..100")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise RolloutConfigError(path, "analysis.stepWeights", "weights must increase")
        return steps
    step = int(step_weight if step_weight is not None else 10)
    top = int(max_weight if max_weight is not None else 50)
    if not 0 < step <= 100:
        raise RolloutConfigError(path, "analysis.stepWeight", "must be in 1..100")
    if not 0 < top <= 100:
        raise RolloutConfigError(path, "analysis.maxWeight", "must be in 1..100")
    out = list(range(step, top, step))
    out.append(top)
    return tuple(out)


def _get(d: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    """First present key among camelCase/snake_case spellings."""
    for n in names:
        if n in d:
            return d[n]
    return default


def _duration(value: Any, path: str, name: str) -> float:
    try:
        seconds = parse_duration(str(value))
    except ValueError as exc:
        raise RolloutConfigError(path, name, str(exc)) from None
    if seconds < 0:
        raise RolloutConfigError(path, name, "must not be negative")
    return seconds


def _int(value: Any, path: str, name: str, lo: int = 0) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise RolloutConfigError(path, name, f"not an integer: {value!r}") from None
    if out < lo:
        raise RolloutConfigError(path, name, f"must be >= {lo}")
    return out


def _choice(value: Any, choices: tuple[str, ...], path: str, name: str) -> str:
    text = str(value)
    if text not in choices:
        raise RolloutConfigError(path, name, f"{text!r}: choose one of {', '.join(choices)}")
    return text


def parse_rollout_config(data: Mapping[str, Any], path: str = "<config>") -> RolloutConfig:
    """Validate a rollout mapping (the YAML document) into a RolloutConfig."""
    if not isinstance(data, Mapping):
        raise RolloutConfigError(path, "", "the document must be a mapping")
    name = str(_get(data, "rollout", "name", default="")).strip()
    if problem := rollout_name_problem(name):
        raise RolloutConfigError(path, "rollout", problem)
    required = {}
    for key in ("service", "baseline", "canary"):
        value = str(data.get(key) or "").strip()
        if not value:
            raise RolloutConfigError(path, key, "is required")
        required[key] = value
    analysis = _get(data, "analysis", default={}) or {}
    judge = _get(data, "judge", default={}) or {}
    apply = _get(data, "apply", default={}) or {}
    notify = _get(data, "notify", default={}) or {}
    act = _get(data, "actuator", default={}) or {}
    section: Any
    for key, section in (
        ("analysis", analysis),
        ("judge", judge),
        ("apply", apply),
        ("notify", notify),
        ("actuator", act),
    ):
        if not isinstance(section, Mapping):
            raise RolloutConfigError(path, key, "must be a mapping")

    explicit = _get(analysis, "stepWeights", "step_weights")
    if explicit is not None and not isinstance(explicit, list):
        raise RolloutConfigError(path, "analysis.stepWeights", "must be a list of integers")
    steps = step_weights(
        _get(analysis, "stepWeight", "step_weight"),
        _get(analysis, "maxWeight", "max_weight"),
        explicit,
        path,
    )

    window_raw = str(_get(analysis, "window", default="rollout"))
    window, window_s = (
        (window_raw, 0.0)
        if window_raw in ("rollout", "step")
        else ("lookback", _duration(window_raw, path, "analysis.window"))
    )
    if window == "lookback" and window_s <= 0:
        raise RolloutConfigError(path, "analysis.window", "a lookback must be positive")

    interval = _duration(_get(analysis, "interval", default="60s"), path, "analysis.interval")
    if interval <= 0:
        raise RolloutConfigError(path, "analysis.interval", "must be positive")

    act_type = _choice(act.get("type", "none"), ACTUATORS, path, "actuator.type")
    options = {k: v for k, v in act.items() if k != "type"}
    # Options may also be nested under the type's name (actuator: {type: envoy, envoy: {...}}).
    if isinstance(options.get(act_type), Mapping):
        nested = dict(options.pop(act_type))
        options = {**options, **nested}

    return RolloutConfig(
        rollout=name,
        service=required["service"],
        baseline=required["baseline"],
        canary=required["canary"],
        selector=str(data.get("selector") or "version"),
        judge_config=str(_get(judge, "config", default="") or ""),
        steps=steps,
        interval_s=interval,
        window=window,
        window_s=window_s,
        successes_per_step=_int(
            _get(analysis, "successesPerStep", "successes_per_step", default=1),
            path,
            "analysis.successesPerStep",
            1,
        ),
        failure_limit=_int(
            _get(analysis, "failureLimit", "failure_limit", "threshold", default=2),
            path,
            "analysis.failureLimit",
            1,
        ),
        consecutive_failure_limit=_int(
            _get(analysis, "consecutiveFailureLimit", "consecutive_failure_limit", default=0),
            path,
            "analysis.consecutiveFailureLimit",
        ),
        inconclusive=_choice(
            _get(analysis, "inconclusive", default="hold"),
            INCONCLUSIVE_POLICIES,
            path,
            "analysis.inconclusive",
        ),
        inconclusive_limit=_int(
            _get(analysis, "inconclusiveLimit", "inconclusive_limit", default=0),
            path,
            "analysis.inconclusiveLimit",
        ),
        progress_deadline_s=_duration(
            _get(analysis, "progressDeadline", "progress_deadline", default=0),
            path,
            "analysis.progressDeadline",
        ),
        deadline_action=_choice(
            _get(analysis, "deadlineAction", "deadline_action", default="rollback"),
            DEADLINE_ACTIONS,
            path,
            "analysis.deadlineAction",
        ),
        dry_run=bool(_get(data, "dryRun", "dry_run", default=False)),
        apply_retries=_int(apply.get("retries", 3), path, "apply.retries"),
        apply_backoff_s=_duration(apply.get("backoff", "1s"), path, "apply.backoff"),
        notify_url=str(notify.get("url") or ""),
        notify_timeout_s=_duration(notify.get("timeout", "5s"), path, "notify.timeout"),
        actuator=ActuatorConfig(act_type, options),
        source=path,
    )


def load_rollout_config(path: Path) -> RolloutConfig:
    """Read and validate a rollout.yaml (one document)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise RolloutConfigError(str(path), "", f"cannot read: {exc.strerror}") from None
    try:
        data = yaml_input.load(text)
    except yaml.YAMLError as exc:
        raise RolloutConfigError(str(path), "", f"not valid YAML: {exc}") from None
    return parse_rollout_config(data or {}, str(path))
