"""What counts as an error: one rule, in SQL and in Python/numpy forms. Pure.

    5xx          HTTP or gRPC with response_code >= 500
    4xx          400 <= response_code < 500
    no_response  response_code 0 (Envoy's "-": the upstream never answered)
    grpc         a gRPC status other than OK while HTTP said < 400 (with an HTTP error code
                 the HTTP class decides, as Kiali's HandleResponseCode does)
    3xx          300 <= response_code < 400 (not an error; the graph shows it)
    error        5xx, no response or a gRPC error: what error rates, health, the judge's default
                 error_rate and the exporter's `failed` count

TCP connections have no response code and are never errors. `grpc_status` is stored as the
decimal code ('14'), '' when absent (collector/store/grpc_status.py normalizes Envoy's names
at decode); 'OK' is accepted too, for stores written before that normalization.

Every consumer (the catalog's views, the graph, signals, the exporter, the dashboards, the
judge) takes its predicates from here.
"""

from __future__ import annotations

from typing import Final

import numpy as np

IS_5XX: Final = "(protocol <> 'tcp' AND response_code >= 500)"
IS_4XX: Final = "(protocol <> 'tcp' AND response_code >= 400 AND response_code < 500)"
IS_NO_RESPONSE: Final = "(protocol <> 'tcp' AND coalesce(response_code, 0) = 0)"
IS_GRPC_ERROR: Final = (
    "(protocol = 'grpc' AND coalesce(grpc_status, '') NOT IN ('', '0', 'OK') "
    "AND response_code < 400 AND response_code > 0)"
)
IS_ERROR: Final = f"({IS_5XX} OR {IS_NO_RESPONSE} OR {IS_GRPC_ERROR})"

_OK: Final = ("", "0", "OK")


def grpc_failed(grpc_status: str | None) -> bool:
    return (grpc_status or "") not in _OK


def classes(protocol: str, code: int, grpc: str) -> tuple[bool, bool, bool, bool, bool]:
    """(5xx, 4xx, grpc error, no response, 3xx) of one request (or response series)."""
    if protocol == "tcp":
        return (False, False, False, False, False)
    return (
        code >= 500,
        400 <= code < 500,
        protocol == "grpc" and grpc_failed(grpc) and 0 < code < 400,
        code == 0,
        300 <= code < 400,
    )


def class_mask(
    cls: str, protocol: np.ndarray, code: np.ndarray, grpc_code: np.ndarray
) -> np.ndarray:
    """One class over arrays: `cls` is 5xx, 4xx, no_response, grpc, NXX (e.g. 503's class
    "5xx") or an exact code ("503"). `grpc_code` is the numeric status, -1 when absent."""
    http = protocol != "tcp"
    c = cls.strip().lower()
    if c == "5xx":
        return np.asarray(http & (code >= 500))
    if c == "4xx":
        return np.asarray(http & (code >= 400) & (code < 500))
    if c in ("no_response", "0"):
        return np.asarray(http & (code == 0))
    if c == "grpc":
        return np.asarray((protocol == "grpc") & (grpc_code > 0) & (code > 0) & (code < 400))
    if len(c) == 3 and c.endswith("xx") and c[0].isdigit():
        base = int(c[0]) * 100
        return np.asarray(http & (code >= base) & (code < base + 100))
    return np.asarray(http & (code == int(c)))


DEFAULT_CLASSES: Final = ("5xx", "no_response", "grpc")  # = IS_ERROR
