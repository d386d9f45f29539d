"""Exceptions of the collector package, in one tree.

CollectorError
  ConfigError(setting, value)        a setting or flag has a bad value
  DecodeError(kind, detail)          a payload could not be decoded (-> INVALID_ARGUMENT / 400)
    JsonFieldError(kind, path, problem)  a JSON payload's field has a bad value (names the field)
  PayloadTooLarge(size, limit)       a request over the size limit (-> RESOURCE_EXHAUSTED / 413)
  Overloaded(resource, retry_after)  a memory or queue budget is full (-> RESOURCE_EXHAUSTED/429)
  StoreUnavailable(path, reason)     WAL cannot take writes, e.g. disk full (-> UNAVAILABLE / 503)
  WalCorruption(path, offset)        a WAL segment has a bad record (recovery truncates there)
  AuthError(reason)                  missing or wrong credentials (-> UNAUTHENTICATED / 401)
  DeltaStoreError(where, reason)     a Delta table of the shared store cannot be opened or created
"""

from __future__ import annotations


class CollectorError(Exception):
    """Base of every collector error."""


class ConfigError(CollectorError):
    def __init__(self, setting: str, value: object, reason: str) -> None:
        super().__init__(f"invalid {setting} {value!r}: {reason}")
        self.setting = setting
        self.value = value
        self.reason = reason


class DecodeError(CollectorError):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"cannot decode {kind}: {detail}")
        self.kind = kind
        self.detail = detail


class PayloadTooLarge(CollectorError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"request of {size} bytes exceeds the limit of {limit} bytes (--max-message-size)"
        )
        self.size = size
        self.limit = limit


class Overloaded(CollectorError):
    def __init__(self, resource: str, retry_after_s: float) -> None:
        super().__init__(f"{resource} is full; retry after {retry_after_s:g}s")
        self.resource = resource
        self.retry_after_s = retry_after_s


class StoreUnavailable(CollectorError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"store cannot accept writes at {path}: {reason}")
        self.path = path
        self.reason = reason


class WalCorruption(CollectorError):
    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"corrupt WAL record in {path} at byte {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class AuthError(CollectorError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JsonFieldError(DecodeError):
    """A JSON payload with a value its schema does not allow, at `path` (the JSON path as the
    sender wrote it, e.g. `resourceSpans[0].scopeSpans[1].spans[3].traceId`)."""

    def __init__(self, kind: str, path: str, problem: str) -> None:
        super().__init__(kind, f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


class DeltaStoreError(CollectorError):
    """A Delta table of the shared store (`--object-store`) could not be opened or created."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"delta table {where}: {reason}")
        self.where = where
        self.reason = reason
