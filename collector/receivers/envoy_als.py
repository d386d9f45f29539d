"""Envoy's gRPC access-log service: `envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs`.

Client-streaming: a sidecar opens one stream and keeps sending `StreamAccessLogsMessage`s
(batches of HTTP or TCP entries). Only the first message carries the node `Identifier`, so the
stream keeps it and every message is stored with it as the record's context: each WAL record is
decodable on its own, in any order, on replay.

Pipelining: ALS has no per-message acknowledgement (the single response comes when the stream
ends, and Envoy ignores it), so a stream need not wait for message k to be durable before
reading message k+1. Up to `STREAM_WINDOW` appends per stream are in flight; they share group
commits, and the stream's response is sent only after all of them are durable. Records are
independent (each carries the identifier), so their order in the WAL does not matter.

Backpressure: while the store or the memory budget is full, the stream waits (HTTP/2 flow
control then slows Envoy, which buffers and drops on its side) instead of failing at once; it
gives up with RESOURCE_EXHAUSTED after `OVERLOAD_WAIT_S`. A message that does not parse ends the
stream with INVALID_ARGUMENT (Envoy reconnects and sends the identifier again); messages before
it are kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import grpc
from google.protobuf.message import DecodeError as ProtobufDecodeError

from collector.errors import CollectorError, DecodeError, Overloaded
from collector.proto.gen import meshlens_als_pb2
from collector.receivers.failures import classify
from collector.receivers.ingest import Ingest
from collector.store.records import RecordKind

SERVICE: Final = "envoy.service.accesslog.v3.AccessLogService"
METHOD: Final = f"/{SERVICE}/StreamAccessLogs"
RECEIVER: Final = "envoy_als"
SIGNAL: Final = "access_logs"
OVERLOAD_WAIT_S: Final = 30.0
STREAM_WINDOW: Final = 8  # appends in flight per stream

RunBlocking = Callable[..., Awaitable[Any]]


@dataclass(slots=True)
class AlsStream:
    """Per-stream state: the node identity from the first message that had one."""

    identifier: bytes = b""


@dataclass(frozen=True, slots=True)
class AlsMessage:
    identifier: bytes  # serialized Identifier, b"" when the message has none
    items: int


def parse_message(raw: bytes) -> AlsMessage:
    """Parse one stream message; DecodeError when it is not a StreamAccessLogsMessage."""
    msg = meshlens_als_pb2.StreamAccessLogsMessage()
    try:
        msg.ParseFromString(raw)
    except ProtobufDecodeError as exc:
        raise DecodeError(
            "StreamAccessLogsMessage", f"malformed protobuf ({len(raw)} bytes): {exc}"
        ) from None
    ident = msg.identifier.SerializeToString() if msg.HasField("identifier") else b""
    return AlsMessage(ident, len(msg.http_logs.log_entry) + len(msg.tcp_logs.log_entry))


def _identifier_of(raw: bytes) -> bytes:
    """The serialized Identifier of a message (b"" if it has none); DecodeError if malformed."""
    return parse_message(raw).identifier


def store_message(ingest: Ingest, identifier: bytes, raw: bytes) -> tuple[int, float | None]:
    """Parse and durably append one message (blocking); returns (entries, append seconds)."""
    parsed = parse_message(raw)
    if parsed.items == 0:
        return 0, None
    took = ingest.append(RecordKind.ENVOY_ALS, raw, items=parsed.items, context=identifier)
    return parsed.items, took


def als_handler(ingest: Ingest, run_blocking: RunBlocking) -> grpc.GenericRpcHandler:
    """The generic handler for StreamAccessLogs (raw bytes in, empty response out)."""
    metrics = ingest.metrics

    async def stream_access_logs(requests: AsyncIterator[bytes], context: Any) -> bytes:
        stream = AlsStream()
        pending: set[asyncio.Task[None]] = set()
        metrics.als_streams.inc()
        try:
            async for raw in requests:
                # The identifier must be known before the message is handed off.
                if not stream.identifier:
                    try:
                        stream.identifier = await run_blocking(_identifier_of, raw)
                    except CollectorError as exc:
                        metrics.request(RECEIVER, SIGNAL, classify(exc).reason, nbytes=len(raw))
                        if pending:
                            await asyncio.wait(pending)
                        await _fail(exc, context)
                pending.add(asyncio.ensure_future(_one(stream.identifier, raw)))
                if len(pending) >= STREAM_WINDOW:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    await _raise_first(done, pending, context)
            if pending:
                done, pending = await asyncio.wait(pending)
                await _raise_first(done, pending, context)
        finally:
            if pending:
                # The stream failed (e.g. an oversized message, a cancelled call): messages read
                # before it are kept, so let their appends finish rather than cancel them.
                done, pending = await asyncio.wait(pending, timeout=OVERLOAD_WAIT_S)
                for task in done:
                    if not task.cancelled():
                        task.exception()  # retrieved: the stream's own error is what is reported
            for task in pending:
                task.cancel()
            metrics.als_streams.dec()
        return b""  # StreamAccessLogsResponse is empty

    async def _raise_first(
        done: set[asyncio.Task[None]], pending: set[asyncio.Task[None]], context: Any
    ) -> None:
        for task in done:
            exc = task.exception()
            if isinstance(exc, CollectorError):
                if pending:  # what was accepted before the failure stays accepted
                    await asyncio.wait(pending)
                await _fail(exc, context)
            if exc is not None:
                raise exc

    async def _one(identifier: bytes, raw: bytes) -> None:
        deadline = time.monotonic() + OVERLOAD_WAIT_S
        while True:
            try:
                items, took = await run_blocking(store_message, ingest, identifier, raw)
            except Overloaded as exc:
                if time.monotonic() + exc.retry_after_s < deadline:
                    await asyncio.sleep(exc.retry_after_s)
                    continue
                metrics.request(RECEIVER, SIGNAL, "overloaded", nbytes=len(raw))
                raise
            except CollectorError as exc:
                metrics.request(RECEIVER, SIGNAL, classify(exc).reason, nbytes=len(raw))
                raise
            metrics.request(
                RECEIVER,
                SIGNAL,
                "ok",
                nbytes=len(raw),
                received=items,
                accepted=items,
                append_s=took,
            )
            return

    async def _fail(exc: CollectorError, context: Any) -> None:
        f = classify(exc)
        await context.abort(f.grpc_code, f.message, f.grpc_trailers())

    return grpc.method_handlers_generic_handler(
        SERVICE, {"StreamAccessLogs": grpc.stream_unary_rpc_method_handler(stream_access_logs)}
    )
