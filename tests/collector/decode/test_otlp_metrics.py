from __future__ import annotations

import json
import math

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2

from meshlens.collector.decode.otlp_metrics import decode_metrics, exponential_buckets
from meshlens.collector.decode.registry import decode_record
from meshlens.collector.errors import DecodeError
from meshlens.collector.store.records import Record, RecordKind
from meshlens.collector.store.schema import METRICS
from tests.collector.decode.samples import kv, sdk_metrics_request

_SKIP = {"ts", "start_ts", "resource_attributes"}


def test_sdk_metrics_decode_to_exact_rows() -> None:
    table = decode_metrics(sdk_metrics_request())
    assert table.schema == METRICS
    rows = {r["name"]: {k: v for k, v in r.items() if k not in _SKIP} for r in table.to_pylist()}
    base = {
        "service_name": "checkout",
        "value": None,
        "count": None,
        "sum": None,
        "bucket_bounds": None,
        "bucket_counts": None,
        "is_monotonic": None,
        "scale": None,
        "quantiles": None,
        "temporality": "cumulative",
        "attributes": "{}",
    }
    assert rows["requests"] == {
        **base, "name": "requests", "kind": "sum", "unit": "1", "value": 5.0,
        "is_monotonic": True, "attributes": '{"route":"/cart"}',
    }  # fmt: skip
    assert rows["inflight"] == {
        **base, "name": "inflight", "kind": "sum", "unit": "", "value": -2.0, "is_monotonic": False,
    }  # fmt: skip
    assert rows["latency"] == {
        **base, "name": "latency", "kind": "histogram", "unit": "ms", "count": 4, "sum": 625.0,
        "bucket_bounds": [10.0, 100.0], "bucket_counts": [1, 2, 1],
        "attributes": '{"route":"/cart"}',
    }  # fmt: skip
    assert rows["temperature"] == {
        **base, "name": "temperature", "kind": "gauge", "unit": "", "value": 21.5,
        "temporality": "", "attributes": '{"room":"a"}',
    }  # fmt: skip
    exp = rows["latency.exp"]
    assert (exp["kind"], exp["count"], exp["sum"], exp["unit"]) == (
        "exponential_histogram",
        4,
        6.0,
        "s",
    )
    bounds, counts = exp["bucket_bounds"], exp["bucket_counts"]
    assert len(counts) == len(bounds) + 1
    assert sum(counts) == 4
    assert bounds == sorted(bounds)
    # Each recorded value (0, 1, 2, 3) sits in a bucket whose bounds contain it.
    for value in (1.0, 2.0, 3.0):
        i = next(i for i, b in enumerate(bounds) if value <= b)
        assert counts[i] == 1 and bounds[i - 1] < value
    assert counts[bounds.index(0.0) + 1] == 1  # the zero bucket
    assert exp["scale"] is not None
    ts = table.column("ts").to_pylist()
    assert all(t is not None for t in ts)
    starts = dict(
        zip(table.column("name").to_pylist(), table.column("start_ts").to_pylist(), strict=True)
    )
    assert starts.pop("temperature") is None  # gauges have no start time
    assert all(t is not None for t in starts.values())


def test_exponential_buckets_scale_zero() -> None:
    # base 2: negative bucket 0 is [-2, -1), positive buckets 0..2 are (1,2], (2,4], (4,8].
    bounds, counts = exponential_buckets(0, 1, 0.0, (0, [1, 0, 2]), (0, [3]))
    assert bounds == [-2.0, -1.0, 0.0, 0.0, 1.0, 2.0, 4.0, 8.0]
    assert counts == [0, 3, 0, 1, 0, 1, 0, 2, 0]


def test_exponential_buckets_fine_scale_and_threshold() -> None:
    bounds, counts = exponential_buckets(1, 2, 0.5, (-1, [1]), (0, []))
    assert bounds == [-0.5, 0.5, pytest.approx(2**-0.5), 1.0]
    assert counts == [0, 2, 0, 1, 0]


def test_exponential_buckets_edge_cases() -> None:
    assert exponential_buckets(0, 0, 0.0, (0, [0, 0]), (5, [0])) == ([], [])
    # absurd scales/offsets saturate instead of raising
    bounds, counts = exponential_buckets(-(2**31), 0, math.nan, (2**31 - 2, [1]), (0, []))
    assert counts == [0, 1, 0] and bounds == [math.inf, math.inf]
    bounds, _ = exponential_buckets(2**31 - 1, 1, 0.0, (0, [1]), (-(2**31), [1]))
    assert bounds == sorted(bounds)


def _request() -> tuple[ExportMetricsServiceRequest, metrics_pb2.Metric]:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", "legacy"))
    return req, rm.scope_metrics.add().metrics.add()


def test_summary_and_flags_and_huge_counts() -> None:
    req, m = _request()
    m.name = "rpc.latency"
    p = m.summary.data_points.add(time_unix_nano=10**18, count=2**64 - 1, sum=3.5)
    p.quantile_values.add(quantile=0.5, value=1.0)
    p.quantile_values.add(quantile=0.99, value=math.inf)
    m2 = req.resource_metrics[0].scope_metrics[0].metrics.add(name="g")
    m2.gauge.data_points.add(time_unix_nano=10**18, as_double=1.0, flags=1)  # no recorded value
    m2.gauge.data_points.add(time_unix_nano=10**18, as_int=-(2**63))
    m2.gauge.data_points.add(time_unix_nano=10**18, as_double=math.nan)
    rows = decode_metrics(req.SerializeToString()).to_pylist()
    summary = rows[0]
    assert summary["kind"] == "summary" and summary["service_name"] == "legacy"
    assert summary["count"] == 2**63 - 1  # saturated, not an overflow
    assert summary["sum"] == 3.5
    assert json.loads(summary["quantiles"]) == [[0.5, 1.0], [0.99, "Infinity"]]
    assert summary["start_ts"] is None
    assert rows[1]["value"] is None
    assert rows[2]["value"] == float(-(2**63))
    assert math.isnan(rows[3]["value"])


def test_histogram_without_sum_and_delta_temporality() -> None:
    req, m = _request()
    m.name = "h"
    m.histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
    m.histogram.data_points.add(time_unix_nano=10**18, count=1, bucket_counts=[1])
    m.histogram.data_points.add(time_unix_nano=10**18, count=1, sum=2.0, flags=1)
    row, stale = decode_metrics(req.SerializeToString()).to_pylist()
    assert (stale["count"], stale["sum"], stale["bucket_counts"]) == (None, None, None)
    assert stale["temporality"] == "delta"
    assert (row["sum"], row["temporality"], row["bucket_bounds"], row["bucket_counts"]) == (
        None,
        "delta",
        [],
        [1],
    )


def test_metric_without_data_and_zero_time() -> None:
    req, m = _request()
    m.name = "nothing"  # no data at all: no rows
    m2 = req.resource_metrics[0].scope_metrics[0].metrics.add(name="s")
    m2.sum.data_points.add(as_int=3)  # time 0 -> received time
    record = Record(RecordKind.OTLP_METRICS, 1_764_000_000_000_000_000, req.SerializeToString())
    table = decode_record(record)["metrics"]
    assert table.column("name").to_pylist() == ["s"]
    assert table.column("ts")[0].as_py().year == 2025


def test_malformed_metrics_payload() -> None:
    with pytest.raises(DecodeError, match="cannot decode otlp metrics: invalid"):
        decode_metrics(b"\x0a\xff")
