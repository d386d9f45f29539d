"""OTLP ExportTraceServiceRequest -> `spans` table, with the C wire decoder when it is built.

`collector.decode._otlp_wire` (C, built by `pip install -e .`) walks a request's bytes once and
returns Arrow-ready column buffers: no Python object per span or attribute. It derives the
promoted semantic-convention columns and writes the attributes JSON exactly as the reference
does (`attributes.py`'s canonical form: compact, keys sorted, doubles as Python's repr).
Resources stay in Python: the C side lists each ResourceSpans' encoded Resource,
`attributes.resource_for` resolves each one (memoised per process, so the resource rules live in
one place), and the C side writes the resolved service columns into each row.

`collector.decode.otlp_traces` is the reference and the fallback: when the extension is missing,
or declines a request (malformed or unusual wire data, see the C file's header), the request is
decoded there, which gives the same rows or the precise DecodeError.
tests/collector/decode/test_otlp_traces_fast.py holds the two to identical tables.

Small requests (an Envoy sidecar flushes a few spans at a time) cost more per request than per
span, so the converter hands this module up to BATCH_RECORDS records at once
(`record_part`/`records_tables`, registry.BATCH_DECODERS): one C call per GROUP_BYTES of
payload, which spreads the Python around each call (about 28 Arrow arrays) over thousands of
spans. 4 MiB measured best for 1000-span SDK requests (0.70 vs 0.82 CPU-µs/span at 1 MiB;
much larger groups gain nothing, their column buffers outgrow the CPU caches).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any, Final

import numpy as np
import pyarrow as pa
from google.protobuf.message import DecodeError as ProtobufDecodeError

from meshlens.collector.decode import limits, otlp_traces, window
from meshlens.collector.decode.attributes import ResourceInfo, resource_for
from meshlens.collector.store.records import Record
from meshlens.collector.store.schema import SPANS

_wire: ModuleType | None
try:
    from meshlens.collector.decode import _otlp_wire

    _wire = _otlp_wire
except ImportError:  # not built (no C compiler at install time): Python decodes everything
    _wire = None

AVAILABLE: Final = _wire is not None
GROUP_BYTES: Final = 4 << 20  # payload bytes per C call in `records_tables`


def decode_traces(payload: bytes, received_ns: int = 0) -> pa.Table:
    """`otlp_traces.decode_traces` (same rows, same DecodeError), through C when it can."""
    table = fast_table(payload, received_ns)
    return otlp_traces.decode_traces(payload, received_ns) if table is None else table


def decode_traces_record(record: Record) -> dict[str, pa.Table]:
    return {"spans": decode_traces(record.payload, record.received_ns)}


def record_part(record: Record) -> Record:
    """First step of the two-step decoder (registry.BATCH_DECODERS): all work is batched."""
    return record


def records_tables(records: Sequence[Record]) -> dict[str, pa.Table]:
    """Many OTLP trace records -> {"spans": table}, rows in record order, each record's rows in
    the timestamp window around its receipt. Raises DecodeError for a batch holding a record
    that does not decode (the converter then decodes one by one)."""
    tables: list[pa.Table] = []
    per_record: list[int] = []
    for group in _groups(records):
        fast = _fast([r.payload for r in group], [r.received_ns for r in group])
        if fast is None:  # a declined request: this group goes one by one
            for r in group:
                tables.append(decode_traces(r.payload, r.received_ns))
                per_record.append(tables[-1].num_rows)
        else:
            tables.append(fast[0])
            per_record.extend(fast[1].tolist())
    table = pa.concat_tables(tables) if tables else otlp_traces.decode_traces(b"")
    received = np.repeat(np.array([r.received_ns // 1000 for r in records], np.int64), per_record)
    return {"spans": window.apply_table("spans", table, received)}


def _groups(records: Sequence[Record]) -> Iterator[Sequence[Record]]:
    """Consecutive records of up to GROUP_BYTES of payload (at least one each): one C call
    each."""
    start = size = 0
    for i, r in enumerate(records):
        if i > start and size + len(r.payload) > GROUP_BYTES:
            yield records[start:i]
            start, size = i, 0
        size += len(r.payload)
    if start < len(records):
        yield records[start:]


def fast_table(payload: bytes, received_ns: int = 0) -> pa.Table | None:
    """The C path; None when the extension declines the request (or is not built)."""
    fast = _fast([payload], [received_ns])
    return None if fast is None else fast[0]


def _resource_columns(info: ResourceInfo) -> tuple[bytes, bytes, bytes, bytes]:
    return (
        info.service_name.encode(),
        info.service_namespace.encode(),
        info.service_version.encode(),
        info.attributes_json.encode(),
    )


def _fast(payloads: list[bytes], received_ns: list[int]) -> tuple[pa.Table, Any] | None:
    """The table of many requests and the number of rows of each (an int64 array); None when
    the extension declines one of them (or is not built)."""
    if _wire is None:
        return None
    infos: list[ResourceInfo] = []
    resource_dropped = []
    for payload in payloads:
        slices = _wire.resources(payload)
        if slices is None:
            return None
        try:
            mine = [resource_for(payload[o : o + size] if size >= 0 else b"") for o, size in slices]
        except (ProtobufDecodeError, ValueError):
            return None  # the reference reports the bad resource precisely
        infos.extend(mine)
        resource_dropped.append(sum(info.dropped for info in mine))
    lim = limits.current()
    out = _wire.decode(
        payloads,
        [max(r, 0) for r in received_ns],
        max(lim.span_attribute_count, 0),
        max(lim.attribute_value_length, 0),
        [_resource_columns(info) for info in infos],
    )
    if out is None:
        return None
    n: int = out["rows"]
    arrays = []
    for field in SPANS:
        col = out[field.name]
        if type(col) is bytes:  # timestamps (int64 µs) and durations: no nulls
            arrays.append(pa.Array.from_buffers(field.type, n, [None, pa.py_buffer(col)]))
        else:
            validity, offsets, data, nulls = col
            bufs = [None if validity is None else pa.py_buffer(validity)]
            if offsets is not None:
                bufs.append(pa.py_buffer(offsets))
            bufs.append(pa.py_buffer(data))
            arrays.append(pa.Array.from_buffers(field.type, n, bufs, null_count=nulls))
    # Counted and logged per request, as the reference does.
    span_dropped = np.frombuffer(out["dropped"], np.uint64)
    for spans, res in zip(span_dropped.tolist(), resource_dropped, strict=True):
        limits.dropped_attributes(otlp_traces.KIND, spans + res)
    per_record = np.frombuffer(out["rows_per_record"], np.int64)
    return pa.Table.from_arrays(arrays, schema=SPANS), per_record
