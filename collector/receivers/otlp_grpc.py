"""OTLP over gRPC: TraceService, MetricsService and LogsService `Export`, as raw-bytes handlers.

grpc hands the handler the request bytes undeserialized (request_deserializer=None): the check
parses once, and the bytes stored are the bytes received. Parse and append run together in the
ingest thread pool, so the event loop only moves bytes. With --identity-binding each resource's
claimed namespace is checked against the client certificate first (an extra parse, only then).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, NoReturn

import grpc

from meshlens.collector.errors import CollectorError
from meshlens.collector.receivers import otlp
from meshlens.collector.receivers.failures import classify
from meshlens.collector.receivers.identity import Binding, otlp_claims, otlp_resource_attributes
from meshlens.collector.receivers.ingest import Ingest

RECEIVER: Final = "otlp_grpc"

RunBlocking = Callable[..., Awaitable[Any]]


async def abort(context: Any, exc: CollectorError) -> NoReturn:
    f = classify(exc)
    await context.abort(f.grpc_code, f.message, f.grpc_trailers())
    raise AssertionError("unreachable: context.abort raises")


def otlp_handlers(
    ingest: Ingest, run_blocking: RunBlocking, binding: Binding = Binding()
) -> list[grpc.GenericRpcHandler]:
    handlers = []
    for signal in otlp.SIGNALS:

        async def export(raw: bytes, context: Any, signal: otlp.Signal = signal) -> bytes:
            if binding.on:
                attrs = await run_blocking(otlp_resource_attributes, signal.request, raw)
                problem = binding.check(context, otlp_claims(attrs), f"OTLP {signal.name}")
                if problem:
                    ingest.metrics.request(RECEIVER, signal.name, "permission_denied")
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, problem)
            try:
                checked = await run_blocking(ingest.otlp, RECEIVER, signal, raw)
            except CollectorError as exc:
                await abort(context, exc)
            if not checked.rejected:
                return b""  # an empty Export*ServiceResponse
            return otlp.response(signal, checked).SerializeToString()

        handlers.append(
            grpc.method_handlers_generic_handler(
                signal.service, {"Export": grpc.unary_unary_rpc_method_handler(export)}
            )
        )
    return handlers
