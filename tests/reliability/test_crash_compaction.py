"""kill -9 `meshlens serve` three times at random points of sustained ingest while compaction
runs; after every restart each acknowledged span is stored exactly once. (50 kills: tests/soak.)
"""

from __future__ import annotations

from pathlib import Path

from tests.reliability.crash import crash_rounds


def test_three_kills_during_ingest_and_compaction_lose_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    report = crash_rounds(tmp_path / "data", kills=3)
    print(report)
    assert report.kills == 3
    assert report.acked > 0
    assert report.merged_files > 0, "compaction never ran"
