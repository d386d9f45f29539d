"""What a shipping round commits (collector/store/delta_plan.py): pure, no object store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from meshlens.collector.store.delta_plan import (
    CommittedFile,
    LocalFile,
    NodeState,
    after_commit,
    app_id,
    plan_commit,
    table_path,
)
from meshlens.collector.store.layout import ParquetSegment

NOW = datetime(2026, 1, 1, 11, 30, tzinfo=UTC).timestamp()
P10 = ("2026-01-01", "10")


def _seg(lo: int, hi: int, *, node: str = "a", hr: str = "10") -> ParquetSegment:
    name = f"{node}_{lo:016d}_{hi:016d}.parquet"
    return ParquetSegment(
        Path(f"spans/dt=2026-01-01/hr={hr}/{name}"), "spans", "2026-01-01", hr, node, lo, hi
    )


def _local(*segs: ParquetSegment) -> list[LocalFile]:
    return [LocalFile(s, str(s.path), 100, 0.0) for s in segs]


def _state(*segs: ParquetSegment, marks: dict[tuple[str, str], int] | None = None) -> NodeState:
    files = {table_path(s): CommittedFile(s, table_path(s), 100) for s in segs}
    return NodeState(files, marks or {})


def _names(files: object) -> list[tuple[int, int]]:
    return [(f.seg.lo, f.seg.hi) for f in files]  # type: ignore[attr-defined]


def test_new_segments_are_added_with_their_partition_watermark() -> None:
    plan = plan_commit(
        _local(_seg(1, 1), _seg(2, 2), _seg(2, 2, hr="11")),
        NodeState(),
        frontier=None,
        now=NOW,
        retention=0,
    )
    assert _names(plan.adds) == [(1, 1), (2, 2), (2, 2)]
    assert plan.removes == ()
    assert dict(plan.watermarks) == {P10: 2, ("2026-01-01", "11"): 2}
    assert app_id("a", P10) == "meshlens:a:2026-01-01T10"


def test_a_replay_after_a_crash_adds_nothing_twice() -> None:
    # The commit landed, the process died before it knew: the table's watermark says so.
    local = _local(_seg(1, 1), _seg(2, 2))
    committed = _state(_seg(1, 1), _seg(2, 2), marks={P10: 2})
    assert plan_commit(local, committed, frontier=None, now=NOW, retention=0).empty
    # Even with the files gone from the snapshot (removed by retention elsewhere), the
    # watermark alone keeps them out.
    assert plan_commit(local, _state(marks={P10: 2}), frontier=None, now=NOW, retention=0).empty


def test_only_files_below_the_converted_frontier_are_committed() -> None:
    # Segment 3 converted before 2 (parallel workers): committing 3 would move the watermark
    # past 2, and 2 would then look committed.
    local = _local(_seg(1, 1), _seg(3, 3))
    plan = plan_commit(local, NodeState(), frontier=2, now=NOW, retention=0)
    assert _names(plan.adds) == [(1, 1)]
    assert dict(plan.watermarks) == {P10: 1}
    assert plan.waiting == 1  # segment 3 waits (and counts as pending) until 2 is converted


def test_compaction_adds_the_output_and_removes_its_inputs_in_one_commit() -> None:
    state = _state(_seg(1, 1), _seg(2, 2), _seg(3, 3), marks={P10: 3})
    plan = plan_commit(_local(_seg(1, 3)), state, frontier=None, now=NOW, retention=0)
    assert _names(plan.adds) == [(1, 3)]
    assert sorted(_names(plan.removes)) == [(1, 1), (2, 2), (3, 3)]
    assert dict(plan.watermarks) == {}  # a rearrangement: no new rows
    after = after_commit(state, plan)
    assert sorted(_names(after.files.values())) == [(1, 3)]
    assert plan_commit(_local(_seg(1, 3)), after, frontier=None, now=NOW, retention=0).empty


def test_a_compacted_file_with_rows_never_committed_moves_the_watermark() -> None:
    # Segments 3 and 4 were compacted locally before they were shipped.
    state = _state(_seg(1, 1), _seg(2, 2), marks={P10: 2})
    plan = plan_commit(_local(_seg(1, 4)), state, frontier=None, now=NOW, retention=0)
    assert _names(plan.adds) == [(1, 4)]
    assert sorted(_names(plan.removes)) == [(1, 1), (2, 2)]
    assert dict(plan.watermarks) == {P10: 4}


def test_other_nodes_files_are_never_touched() -> None:
    state = NodeState()  # node_state keeps only this node's files
    plan = plan_commit(_local(_seg(1, 1, node="b")), state, frontier=None, now=NOW, retention=0)
    assert _names(plan.adds) == [(1, 1)]  # the local listing decides which node it is


def test_retention_removes_expired_partitions() -> None:
    old = _seg(1, 1, hr="00")
    state = _state(old, _seg(2, 2), marks={("2026-01-01", "00"): 1, P10: 2})
    plan = plan_commit(_local(_seg(2, 2)), state, frontier=None, now=NOW, retention=3600)
    assert plan.adds == ()
    assert _names(plan.removes) == [(1, 1)]
    # An expired local file is not added either.
    fresh = plan_commit(_local(old), NodeState(), frontier=None, now=NOW, retention=3600)
    assert fresh.empty
