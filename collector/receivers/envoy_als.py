"""Envoy's gRPC access-log service: `envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs`.

Client-streaming: a sidecar opens one stream and keeps sending `StreamAccessLogsMessage`s
(batches of HTTP or TCP entries). Only the first message carries the node `Identifier`, so the
stream keeps it and every message is stored with it as the record's context: each WAL record is
decodable on its own, in any order, on replay.

Backpressure: while the store or the memory budget is full, the stream waits (HTTP/2 flow
control then slows Envoy, which buffers and drops on its side) instead of failing at once; it
gives up with RESOURCE_EXHAUSTED after `OVERLOAD_WAIT_S`. A message that does not parse ends the
stream with INVALID_ARGUMENT (Envoy reconnects and sends the identifier again).
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

RunBlocking = Callable[..., Awaitable[Any]]


@dataclass(slots=True)
class AlsStream:
    """Per-stream state: the node identity from the first message that had one."""

    identifier: bytes = b""
    messages: int = 0


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


def store_message(ingest: Ingest, stream: AlsStream, raw: bytes) -> tuple[int, float | None]:
    """Parse and durably append one message (blocking); returns (entries, append seconds)."""
    parsed = parse_message(raw)
    if not stream.identifier and parsed.identifier:
        stream.identifier = parsed.identifier
    stream.messages += 1
    if parsed.items == 0:
        return 0, None
    took = ingest.append(RecordKind.ENVOY_ALS, raw, items=parsed.items, context=stream.identifier)
    return parsed.items, took


def als_handler(ingest: Ingest, run_blocking: RunBlocking) -> grpc.GenericRpcHandler:
    """The generic handler for StreamAccessLogs (raw bytes in, empty response out)."""
    metrics = ingest.metrics

    async def stream_access_logs(requests: AsyncIterator[bytes], context: Any) -> bytes:
        stream = AlsStream()
        metrics.als_streams.inc()
        try:
            async for raw in requests:
                await _one(stream, raw, context)
        finally:
            metrics.als_streams.dec()
        return b""  # StreamAccessLogsResponse is empty

    async def _one(stream: AlsStream, raw: bytes, context: Any) -> None:
        deadline = time.monotonic() + OVERLOAD_WAIT_S
        while True:
            try:
                items, took = await run_blocking(store_message, ingest, stream, raw)
            except Overloaded as exc:
                if time.monotonic() + exc.retry_after_s < deadline:
                    await asyncio.sleep(exc.retry_after_s)
                    continue
                await _fail(exc, raw, context)
            except CollectorError as exc:
                await _fail(exc, raw, context)
            else:
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

    async def _fail(exc: CollectorError, raw: bytes, context: Any) -> None:
        f = classify(exc)
        metrics.request(RECEIVER, SIGNAL, f.reason, nbytes=len(raw))
        await context.abort(f.grpc_code, f.message, f.grpc_trailers())

    return grpc.method_handlers_generic_handler(
        SERVICE, {"StreamAccessLogs": grpc.stream_unary_rpc_method_handler(stream_access_logs)}
    )
