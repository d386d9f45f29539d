"""OTLP ExportLogsServiceRequest -> `logs` rows; Envoy OpenTelemetry access logs -> `requests`.

Istio's `envoyOtelAls` provider sends each proxied request as an OTLP LogRecord (Istio's default
text access-log line in the body, or attribute-based formats). Whether a record is such an
access log, and which `requests` row it makes, is decided by
`collector.decode.otel_als.otel_access_log_to_request` (owned with the other Envoy decoders);
every record it declines is an ordinary log row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import pyarrow as pa
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from meshlens.collector.decode import limits
from meshlens.collector.decode.attributes import (
    KeyValueCache,
    ResourceInfo,
    any_value_to_text,
    entries_json,
    resource_for,
)
from meshlens.collector.decode.otel_als import otel_access_log_to_request
from meshlens.collector.decode.otlp_wire import LogsRequest
from meshlens.collector.errors import DecodeError
from meshlens.collector.store.records import Record
from meshlens.collector.store.schema import LOGS, empty_table

KIND: Final = "otlp logs"
log = logging.getLogger(__name__)

AccessLogConverter = Callable[
    [str, dict[str, object], dict[str, object], int], "dict[str, Any] | None"
]

_cache = KeyValueCache()


def _body_text(raw: bytes) -> str:
    return any_value_to_text(AnyValue.FromString(raw)) if raw else ""


def decode_logs(
    payload: bytes, received_ns: int = 0, *, converter: AccessLogConverter | None = None
) -> dict[str, pa.Table]:
    """An encoded ExportLogsServiceRequest as {"logs": ..., "requests": ...}; raises DecodeError.

    `converter` overrides the Envoy OTel access-log converter (tests).
    """
    try:
        request = LogsRequest.FromString(payload)
    except (ProtobufDecodeError, ValueError) as exc:
        raise DecodeError(KIND, f"invalid ExportLogsServiceRequest protobuf: {exc}") from exc
    to_request = converter if converter is not None else otel_access_log_to_request
    cols: dict[str, list[Any]] = {f.name: [] for f in LOGS}
    ts_ns: list[int] = []
    requests: list[dict[str, Any]] = []
    lim = limits.current()
    dropped = 0
    for i, rl in enumerate(request.resource_logs):
        try:
            res = resource_for(rl.resource)
        except (ProtobufDecodeError, ValueError) as exc:
            raise DecodeError(KIND, f"resource_logs[{i}].resource is invalid: {exc}") from exc
        dropped += res.dropped
        for j, sl in enumerate(rl.scope_logs):
            for k, lr in enumerate(sl.log_records):
                try:
                    dropped += _decode_record(
                        lr, res, received_ns, to_request, cols, ts_ns, requests, lim
                    )
                except (ProtobufDecodeError, ValueError) as exc:
                    where = f"resource_logs[{i}].scope_logs[{j}].log_records[{k}]"
                    raise DecodeError(KIND, f"{where} is invalid: {exc}") from exc
    limits.dropped_attributes(KIND, dropped)
    if requests:
        from meshlens.collector.decode.request_rows import rows_to_table

        return {"logs": _logs_table(cols, ts_ns), "requests": rows_to_table(requests)}
    return {"logs": _logs_table(cols, ts_ns), "requests": empty_table("requests")}


def _decode_record(
    lr: Any,
    res: ResourceInfo,
    received_ns: int,
    to_request: AccessLogConverter | None,
    cols: dict[str, list[Any]],
    ts_ns: list[int],
    requests: list[dict[str, Any]],
    lim: limits.DecodeLimits,
) -> int:
    """Append one record's row; returns how many of its attributes the limit dropped."""
    ts = lr.time_unix_nano or lr.observed_time_unix_nano or max(received_ns, 0)
    entries, dropped = _cache.limited(
        lr.attributes, lim.log_record_attribute_count, lim.attribute_value_length
    )
    attributes, attributes_json = entries_json(entries)
    body = _body_text(lr.body)
    if to_request is not None:
        try:
            row = to_request(body, attributes, res.attributes, ts)
        except Exception:  # a converter bug must not lose the batch: keep it as a log row
            log.warning("access-log conversion failed; stored as a log row", exc_info=True)
            row = None
        if row is not None:
            requests.append(row)
            return dropped
    ts_ns.append(ts)
    cols["severity_text"].append(lr.severity_text)
    cols["severity_number"].append(lr.severity_number)
    cols["body"].append(body)
    cols["service_name"].append(res.service_name)
    cols["trace_id"].append(lr.trace_id.hex())
    cols["span_id"].append(lr.span_id.hex())
    cols["attributes"].append(attributes_json)
    cols["resource_attributes"].append(res.attributes_json)
    return dropped


def _logs_table(cols: dict[str, list[Any]], ts_ns: list[int]) -> pa.Table:
    us = (np.array(ts_ns, dtype=np.uint64) // np.uint64(1000)).astype(np.int64)
    arrays = []
    for field in LOGS:
        if field.name == "ts":
            arrays.append(pa.array(us, type=pa.int64()).cast(field.type))
        else:
            arrays.append(pa.array(cols[field.name], type=field.type, size=len(ts_ns)))
    return pa.Table.from_arrays(arrays, schema=LOGS)


def decode_logs_record(record: Record) -> dict[str, pa.Table]:
    return decode_logs(record.payload, record.received_ns)
