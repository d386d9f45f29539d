"""Synthetic `requests` rows from a bookinfo-like mesh: for tests, dashboards and benchmarks.

Each logical call picks an edge of the topology by weight and an outcome (ok, 5xx, 4xx, gRPC
error, no response, never reached); a call that reached a sidecar'd destination is reported by
both proxies (reporter source and destination, same request id), a call from outside the mesh
only by the destination, a call to an external host or one that never reached its destination
(flags UF/UH) only by the source. Fully vectorised (numpy/pyarrow), deterministic per seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from meshlens.collector.store.schema import REQUESTS, UNKNOWN


@dataclass(frozen=True, slots=True)
class Workload:
    namespace: str
    workload: str
    app: str
    version: str
    sidecar: bool = True  # False: outside the mesh or no proxy (no report, no identity)

    @property
    def principal(self) -> str:
        if not self.sidecar:
            return UNKNOWN
        return f"spiffe://cluster.local/ns/{self.namespace}/sa/{self.app}"


@dataclass(frozen=True, slots=True)
class SynthEdge:
    """Traffic from `source` to `destination` (via `service`, the FQDN host)."""

    source: Workload
    destination: Workload
    service: str
    protocol: str = "http"
    weight: float = 1.0
    p_5xx: float = 0.0
    p_4xx: float = 0.0
    p_grpc_error: float = 0.0
    p_no_response: float = 0.0
    p_unreached: float = 0.0  # the source proxy could not reach it (UF): source report only
    latency_ms: float = 10.0  # median of a log-normal
    sigma: float = 0.5
    mtls: bool = True
    port: int = 9080


USER: Final = Workload(UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, sidecar=False)
GATEWAY: Final = Workload("istio-system", "istio-ingressgateway", "istio-ingressgateway", "latest")
PRODUCTPAGE: Final = Workload("bookinfo", "productpage-v1", "productpage", "v1")
DETAILS: Final = Workload("bookinfo", "details-v1", "details", "v1")
REVIEWS_V1: Final = Workload("bookinfo", "reviews-v1", "reviews", "v1")
REVIEWS_V2: Final = Workload("bookinfo", "reviews-v2", "reviews", "v2")
REVIEWS_V3: Final = Workload("bookinfo", "reviews-v3", "reviews", "v3")
RATINGS: Final = Workload("bookinfo", "ratings-v1", "ratings", "v1")
MONGODB: Final = Workload("bookinfo", "mongodb-v1", "mongodb", "v1")
RECOMMEND: Final = Workload("bookinfo", "recommendations-v1", "recommendations", "v1")
EXTERNAL: Final = Workload(UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, sidecar=False)


def _svc(name: str, ns: str = "bookinfo") -> str:
    return f"{name}.{ns}.svc.cluster.local"


BOOKINFO: Final[tuple[SynthEdge, ...]] = (
    SynthEdge(GATEWAY, PRODUCTPAGE, _svc("productpage"), weight=10, p_5xx=0.002, latency_ms=40),
    SynthEdge(USER, PRODUCTPAGE, _svc("productpage"), weight=0.5, latency_ms=5, mtls=False),
    SynthEdge(PRODUCTPAGE, DETAILS, _svc("details"), weight=10, p_4xx=0.01, latency_ms=4),
    SynthEdge(PRODUCTPAGE, REVIEWS_V1, _svc("reviews"), weight=3.4, latency_ms=8),
    SynthEdge(PRODUCTPAGE, REVIEWS_V2, _svc("reviews"), weight=3.3, latency_ms=20, p_5xx=0.001),
    SynthEdge(
        PRODUCTPAGE,
        REVIEWS_V3,
        _svc("reviews"),
        weight=3.3,
        latency_ms=25,
        p_5xx=0.05,
        p_unreached=0.005,
    ),
    SynthEdge(REVIEWS_V2, RATINGS, _svc("ratings"), weight=3.3, latency_ms=3),
    SynthEdge(REVIEWS_V3, RATINGS, _svc("ratings"), weight=3.3, latency_ms=3, p_no_response=0.01),
    SynthEdge(
        RATINGS, MONGODB, _svc("mongodb"), protocol="tcp", weight=2, latency_ms=50, port=27017
    ),
    SynthEdge(
        PRODUCTPAGE,
        RECOMMEND,
        _svc("recommendations"),
        protocol="grpc",
        weight=5,
        p_grpc_error=0.02,
        latency_ms=6,
        port=9090,
    ),
    SynthEdge(
        PRODUCTPAGE, EXTERNAL, "www.googleapis.com", weight=1, latency_ms=80, mtls=False, port=443
    ),
)

_OK, _5XX, _4XX, _GRPC, _NORESP, _UNREACHED = range(6)


def _take(values: Sequence[object], idx: np.ndarray, typ: pa.DataType) -> pa.Array:
    """values[idx] as an Arrow array, via a dictionary (no per-row Python objects)."""
    dictionary = pa.array(list(values), typ)
    return pc.take(dictionary, pa.array(idx, pa.int32()))


def synthetic_requests(
    n: int,
    *,
    start: datetime,
    duration_s: float,
    seed: int = 0,
    topology: Sequence[SynthEdge] = BOOKINFO,
) -> pa.Table:
    """Exactly `n` rows of the requests table (proxy reports), times in [start, start+duration)."""
    if n <= 0:
        return REQUESTS.empty_table()
    rng = np.random.default_rng(seed)
    edges = list(topology)
    weights = np.array([e.weight for e in edges], float)
    calls = n  # at most n calls needed: every call yields >= 1 row
    edge = rng.choice(len(edges), size=calls, p=weights / weights.sum()).astype(np.int32)
    u = rng.random(calls)
    outcome = np.full(calls, _OK, np.int8)
    lo = np.zeros(calls)
    for probs_name, kind in (
        ("p_unreached", _UNREACHED),
        ("p_no_response", _NORESP),
        ("p_5xx", _5XX),
        ("p_4xx", _4XX),
        ("p_grpc_error", _GRPC),
    ):
        p = np.array([getattr(e, probs_name) for e in edges])[edge]
        hit = (u >= lo) & (u < lo + p) & (outcome == _OK)
        outcome[hit] = kind
        lo = lo + p
    src_sidecar = np.array([e.source.sidecar for e in edges])[edge]
    dst_sidecar = np.array([e.destination.sidecar for e in edges])[edge]
    has_src = src_sidecar
    has_dst = dst_sidecar & (outcome != _UNREACHED)
    reports = has_src.astype(np.int64) + has_dst.astype(np.int64)
    # Keep just enough calls for n rows, so their times spread over the whole duration.
    calls = int(np.searchsorted(np.cumsum(reports), n)) + 1
    edge, outcome, u = edge[:calls], outcome[:calls], u[:calls]
    has_src, has_dst, reports = has_src[:calls], has_dst[:calls], reports[:calls]
    # Rows in call order, the source report first; cut at exactly n rows.
    call_of_row = np.repeat(np.arange(calls), reports)[:n]
    first = np.r_[True, call_of_row[1:] != call_of_row[:-1]]
    is_source = np.where(first, has_src[call_of_row], False)
    edge_r = edge[call_of_row]
    out_r = outcome[call_of_row]

    t0 = np.int64(int(start.timestamp() * 1_000_000))
    call_ts = t0 + np.sort(rng.integers(0, int(duration_s * 1_000_000), calls))
    med = np.array([e.latency_ms for e in edges])[edge]
    sig = np.array([e.sigma for e in edges])[edge]
    dur = med * np.exp(sig * rng.standard_normal(calls))
    dur = np.where(outcome == _UNREACHED, 1.0 + rng.random(calls), dur)
    dur_r = dur[call_of_row] + np.where(is_source, 0.4, 0.0)  # network hop seen by the client

    proto = np.array([e.protocol for e in edges])[edge_r]
    code = np.select(
        [out_r == _5XX, out_r == _4XX, out_r == _NORESP, out_r == _UNREACHED],
        [503, 404, 0, 503],
        200,
    ).astype(np.int32)
    code = np.where(proto == "tcp", 0, code).astype(np.int32)
    grpc = np.where(proto == "grpc", np.where(out_r == _GRPC, "14", "0"), "")
    grpc = np.where((proto == "grpc") & (out_r == _5XX), "14", grpc)
    flags = np.select([out_r == _UNREACHED, out_r == _NORESP], ["UF,URX", "DC"], "-")

    def col(attr: str, side: str) -> pa.Array:
        vals = [getattr(getattr(e, side), attr) for e in edges]
        return _take(vals, edge_r, pa.string())

    req_bytes = rng.integers(200, 800, len(edge_r)).astype(np.int64)
    resp_bytes = np.where(out_r == _OK, rng.integers(500, 5000, len(edge_r)), 50).astype(np.int64)
    resp_bytes = np.where(proto == "tcp", resp_bytes * 20, resp_bytes)
    ids = pc.cast(pa.array(call_of_row + seed * 10_000_000_000, pa.int64()), pa.string())
    rid = pc.binary_join_element_wise(f"req-{seed}-", ids, "")
    rid = pc.if_else(pa.array(proto == "tcp"), pa.scalar("", pa.string()), rid)
    mtls = np.array([e.mtls for e in edges])[edge_r]
    cluster_names = [f"outbound|{e.port}||{e.service}" for e in edges]
    inbound = [f"inbound|{e.port}||" for e in edges]
    upstream = pc.if_else(
        pa.array(is_source),
        _take(cluster_names, edge_r, pa.string()),
        _take(inbound, edge_r, pa.string()),
    )
    svc_names = [
        e.service.split(".")[0] if e.service.endswith(".svc.cluster.local") else e.service
        for e in edges
    ]
    svc_ns = [
        e.service.split(".")[1] if e.service.endswith(".svc.cluster.local") else UNKNOWN
        for e in edges
    ]
    paths = ["/" if e.protocol != "grpc" else "/reco.Recommend/Get" for e in edges]
    columns: dict[str, pa.Array] = {
        "ts": pa.array(call_ts[call_of_row], pa.timestamp("us", tz="UTC")),
        "duration_ms": pa.array(dur_r),
        "reporter": pa.array(np.where(is_source, "source", "destination")),
        "protocol": pa.array(proto),
        "source_workload": col("workload", "source"),
        "source_namespace": col("namespace", "source"),
        "source_canonical_service": col("app", "source"),
        "source_version": col("version", "source"),
        "source_principal": pc.if_else(
            pa.array(mtls), col("principal", "source"), pa.scalar(UNKNOWN)
        ),
        "destination_service": _take([e.service for e in edges], edge_r, pa.string()),
        "destination_service_name": _take(svc_names, edge_r, pa.string()),
        "destination_namespace": _take(svc_ns, edge_r, pa.string()),
        "destination_workload": col("workload", "destination"),
        "destination_canonical_service": col("app", "destination"),
        "destination_version": col("version", "destination"),
        "destination_principal": pc.if_else(
            pa.array(mtls), col("principal", "destination"), pa.scalar(UNKNOWN)
        ),
        "method": pa.array(np.where(proto == "tcp", "", np.where(proto == "grpc", "POST", "GET"))),
        "path": _take(paths, edge_r, pa.string()),
        "authority": _take([e.service for e in edges], edge_r, pa.string()),
        "response_code": pa.array(code),
        "grpc_status": pa.array(grpc),
        "response_flags": pa.array(flags),
        "request_bytes": pa.array(req_bytes),
        "response_bytes": pa.array(resp_bytes),
        "mtls": pa.array(mtls),
        "upstream_cluster": upstream,
        "request_id": rid,
        "trace_id": pa.array(np.full(len(edge_r), ""), pa.string()),
        "node_id": pa.array(np.full(len(edge_r), "synth"), pa.string()),
        "origin": pa.array(np.full(len(edge_r), "synth"), pa.string()),
        "destination_port": _take([e.port for e in edges], edge_r, pa.int32()),
    }
    data = pa.table(columns)
    missing = [f for f in REQUESTS if f.name not in columns]
    for f in missing:
        data = data.append_column(f, pa.nulls(len(data), f.type))
    return data.select(REQUESTS.names).cast(REQUESTS)
