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

Identity binding (--identity-binding, with client certificates): the first message's node must
match the client certificate's SPIFFE ID; otherwise (enforce) the stream ends with
PERMISSION_DENIED before anything of it is stored.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import grpc
from google.protobuf.message import DecodeError as ProtobufDecodeError

from meshlens.collector.decode import utf8
from meshlens.collector.errors import CollectorError, DecodeError, Overloaded
from meshlens.collector.proto.gen import meshlens_als_pb2
from meshlens.collector.receivers.failures import classify
from meshlens.collector.receivers.identity import Binding, als_claim
from meshlens.collector.receivers.ingest import Ingest
from meshlens.collector.store.records import RecordKind

SERVICE: Final = "envoy.service.accesslog.v3.AccessLogService"
METHOD: Final = f"/{SERVICE}/StreamAccessLogs"
RECEIVER: Final = "envoy_als"
SIGNAL: Final = "access_logs"
OVERLOAD_WAIT_S: Final = 30.0
STREAM_WINDOW: Final = 8  # appends in flight per stream
# Messages up to this size are parsed on the event loop (~2 ms at most); bigger ones (up to the
# 16 MiB limit) in the thread pool, so they cannot stall health checks and the other streams.
INLINE_PARSE_BYTES: Final = 256 * 1024

RunBlocking = Callable[..., Awaitable[Any]]


@dataclass(slots=True)
class AlsStream:
    """Per-stream state: the node identity from the first message that had one."""

    identifier: bytes = b""
    bound: bool = False  # --identity-binding checked the first message


@dataclass(frozen=True, slots=True)
class AlsMessage:
    identifier: bytes  # serialized Identifier, b"" when the message has none
    items: int
    payload: bytes = b""  # what to store: the message, invalid UTF-8 replaced (utf8.repair)
    utf8_repaired: int = 0  # string fields repaired


def parse_message(raw: bytes) -> AlsMessage:
    """Parse one stream message; DecodeError when it is not a StreamAccessLogsMessage.
    Invalid UTF-8 in string fields (Envoy forwards clients' header bytes) is replaced, not
    refused: one entry must not keep its neighbours out."""
    msg = meshlens_als_pb2.StreamAccessLogsMessage()
    payload, repaired = raw, 0
    try:
        msg.ParseFromString(raw)
    except ProtobufDecodeError as exc:
        try:
            fixed = utf8.repair(msg.DESCRIPTOR, raw)
            if not fixed.fields:
                raise ValueError("no invalid UTF-8 to repair")
            msg.ParseFromString(fixed.payload)
        except (ValueError, ProtobufDecodeError):
            raise DecodeError(
                "StreamAccessLogsMessage", f"malformed protobuf ({len(raw)} bytes): {exc}"
            ) from None
        payload, repaired = fixed.payload, fixed.fields
    ident = msg.identifier.SerializeToString() if msg.HasField("identifier") else b""
    items = len(msg.http_logs.log_entry) + len(msg.tcp_logs.log_entry)
    return AlsMessage(ident, items, payload, repaired)


@dataclass(frozen=True, slots=True)
class _Queued:
    durable: asyncio.Future[float]
    nbytes: int
    items: int


def als_handler(
    ingest: Ingest, run_blocking: RunBlocking, binding: Binding = Binding()
) -> grpc.GenericRpcHandler:
    """The generic handler for StreamAccessLogs (raw bytes in, empty response out).

    Everything runs on the event loop: parsing a message (upb; in `run_blocking`'s threads above
    INLINE_PARSE_BYTES) and queueing it for the WAL (`Ingest.submit`), whose future the WAL
    writer resolves once the group commit is durable; no thread is parked per message."""
    metrics = ingest.metrics

    async def stream_access_logs(requests: AsyncIterator[bytes], context: Any) -> bytes:
        stream = AlsStream()
        queued: deque[_Queued] = deque()
        metrics.als_streams.inc()
        try:
            async for raw in requests:
                try:
                    parsed = (
                        parse_message(raw)
                        if len(raw) <= INLINE_PARSE_BYTES
                        else await run_blocking(parse_message, raw)
                    )
                except CollectorError as exc:
                    metrics.request(RECEIVER, SIGNAL, classify(exc).reason, nbytes=len(raw))
                    await _drain(queued, context)  # what came before stays accepted
                    await _fail(exc, context)
                    raise  # unreachable: abort raises
                metrics.utf8_repaired(RECEIVER, SIGNAL, parsed.utf8_repaired)
                raw = parsed.payload or raw
                # The node identity arrives on a stream's first message only.
                if binding.on and not stream.bound:
                    # Checked on the first message, identifier or not (one without it cannot
                    # be bound, and its entries would otherwise be stored unchecked).
                    await _bind(parsed.identifier, len(raw), context)
                    stream.bound = True
                if not stream.identifier:
                    stream.identifier = parsed.identifier
                if parsed.items == 0:
                    metrics.request(RECEIVER, SIGNAL, "ok", nbytes=len(raw))
                    continue
                queued.append(await _submit(stream.identifier, raw, parsed.items, queued, context))
                if len(queued) >= STREAM_WINDOW:
                    await _settle(queued.popleft(), queued, context)
            await _drain(queued, context)
        finally:
            if queued:
                # The stream failed (an oversized message, a cancelled call): messages read
                # before it are written anyway; count them once they are.
                await asyncio.wait([q.durable for q in queued], timeout=OVERLOAD_WAIT_S)
                for q in queued:
                    if q.durable.done() and not q.durable.cancelled() and not q.durable.exception():
                        _ok(q, q.durable.result())
            metrics.als_streams.dec()
        return b""  # StreamAccessLogsResponse is empty

    async def _submit(
        identifier: bytes, raw: bytes, items: int, queued: deque[_Queued], context: Any
    ) -> _Queued:
        """Queue one message, waiting out overload (HTTP/2 flow control then slows the
        sender) for up to OVERLOAD_WAIT_S."""
        deadline = time.monotonic() + OVERLOAD_WAIT_S
        while True:
            try:
                fut = ingest.submit(RecordKind.ENVOY_ALS, raw, items=items, context=identifier)
                return _Queued(fut, len(raw), items)
            except Overloaded as exc:
                if time.monotonic() + exc.retry_after_s < deadline:
                    await asyncio.sleep(exc.retry_after_s)
                    continue
                metrics.request(RECEIVER, SIGNAL, "overloaded", nbytes=len(raw))
                await _drain(queued, context)
                await _fail(exc, context)
                raise
            except CollectorError as exc:
                metrics.request(RECEIVER, SIGNAL, classify(exc).reason, nbytes=len(raw))
                await _drain(queued, context)
                await _fail(exc, context)
                raise

    async def _bind(identifier: bytes, nbytes: int, context: Any) -> None:
        """--identity-binding: the first message's node must be the certificate's workload
        (nothing of the stream is stored before this passes)."""
        problem = binding.check(context, [als_claim(identifier)], "Envoy ALS stream")
        if problem:
            metrics.request(RECEIVER, SIGNAL, "permission_denied", nbytes=nbytes)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, problem)

    def _ok(q: _Queued, took: float) -> None:
        metrics.request(
            RECEIVER,
            SIGNAL,
            "ok",
            nbytes=q.nbytes,
            received=q.items,
            accepted=q.items,
            append_s=took,
        )

    async def _settle(q: _Queued, queued: deque[_Queued], context: Any) -> None:
        """Wait until one queued message is durable; a failed write ends the stream (after
        the messages queued behind it are settled, so they stay accepted)."""
        try:
            took = await q.durable
        except CollectorError as exc:
            metrics.request(RECEIVER, SIGNAL, classify(exc).reason, nbytes=q.nbytes)
            await _drain(queued, context, fail=False)
            await _fail(exc, context)
            raise
        _ok(q, took)

    async def _drain(queued: deque[_Queued], context: Any, *, fail: bool = True) -> None:
        while queued:
            q = queued.popleft()
            if fail:
                await _settle(q, queued, context)
                continue
            try:
                _ok(q, await q.durable)
            except CollectorError as exc:
                metrics.request(RECEIVER, SIGNAL, classify(exc).reason, nbytes=q.nbytes)

    async def _fail(exc: CollectorError, context: Any) -> None:
        f = classify(exc)
        await context.abort(f.grpc_code, f.message, f.grpc_trailers())

    return grpc.method_handlers_generic_handler(
        SERVICE, {"StreamAccessLogs": grpc.stream_unary_rpc_method_handler(stream_access_logs)}
    )
