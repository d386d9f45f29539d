"""Which decoder turns which kind of WAL record into rows.

A decoder is a pure function `Record -> dict[table name, pa.Table]` (tables conform to
`collector.store.schema`). It raises `collector.errors.DecodeError` for bad input. Decoders are
named here as strings and imported on first use, so a worker process loads only what it needs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Final

import pyarrow as pa

from meshlens.collector.decode import window
from meshlens.collector.store.parquet_write import conform
from meshlens.collector.store.records import Record, RecordKind

Decoder = Callable[[Record], dict[str, pa.Table]]

DECODERS: Final[dict[RecordKind, str]] = {
    # The C wire decoder when built (otlp_traces_fast), the Python reference otherwise.
    RecordKind.OTLP_TRACES: "meshlens.collector.decode.otlp_traces_fast:decode_traces_record",
    RecordKind.OTLP_METRICS: "meshlens.collector.decode.otlp_metrics:decode_metrics_record",
    RecordKind.OTLP_LOGS: "meshlens.collector.decode.otlp_logs:decode_logs_record",
    RecordKind.ENVOY_ALS: "meshlens.collector.decode.envoy_als:decode_als_record",
    RecordKind.ACCESS_LOG_LINES: "meshlens.collector.decode.access_log_text:decode_lines_record",
}

# Two-step decoders for kinds with small records, where building Arrow arrays per record costs
# more than decoding: `part(record)` (pure, raises DecodeError: one record's rows in any form)
# and `tables(parts)` (the tables of many records' parts at once). The converter uses them
# instead of the one-step decoder (same rows, same order) unless that one is overridden.
# Both kinds apply the timestamp window (`window`); the two-step ones per record's rows.
BATCH_DECODERS: Final[dict[RecordKind, tuple[str, str]]] = {
    # The C wire decoder when built (envoy_als_fast), the Python reference otherwise.
    RecordKind.ENVOY_ALS: (
        "meshlens.collector.decode.envoy_als_fast:record_part",
        "meshlens.collector.decode.envoy_als_fast:records_tables",
    ),
    # Likewise for spans (otlp_traces_fast): small requests are common (Envoy sidecars).
    RecordKind.OTLP_TRACES: (
        "meshlens.collector.decode.otlp_traces_fast:record_part",
        "meshlens.collector.decode.otlp_traces_fast:records_tables",
    ),
}

_loaded: dict[RecordKind, Decoder] = {}


def _windowed(decode: Decoder) -> Decoder:
    """`decode` with the live-ingest timestamp window applied (collector.decode.window)."""

    def windowed(record: Record) -> dict[str, pa.Table]:
        return window.apply(decode(record), record.received_ns)

    return windowed


def decoder_for(kind: RecordKind) -> Decoder:
    fn = _loaded.get(kind)
    if fn is None:
        module, _, name = DECODERS[kind].partition(":")
        fn = _windowed(getattr(importlib.import_module(module), name))
        _loaded[kind] = fn
    return fn


def decode_record(record: Record) -> dict[str, pa.Table]:
    return decoder_for(record.kind)(record)


def decode_records(records: Iterable[Record]) -> dict[str, pa.Table]:
    """Decode many records and concatenate per table (schemas conformed)."""
    parts: dict[str, list[pa.Table]] = {}
    for record in records:
        for table, data in decode_record(record).items():
            if data.num_rows:
                parts.setdefault(table, []).append(conform(table, data))
    return {t: pa.concat_tables(ts) for t, ts in parts.items()}
