"""12 s of 16 senders offering far more than the collector can convert (60 s: tests/soak)."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.overload import run_overload


def test_overload_is_refused_with_retry_hints_memory_stays_bounded_and_it_recovers(
    tmp_path: Path,
) -> None:
    r = run_overload(tmp_path / "data", seconds=12)
    print(r)
    refused = {c: n for c, n in r.codes.items() if c != "OK"}
    assert refused, f"no backpressure at {r.offered_rps:.0f} requests/s: {r.codes}"
    assert set(refused) <= {"RESOURCE_EXHAUSTED", "UNAVAILABLE"}, r.codes
    for code in refused:
        assert int(r.retry_hints[code]) > 0, r.retry_hints
    assert r.peak_rss_mib < 1024, r
    # every acknowledged span is stored; refused requests left nothing behind
    assert r.stored_spans == r.acked_spans, r
