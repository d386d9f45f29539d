"""How a collector error is answered: gRPC status code and trailers, HTTP status and headers.

One table for every receiver so gRPC and HTTP clients see the same decision:

    DecodeError       INVALID_ARGUMENT   400  permanent: the client must not retry
    PayloadTooLarge   RESOURCE_EXHAUSTED 413  permanent for this request
    Overloaded        RESOURCE_EXHAUSTED 429  retry after the hint
    StoreUnavailable  UNAVAILABLE        503  retry after the hint (disk full, WAL write failed)
    AuthError         UNAUTHENTICATED    401

Retry hints travel the way clients read them: gRPC `google.rpc.retryinfo-bin` (a serialized
google.rpc.RetryInfo; the OTel exporters honour it) plus `grpc-retry-pushback-ms` (gRPC's own
retry policy honours it), and HTTP `Retry-After` in whole seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import grpc
from google.rpc import error_details_pb2

from meshlens.collector.errors import (
    AuthError,
    CollectorError,
    DecodeError,
    Overloaded,
    PayloadTooLarge,
    StoreUnavailable,
)

# Disk full is not over in a second; give the operator's fix (or conversion) a moment.
UNAVAILABLE_RETRY_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class Failure:
    grpc_code: grpc.StatusCode
    http_status: int
    message: str
    reason: str  # the self-metrics `reason` label
    retry_after_s: float | None = None

    def grpc_trailers(self) -> tuple[tuple[str, str | bytes], ...]:
        if self.retry_after_s is None:
            return ()
        info = error_details_pb2.RetryInfo()
        secs = max(self.retry_after_s, 0.0)
        info.retry_delay.seconds = int(secs)
        info.retry_delay.nanos = int((secs - int(secs)) * 1e9)
        return (
            ("google.rpc.retryinfo-bin", info.SerializeToString()),
            ("grpc-retry-pushback-ms", str(int(secs * 1000))),
        )

    def http_headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


def classify(exc: CollectorError) -> Failure:
    """The answer to `exc`. Unknown collector errors are UNAVAILABLE (retryable, never an ack)."""
    if isinstance(exc, DecodeError):
        return Failure(grpc.StatusCode.INVALID_ARGUMENT, 400, str(exc), "invalid")
    if isinstance(exc, PayloadTooLarge):
        return Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, 413, str(exc), "too_large")
    if isinstance(exc, Overloaded):
        return Failure(
            grpc.StatusCode.RESOURCE_EXHAUSTED, 429, str(exc), "overloaded", exc.retry_after_s
        )
    if isinstance(exc, StoreUnavailable):
        return Failure(
            grpc.StatusCode.UNAVAILABLE, 503, str(exc), "unavailable", UNAVAILABLE_RETRY_S
        )
    if isinstance(exc, AuthError):
        return Failure(grpc.StatusCode.UNAUTHENTICATED, 401, str(exc), "unauthenticated")
    return Failure(grpc.StatusCode.UNAVAILABLE, 503, str(exc), "unavailable", UNAVAILABLE_RETRY_S)
