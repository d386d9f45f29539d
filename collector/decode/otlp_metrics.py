"""OTLP ExportMetricsServiceRequest -> rows of the `metrics` table (one row per data point).

Histograms keep Prometheus-style explicit buckets: `bucket_bounds` are upper bounds and
`bucket_counts` has one more entry (the last bucket is (bound[-1], +inf)). Exponential histograms
are turned into the same shape (see `exponential_buckets`) so one SQL query reads both; their
`scale` is kept. Summaries keep their quantiles as JSON `[[q, value], ...]`.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
import pyarrow as pa
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from meshlens.collector.decode import limits
from meshlens.collector.decode.attributes import ResourceInfo, limited_dict, resource_info, to_json
from meshlens.collector.errors import DecodeError
from meshlens.collector.store.records import Record
from meshlens.collector.store.schema import METRICS

KIND: Final = "otlp metrics"
_INT64_MAX: Final = 2**63 - 1
_NO_RECORDED_VALUE: Final = 1  # DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_TEMPORALITY: Final = {1: "delta", 2: "cumulative"}
_KEPT_WITHOUT_VALUE: Final = frozenset({"is_monotonic", "temporality", "scale"})


def _int64(n: int) -> int:
    return n if n <= _INT64_MAX else _INT64_MAX  # fixed64 counts can exceed BIGINT


def _bucket_bound(index: int, scale: int) -> float:
    """base**index with base = 2**(2**-scale), saturating instead of overflowing."""
    if index == 0:
        return 1.0
    try:
        return float(2.0 ** (index * 2.0**-scale))
    except OverflowError:
        return math.inf if index > 0 else 0.0


def exponential_buckets(
    scale: int,
    zero_count: int,
    zero_threshold: float,
    positive: tuple[int, list[int]],
    negative: tuple[int, list[int]],
) -> tuple[list[float], list[int]]:
    """An exponential histogram as explicit (upper bounds, counts), len(counts) = len(bounds) + 1.

    Bucket `offset + k` of the positive range holds (base**i, base**(i+1)]; negative buckets
    mirror it below zero; the zero bucket is [-zero_threshold, zero_threshold]. Gaps between
    the ranges become empty buckets. Empty histogram -> ([], []).
    """
    intervals: list[tuple[float, float, int]] = []
    neg_offset, neg_counts = negative
    for k in range(len(neg_counts) - 1, -1, -1):
        i = neg_offset + k
        intervals.append((-_bucket_bound(i + 1, scale), -_bucket_bound(i, scale), neg_counts[k]))
    threshold = zero_threshold if math.isfinite(zero_threshold) else 0.0
    if zero_count or intervals or positive[1]:
        threshold = abs(threshold)
        intervals.append((-threshold if threshold else 0.0, threshold, zero_count))
    pos_offset, pos_counts = positive
    for k, count in enumerate(pos_counts):
        i = pos_offset + k
        intervals.append((_bucket_bound(i, scale), _bucket_bound(i + 1, scale), count))
    # Empty buckets at either end carry no information (SDKs send a few).
    nonzero = [i for i, (_, _, count) in enumerate(intervals) if count]
    if not nonzero:
        return [], []
    intervals = intervals[nonzero[0] : nonzero[-1] + 1]
    bounds = [intervals[0][0]]
    counts = [0]
    for lo, hi, count in intervals:
        if lo > bounds[-1]:
            bounds.append(lo)  # a gap between ranges: an empty bucket
            counts.append(0)
        bounds.append(max(hi, bounds[-1]))
        counts.append(_int64(count))
    counts.append(0)
    return bounds, counts


class _Rows:
    """Column lists for the `metrics` table; one `add` per data point."""

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {f.name: [] for f in METRICS}
        self.ts_ns: list[int] = []
        self.start_ns: list[int] = []
        self.limits = limits.current()
        self.dropped = 0  # point attributes over the attribute count limit

    def add(
        self, metric: Any, kind: str, res: ResourceInfo, point: Any, received_ns: int, **values: Any
    ) -> None:
        c = self.cols
        if point.flags & _NO_RECORDED_VALUE:  # a staleness marker: the point has no values
            values = {k: v for k, v in values.items() if k in _KEPT_WITHOUT_VALUE}
        self.ts_ns.append(point.time_unix_nano or max(received_ns, 0))
        self.start_ns.append(point.start_time_unix_nano)
        c["name"].append(metric.name)
        c["kind"].append(kind)
        c["unit"].append(metric.unit)
        c["service_name"].append(res.service_name)
        attributes, dropped = limited_dict(
            point.attributes, self.limits.attribute_count, self.limits.attribute_value_length
        )
        self.dropped += dropped
        c["attributes"].append(to_json(attributes))
        c["resource_attributes"].append(res.attributes_json)
        for name in (
            "value",
            "count",
            "sum",
            "bucket_bounds",
            "bucket_counts",
            "is_monotonic",
            "temporality",
            "scale",
            "quantiles",
        ):
            c[name].append(values.get(name))

    def table(self) -> pa.Table:
        n = len(self.ts_ns)
        arrays = []
        for field in METRICS:
            if field.name in ("ts", "start_ts"):
                ns = np.array(self.ts_ns if field.name == "ts" else self.start_ns, dtype=np.uint64)
                mask = (ns == 0) if field.name == "start_ts" else None  # 0 = unknown start
                us = (ns // np.uint64(1000)).astype(np.int64)
                arrays.append(pa.array(us, type=pa.int64(), mask=mask).cast(field.type))
            else:
                arrays.append(pa.array(self.cols[field.name], type=field.type, size=n))
        return pa.Table.from_arrays(arrays, schema=METRICS)


def _number(point: Any) -> float | None:
    which = point.WhichOneof("value")
    if which == "as_double":
        return point.as_double  # NaN/inf are valid DOUBLEs: kept as sent
    if which == "as_int":
        return float(point.as_int)
    return None


def _decode_metric(rows: _Rows, metric: Any, res: ResourceInfo, received_ns: int) -> None:
    which = metric.WhichOneof("data")
    if which == "gauge":
        for p in metric.gauge.data_points:
            rows.add(metric, "gauge", res, p, received_ns, value=_number(p), temporality="")
    elif which == "sum":
        s = metric.sum
        temporality = _TEMPORALITY.get(s.aggregation_temporality, "")
        for p in s.data_points:
            rows.add(
                metric,
                "sum",
                res,
                p,
                received_ns,
                value=_number(p),
                is_monotonic=s.is_monotonic,
                temporality=temporality,
            )
    elif which == "histogram":
        h = metric.histogram
        temporality = _TEMPORALITY.get(h.aggregation_temporality, "")
        for p in h.data_points:
            rows.add(
                metric,
                "histogram",
                res,
                p,
                received_ns,
                count=_int64(p.count),
                sum=p.sum if p.HasField("sum") else None,
                bucket_bounds=list(p.explicit_bounds),
                bucket_counts=[_int64(c) for c in p.bucket_counts],
                temporality=temporality,
            )
    elif which == "exponential_histogram":
        e = metric.exponential_histogram
        temporality = _TEMPORALITY.get(e.aggregation_temporality, "")
        for p in e.data_points:
            bounds, counts = exponential_buckets(
                p.scale,
                p.zero_count,
                p.zero_threshold,
                (p.positive.offset, list(p.positive.bucket_counts)),
                (p.negative.offset, list(p.negative.bucket_counts)),
            )
            rows.add(
                metric,
                "exponential_histogram",
                res,
                p,
                received_ns,
                count=_int64(p.count),
                sum=p.sum if p.HasField("sum") else None,
                bucket_bounds=bounds,
                bucket_counts=counts,
                scale=p.scale,
                temporality=temporality,
            )
    elif which == "summary":
        for p in metric.summary.data_points:
            quantiles = [[q.quantile, q.value] for q in p.quantile_values]
            rows.add(
                metric,
                "summary",
                res,
                p,
                received_ns,
                count=_int64(p.count),
                sum=p.sum,
                quantiles=to_json(_json_safe(quantiles)),
                temporality="cumulative",
            )


def _json_safe(quantiles: list[list[float]]) -> list[list[float | str]]:
    return [[_finite(q), _finite(v)] for q, v in quantiles]


def _finite(x: float) -> float | str:
    if math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def decode_metrics(payload: bytes, received_ns: int = 0) -> pa.Table:
    """An encoded ExportMetricsServiceRequest as a `metrics` table; raises DecodeError."""
    try:
        request = ExportMetricsServiceRequest.FromString(payload)
    except (ProtobufDecodeError, ValueError) as exc:
        raise DecodeError(KIND, f"invalid ExportMetricsServiceRequest protobuf: {exc}") from exc
    rows = _Rows()
    for rm in request.resource_metrics:
        res = resource_info(rm.resource)
        rows.dropped += res.dropped
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                _decode_metric(rows, metric, res, received_ns)
    limits.dropped_attributes(KIND, rows.dropped)
    return rows.table()


def decode_metrics_record(record: Record) -> dict[str, pa.Table]:
    return {"metrics": decode_metrics(record.payload, record.received_ns)}
