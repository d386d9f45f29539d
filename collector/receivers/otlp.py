"""The three OTLP signals: what the receive path checks before it stores a request, and the
response it sends back. Pure: bytes in, bytes or a `Checked` out.

The check is deliberately cheap: one protobuf parse (C, upb) and one pass over the items
counting them and looking only at what the decoders cannot repair later: span/trace ids of the
wrong length (the OTLP spec calls them invalid), metrics without a name. Such items are rejected
and reported in `partial_success`; only then is the request re-serialized without them.
Everything else is stored exactly as received.

That Python check is the reference. The receive path first asks `collector.decode._otlp_check`
(C, built by `pip install -e .`), which walks the wire bytes once without building protobuf
objects and answers only when the reference would accept the whole request as it is (the item
count); anything else (malformed data, invalid items, fields it does not know) it declines, and
the reference decides, with its precise error or partial success. It costs about a quarter of
the reference (0.27 vs 1.03 CPU-µs per SDK span, `bench.decode_spans`);
tests/collector/decode/test_otlp_check_fast.py holds the two to the same answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from meshlens.collector.errors import DecodeError
from meshlens.collector.store.records import RecordKind

_count: Callable[[int, bytes], int | None] | None
try:
    from meshlens.collector.decode import _otlp_check

    _count = _otlp_check.count
except ImportError:  # not built (no C compiler at install time): the reference checks everything
    _count = None

_ZERO_TRACE_ID: Final = bytes(16)
_ZERO_SPAN_ID: Final = bytes(8)


@dataclass(frozen=True, slots=True)
class Signal:
    """One OTLP signal: its gRPC service, HTTP path, messages and WAL record kind."""

    name: str  # "traces" | "metrics" | "logs" (also the self-metrics label)
    kind: RecordKind
    service: str  # gRPC service full name; the method is always "Export"
    http_path: str
    request: type[Message]
    response: type[Message]
    rejected_field: str  # the partial_success field counting rejected items
    item: str  # what one item is called in messages

    @property
    def grpc_method(self) -> str:
        return f"/{self.service}/Export"


TRACES: Final = Signal(
    "traces",
    RecordKind.OTLP_TRACES,
    "opentelemetry.proto.collector.trace.v1.TraceService",
    "/v1/traces",
    trace_service_pb2.ExportTraceServiceRequest,
    trace_service_pb2.ExportTraceServiceResponse,
    "rejected_spans",
    "spans",
)
METRICS: Final = Signal(
    "metrics",
    RecordKind.OTLP_METRICS,
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "/v1/metrics",
    metrics_service_pb2.ExportMetricsServiceRequest,
    metrics_service_pb2.ExportMetricsServiceResponse,
    "rejected_data_points",
    "data points",
)
LOGS: Final = Signal(
    "logs",
    RecordKind.OTLP_LOGS,
    "opentelemetry.proto.collector.logs.v1.LogsService",
    "/v1/logs",
    logs_service_pb2.ExportLogsServiceRequest,
    logs_service_pb2.ExportLogsServiceResponse,
    "rejected_log_records",
    "log records",
)
SIGNALS: Final = (TRACES, METRICS, LOGS)


@dataclass(frozen=True, slots=True)
class Checked:
    """A request that passed the check: what to store and what to answer."""

    payload: bytes  # the raw request, or re-serialized without the rejected items
    items: int  # accepted items (0: nothing to store)
    rejected: int = 0
    reason: str = ""  # why items were rejected ("" when none were)


def parse(signal: Signal, raw: bytes) -> Message:
    """Parse a request; DecodeError (-> INVALID_ARGUMENT / 400) when it is not valid protobuf."""
    msg = signal.request()
    try:
        msg.ParseFromString(raw)
    except ProtobufDecodeError as exc:
        raise DecodeError(
            signal.request.DESCRIPTOR.name, f"malformed protobuf ({len(raw)} bytes): {exc}"
        ) from None
    return msg


def check(signal: Signal, raw: bytes) -> Checked:
    """Parse and count a request, dropping invalid items. Raises DecodeError when the request
    cannot be parsed or every item in it is invalid."""
    if _count is not None:
        items = _count(SIGNALS.index(signal), raw)
        if items is not None:
            return Checked(raw, items)
    return check_reference(signal, raw)


def check_reference(signal: Signal, raw: bytes) -> Checked:
    """`check` in Python (upb parse, then one pass over the items): the reference."""
    msg = parse(signal, raw)
    if signal is TRACES:
        items, rejected, reason = _check_traces(msg)  # type: ignore[arg-type]
    elif signal is METRICS:
        items, rejected, reason = _check_metrics(msg)  # type: ignore[arg-type]
    else:
        items, rejected, reason = _check_logs(msg)  # type: ignore[arg-type]
    if rejected == 0:
        return Checked(raw, items)
    if items == 0:
        raise DecodeError(signal.request.DESCRIPTOR.name, f"all {rejected} {signal.item} {reason}")
    return Checked(msg.SerializeToString(), items, rejected, f"{rejected} {signal.item} {reason}")


def response(signal: Signal, checked: Checked | None = None) -> Message:
    """The Export*ServiceResponse: empty on full success, partial_success otherwise."""
    resp = signal.response()
    if checked is not None and checked.rejected:
        ps = resp.partial_success  # type: ignore[attr-defined]
        setattr(ps, signal.rejected_field, checked.rejected)
        ps.error_message = checked.reason
    return resp


def _span_ok(span: object) -> bool:
    tid = span.trace_id  # type: ignore[attr-defined]
    sid = span.span_id  # type: ignore[attr-defined]
    return (
        len(tid) == 16
        and len(sid) == 8
        and tid != _ZERO_TRACE_ID
        and sid != _ZERO_SPAN_ID
        and len(span.parent_span_id) in (0, 8)  # type: ignore[attr-defined]
    )


def _check_traces(req: trace_service_pb2.ExportTraceServiceRequest) -> tuple[int, int, str]:
    items = bad = 0
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            spans = ss.spans
            n = len(spans)
            good = sum(1 for s in spans if _span_ok(s))
            if good != n:  # rare: rebuild this scope without the invalid spans
                keep = [s for s in spans if _span_ok(s)]
                del spans[:]
                spans.extend(keep)
                bad += n - good
            items += good
    return items, bad, "rejected: trace_id must be 16 and span_id 8 non-zero bytes"


def _points(metric: object) -> int:
    which = metric.WhichOneof("data")  # type: ignore[attr-defined]
    return len(getattr(metric, which).data_points) if which else 0


def _check_metrics(req: metrics_service_pb2.ExportMetricsServiceRequest) -> tuple[int, int, str]:
    items = bad = 0
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            unnamed = [m for m in sm.metrics if not m.name]
            if unnamed:
                bad += sum(_points(m) for m in unnamed)
                keep = [m for m in sm.metrics if m.name]
                del sm.metrics[:]
                sm.metrics.extend(keep)
            items += sum(_points(m) for m in sm.metrics)
    return items, bad, "rejected: a metric must have a name"


def _log_ok(rec: object) -> bool:
    return len(rec.trace_id) in (0, 16) and len(rec.span_id) in (0, 8)  # type: ignore[attr-defined]


def _check_logs(req: logs_service_pb2.ExportLogsServiceRequest) -> tuple[int, int, str]:
    items = bad = 0
    for rl in req.resource_logs:
        for sl in rl.scope_logs:
            recs = sl.log_records
            n = len(recs)
            good = sum(1 for r in recs if _log_ok(r))
            if good != n:
                keep = [r for r in recs if _log_ok(r)]
                del recs[:]
                recs.extend(keep)
                bad += n - good
            items += good
    return items, bad, "rejected: trace_id must be empty or 16 bytes, span_id empty or 8 bytes"
