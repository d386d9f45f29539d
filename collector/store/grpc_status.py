"""gRPC status: one stored form, whatever the input path printed. Pure.

Envoy's `%GRPC_STATUS%` prints names in current versions (`OK`, `Unavailable`: CAMEL_STRING by
default, `UNAVAILABLE` with SNAKE_STRING) and numbers in others (`%GRPC_STATUS(NUMBER)%`,
`%GRPC_STATUS_NUMBER%`, and the `grpc-status` trailer on the wire that gRPC ALS carries). The
`requests.grpc_status` column stores the decimal code ('0' .. '16'), '' when there is none
(Envoy's '-'); text that is neither a code nor a known name is kept as it came, so nothing is
lost (and analytics/error_rule.py counts it as a failed status).
"""

from __future__ import annotations

from typing import Final

# grpc/grpc doc/statuscodes.md, in the spellings Envoy and gRPC libraries print.
CODES: Final = {
    "OK": 0,
    "CANCELLED": 1,
    "CANCELED": 1,
    "UNKNOWN": 2,
    "INVALIDARGUMENT": 3,
    "DEADLINEEXCEEDED": 4,
    "NOTFOUND": 5,
    "ALREADYEXISTS": 6,
    "PERMISSIONDENIED": 7,
    "RESOURCEEXHAUSTED": 8,
    "FAILEDPRECONDITION": 9,
    "ABORTED": 10,
    "OUTOFRANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATALOSS": 15,
    "UNAUTHENTICATED": 16,
}


def code_of(text: str | None) -> int | None:
    """'14', 'Unavailable', 'UNAVAILABLE', 'unavailable' -> 14; '' / '-' / None -> None;
    unrecognized text -> None."""
    t = (text or "").strip()
    if not t or t == "-":
        return None
    if t.isascii() and t.isdigit():
        return int(t)
    return CODES.get(t.upper().replace("_", "").replace(" ", ""))


def normalize(text: str | None) -> str:
    """The stored form: the decimal code, '' when absent, unrecognized text unchanged."""
    t = (text or "").strip()
    if not t or t == "-":
        return ""
    code = code_of(t)
    return str(code) if code is not None else t
