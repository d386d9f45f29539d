"""What one shipping round commits to one Delta table for one collector (pure: no I/O).

The shared store is one Delta Lake table per public table (`collector/store/delta_table.py`).
A collector (`node`) mirrors its own finished local Parquet files into it:

- **New rows.** A converted WAL segment's files (one per partition) are added. Each commit
  records, per partition, an application transaction `meshlens:<node>:<dt>T<hr>` whose version
  is the highest WAL sequence number of this node committed in that partition. A round after a
  crash reads those versions from the table and skips every file at or below them: replay is
  idempotent through Delta's own `txn` actions, whatever the files are called.
- **Compaction** is a commit too: the local compacted file is added and the files of this node
  it covers are removed in the same commit, so a reader's snapshot holds either the inputs or
  the output, never both and never half.
- **Retention** removes this node's files of expired partitions (a commit); VACUUM deletes them
  physically after the grace period.

Only files below the converted frontier (every WAL segment numbered below it is converted) are
committed: segments convert in parallel and out of order, and a watermark may only move past a
number once everything below it is known.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from meshlens.collector.store.compaction import partition_end
from meshlens.collector.store.layout import ParquetSegment, visible

Partition = tuple[str, str]  # (dt, hr)


def app_id(node: str, part: Partition) -> str:
    """The Delta application-transaction id of one node's files in one partition."""
    return f"meshlens:{node}:{part[0]}T{part[1]}"


@dataclass(frozen=True, slots=True)
class LocalFile:
    seg: ParquetSegment
    key: str  # <table>/dt=/hr=/<name>
    size: int
    mtime: float


@dataclass(frozen=True, slots=True)
class CommittedFile:
    """A file of the table's current snapshot (path relative to the table root)."""

    seg: ParquetSegment
    path: str  # dt=/hr=/<name>
    size: int


@dataclass(frozen=True, slots=True)
class NodeState:
    """What the table holds of one node: its active files and its per-partition watermarks."""

    files: Mapping[str, CommittedFile] = field(default_factory=dict)  # by path
    watermarks: Mapping[Partition, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TableCommit:
    """One atomic commit: files to add (upload first), files to remove, watermarks to record."""

    adds: tuple[LocalFile, ...] = ()
    removes: tuple[CommittedFile, ...] = ()
    watermarks: Mapping[Partition, int] = field(default_factory=dict)
    waiting: int = 0  # finished files held back by the converted frontier (counted as pending)

    @property
    def empty(self) -> bool:
        return not self.adds and not self.removes


def table_path(seg: ParquetSegment) -> str:
    """A file's path inside its Delta table (the table root is `<prefix>/<table>`)."""
    return f"dt={seg.dt}/hr={seg.hr}/{seg.path.name}"


def expired(part: Partition, now: float, retention: float) -> bool:
    return retention > 0 and partition_end(*part) <= now - retention


def plan_commit(
    local: Iterable[LocalFile],
    state: NodeState,
    *,
    frontier: int | None,
    now: float,
    retention: float,
) -> TableCommit:
    """The commit that brings the table's view of this node up to its local files.

    `local` are this node's Parquet files of one table; `frontier` is the converted frontier
    (None: the store is not running, everything local is final)."""
    by_seg = {f.seg: f for f in local}
    adds: list[LocalFile] = []
    removes: dict[str, CommittedFile] = {}
    marks: dict[Partition, int] = {}
    waiting = 0
    active_by_part: dict[Partition, list[CommittedFile]] = {}
    for c in state.files.values():
        active_by_part.setdefault((c.seg.dt, c.seg.hr), []).append(c)

    for seg in sorted(visible(by_seg), key=lambda s: (s.dt, s.hr, s.hi, s.lo)):
        part = (seg.dt, seg.hr)
        if expired(part, now, retention):
            continue
        path = table_path(seg)
        if path in state.files:
            continue
        if frontier is not None and seg.hi >= frontier:
            waiting += 1
            continue
        active = active_by_part.get(part, [])
        if any(c.seg.covers(seg) for c in active):
            continue  # its rows are committed inside a larger file
        covered = [c for c in active if seg.covers(c.seg)]
        mark = state.watermarks.get(part, -1)
        if seg.hi <= mark and not covered:
            continue  # committed before and since removed (retention), or a replay
        adds.append(by_seg[seg])
        for c in covered:
            removes[c.path] = c
        if seg.hi > mark:
            marks[part] = max(marks.get(part, -1), seg.hi)

    for part, files in active_by_part.items():
        if expired(part, now, retention):
            for c in files:
                removes[c.path] = c
    return TableCommit(tuple(adds), tuple(removes.values()), marks, waiting)


def after_commit(state: NodeState, commit: TableCommit) -> NodeState:
    """The node's state once `commit` is in the table (the shipper's cache between listings)."""
    files = dict(state.files)
    for c in commit.removes:
        files.pop(c.path, None)
    for f in commit.adds:
        path = table_path(f.seg)
        files[path] = CommittedFile(f.seg, path, f.size)
    marks = dict(state.watermarks)
    for part, v in commit.watermarks.items():
        marks[part] = max(marks.get(part, -1), v)
    return NodeState(files, marks)
