"""Exceptions of the analytics package, in one tree (other analytics modules append theirs).

AnalyticsError
  WindowError(reason)                 a bad --since/--from/--to combination
  QueryError(sql, reason)             DuckDB failed to run a query (syntax, binder, runtime)
    QueryTimeout(sql, timeout_s)      the statement was interrupted after timeout_s
    QueryRejected(sql, reason)        the sandbox refused the statement (not a single SELECT,
                                      file access, configuration change, extension, ...)
  GraphError(reason)                  bad graph options (level, source)
  HealthConfigError(path, reason)     a health tolerance file is invalid
  PrometheusError(url, reason)        the Prometheus source failed (unreachable, bad answer)
  GateError                           the rollout gate (see the gate section at the end)
"""

from __future__ import annotations


class AnalyticsError(Exception):
    """Base of every analytics error."""


class WindowError(AnalyticsError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid time window: {reason}")
        self.reason = reason


def _short(sql: str, limit: int = 120) -> str:
    one_line = " ".join(sql.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


class QueryError(AnalyticsError):
    def __init__(self, sql: str, reason: str = "") -> None:
        super().__init__(f"query failed: {reason}" if reason else f"query failed: {_short(sql)}")
        self.sql = sql
        self.reason = reason


class QueryTimeout(QueryError):
    def __init__(self, sql: str, timeout_s: float) -> None:
        AnalyticsError.__init__(
            self,
            f"query interrupted after the {timeout_s:g}s time limit (--timeout): {_short(sql)}",
        )
        self.sql = sql
        self.reason = "timeout"
        self.timeout_s = timeout_s


class QueryRejected(QueryError):
    def __init__(self, sql: str, reason: str) -> None:
        AnalyticsError.__init__(self, f"query rejected: {reason}")
        self.sql = sql
        self.reason = reason


class GraphError(AnalyticsError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HealthConfigError(AnalyticsError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"invalid health config {path}: {reason}")
        self.path = path
        self.reason = reason


class PrometheusError(AnalyticsError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"Prometheus at {url}: {reason}")
        self.url = url
        self.reason = reason


# --- gate (progressive rollout controller): analytics/gate/ ---------------------------------
#   GateError
#     RolloutConfigError(path, field, reason)  a rollout.yaml is invalid
#     GateStateError(path, reason)             a persisted gate state cannot be read / is locked
#     WeightError(weights, reason)             weights that do not sum to 100 or are out of range
#     RouteNotOwned(target, reason)            the route to patch is not the one the config declares
#     ActuatorError(actuator, target, reason)  applying or verifying weights failed


class GateError(AnalyticsError):
    """Base of the rollout gate's errors."""


class RolloutConfigError(GateError):
    def __init__(self, path: str, field: str, reason: str) -> None:
        where = f"{path}: {field}" if field else path
        super().__init__(f"invalid rollout config {where}: {reason}")
        self.path = path
        self.field = field
        self.reason = reason


class GateStateError(GateError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"gate state {path}: {reason}")
        self.path = path
        self.reason = reason


class WeightError(GateError):
    def __init__(self, weights: object, reason: str) -> None:
        super().__init__(f"refusing weights {weights!r}: {reason}")
        self.weights = weights
        self.reason = reason


class RouteNotOwned(GateError):
    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"not touching {target}: {reason}")
        self.target = target
        self.reason = reason


class ActuatorError(GateError):
    def __init__(self, actuator: str, target: str, reason: str) -> None:
        super().__init__(f"{actuator} actuator could not set weights on {target}: {reason}")
        self.actuator = actuator
        self.target = target
        self.reason = reason


# --- canary judge: analytics/judge/ ---------------------------------------------------------
#   JudgeError
#     CanaryConfigError(path, field, reason)  a canary config (YAML / Kayenta JSON) is invalid
#     JudgeInputError(reason)                 bad analysis inputs (selector, sides, payload)


class JudgeError(AnalyticsError):
    """Base of the canary judge's errors."""


class CanaryConfigError(JudgeError):
    def __init__(self, path: str, field: str, reason: str) -> None:
        where = f"{path}: {field}" if field else path
        super().__init__(f"invalid canary config {where}: {reason}")
        self.path = path
        self.field = field
        self.reason = reason


class JudgeInputError(JudgeError, ValueError):
    """Also a ValueError, so HTTP adapters that map ValueError to 400 treat it as bad input."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- Istio config checks: analytics/istio/ --------------------------------------------------
#   IstioConfigError(path, document, field, reason)  an invalid or unsupported Istio resource
#   ClusterAccessError(url, reason)                  reading from the Kubernetes API failed


class IstioConfigError(AnalyticsError):
    def __init__(self, path: str, document: int | None, field: str, reason: str) -> None:
        where = path
        if document is not None:
            where += f" (document {document})"
        if field:
            where += f" at {field}"
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.document = document
        self.field = field
        self.reason = reason


class ClusterAccessError(AnalyticsError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"Kubernetes API {url}: {reason}")
        self.url = url
        self.reason = reason


class ObjectStoreError(AnalyticsError):
    """The store's object storage (`--data-dir s3://...`) could not be listed or read."""

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"object store {location}: {reason}")
        self.location = location
        self.reason = reason
