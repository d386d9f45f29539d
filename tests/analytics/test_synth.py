from __future__ import annotations

from datetime import UTC, datetime

import pyarrow.compute as pc

from meshlens.collector.store.schema import REQUESTS
from meshlens.synth import synthetic_requests

START = datetime(2026, 1, 1, tzinfo=UTC)


def test_exact_rows_schema_and_determinism() -> None:
    a = synthetic_requests(5000, start=START, duration_s=600, seed=3)
    b = synthetic_requests(5000, start=START, duration_s=600, seed=3)
    assert a.num_rows == 5000 and a.schema == REQUESTS and a.equals(b)
    assert not synthetic_requests(5000, start=START, duration_s=600, seed=4).equals(a)


def test_times_span_the_duration_and_reporters_pair_up() -> None:
    t = synthetic_requests(20000, start=START, duration_s=600, seed=1)
    ts = t.column("ts")
    span_s = (pc.max(ts).as_py() - pc.min(ts).as_py()).total_seconds()
    assert 590 < span_s <= 600
    reporters = t.column("reporter").value_counts().to_pylist()
    counts = {r["values"]: r["counts"] for r in reporters}
    assert counts["source"] > 0.4 * 20000 and counts["destination"] > 0.4 * 20000
    for col in ("source_workload", "destination_workload", "destination_service_name"):
        assert t.column(col).null_count == 0
