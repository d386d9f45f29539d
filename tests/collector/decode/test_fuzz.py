"""Random and mutated payloads: every decoder gives rows or DecodeError, never anything else."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlens.collector.decode.otlp_json import otlp_json_to_proto
from meshlens.collector.decode.otlp_logs import decode_logs
from meshlens.collector.decode.otlp_metrics import decode_metrics
from meshlens.collector.decode.otlp_traces import decode_traces
from meshlens.collector.errors import DecodeError
from tests.collector.decode.samples import (
    envoy_traces_request,
    sdk_logs_request,
    sdk_metrics_request,
    sdk_traces_request,
)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DECODERS: dict[str, Callable[[bytes], object]] = {
    "traces": lambda b: decode_traces(b, 1),
    "metrics": lambda b: decode_metrics(b, 1),
    "logs": lambda b: decode_logs(b, 1),
}
SAMPLES = {
    "traces": sdk_traces_request() + envoy_traces_request().SerializeToString(),
    "metrics": sdk_metrics_request(),
    "logs": sdk_logs_request(),
}


def _rows_or_decode_error(kind: str, payload: bytes) -> None:
    try:
        out = DECODERS[kind](payload)
    except DecodeError:
        return
    tables = out.values() if isinstance(out, dict) else [out]
    assert all(isinstance(t, pa.Table) for t in tables)


@FUZZ
@given(kind=st.sampled_from(sorted(DECODERS)), payload=st.binary(max_size=512))
def test_random_bytes(kind: str, payload: bytes) -> None:
    _rows_or_decode_error(kind, payload)


@FUZZ
@given(
    kind=st.sampled_from(sorted(DECODERS)),
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=8
    ),
    cut=st.integers(min_value=0),
)
def test_mutated_payloads(kind: str, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(SAMPLES[kind])
    for pos, byte in edits:
        data[pos % len(data)] = byte
    _rows_or_decode_error(kind, bytes(data[: len(data) - cut % 64]))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "resourceSpans",
                    "scopeSpans",
                    "spans",
                    "traceId",
                    "spanId",
                    "kind",
                    "name",
                    "attributes",
                    "key",
                    "value",
                    "stringValue",
                    "intValue",
                    "resourceLogs",
                    "scopeLogs",
                    "logRecords",
                    "body",
                    "resourceMetrics",
                    "scopeMetrics",
                    "metrics",
                    "gauge",
                    "dataPoints",
                    "asInt",
                    "asDouble",
                    "startTimeUnixNano",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=25,
)


@FUZZ
@given(kind=st.sampled_from(sorted(DECODERS)), doc=_json)
def test_random_json(kind: str, doc: object) -> None:
    import json

    try:
        payload = otlp_json_to_proto(kind, json.dumps(doc).encode())
    except DecodeError:
        return
    _rows_or_decode_error(kind, payload)
