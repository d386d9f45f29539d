"""Where the store keeps things on disk, and which Parquet files a reader should see.

    <data>/wal/<node>_<seq>.wal                               write-ahead log segments
    <data>/<table>/dt=YYYY-MM-DD/hr=HH/<node>_<lo>_<hi>.parquet   Parquet segments

A Parquet file covers the WAL sequence numbers lo..hi of one writer `node`. A segment converted
from WAL segment `seq` is `<node>_<seq>_<seq>.parquet`, so replaying that segment after a crash
rewrites the same file (no duplicates). Compaction writes one file covering a range and deletes
the inputs later; until then readers drop every file whose range lies inside another file's
range of the same node and partition (`visible_files`). Sequence numbers are fixed-width so
names sort in order. Writers that are not the WAL (the importer, the gate) use their own node
name and a time-based sequence number.

Pure except for `visible_files`, `partitions`, and `list_table_files`, which only list directories.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

SEQ_WIDTH: Final = 16
WAL_DIR: Final = "wal"
# Writers that are not a WAL and number their files with wall-clock microseconds.
GATE_NODE: Final = "gate"
# Derived data the analytics maintenance writes beside the tables (analytics/paired_store.py):
# hours of requests stored already paired. Retention expires it with the tables.
PAIRED_TABLE: Final = "traffic"
IMPORT_NODE_PREFIX: Final = "import-"
_NODE_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_FILE_RE: Final = re.compile(
    r"^(?P<node>[a-z0-9][a-z0-9-]*)_(?P<lo>\d{16})_(?P<hi>\d{16})\.parquet$"
)
_PART_RE: Final = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")
_HOUR_RE: Final = re.compile(r"^hr=(\d{2})$")


def check_node(node: str) -> str:
    """Validate a writer name (lowercase letters, digits, '-'); returns it."""
    if not _NODE_RE.match(node):
        raise ValueError(f"invalid store node name {node!r}: use [a-z0-9-], at most 63 characters")
    return node


@dataclass(frozen=True, slots=True)
class ParquetSegment:
    """A Parquet file of the store, parsed from its path."""

    path: Path
    table: str
    dt: str
    hr: str
    node: str
    lo: int
    hi: int

    def covers(self, other: ParquetSegment) -> bool:
        """True when this file's range contains `other`'s (same node), and is not the same file."""
        return (
            self.node == other.node
            and self.lo <= other.lo
            and other.hi <= self.hi
            and (self.lo, self.hi) != (other.lo, other.hi)
        )


def is_time_numbered(node: str) -> bool:
    """A writer whose numbers are wall-clock µs, not WAL segments (the gate, the importer)."""
    return node == GATE_NODE or node.startswith(IMPORT_NODE_PREFIX)


def _day(when: datetime) -> str:
    # Zero-padded by hand: strftime's %Y gives "5", not "0005", for year 5 on glibc, and such
    # a directory would be invisible to readers, compaction and retention.
    return f"{when.year:04d}-{when.month:02d}-{when.day:02d}"


def wal_dir(data_dir: Path) -> Path:
    return data_dir / WAL_DIR


def wal_segment_path(data_dir: Path, node: str, seq: int) -> Path:
    return wal_dir(data_dir) / f"{node}_{seq:0{SEQ_WIDTH}d}.wal"


def parse_wal_segment_name(name: str) -> tuple[str, int] | None:
    """('node', seq) for a WAL segment file name, or None."""
    m = re.match(r"^([a-z0-9][a-z0-9-]*)_(\d{16})\.wal$", name)
    return (m.group(1), int(m.group(2))) if m else None


def partition_dir(data_dir: Path, table: str, when: datetime) -> Path:
    when = when.astimezone(UTC)
    return data_dir / table / f"dt={_day(when)}" / f"hr={when:%H}"


def partition_key(when: datetime) -> tuple[str, str]:
    when = when.astimezone(UTC)
    return _day(when), f"{when:%H}"


def segment_file_name(node: str, lo: int, hi: int | None = None) -> str:
    hi = lo if hi is None else hi
    if hi < lo:
        raise ValueError(f"segment range {lo}..{hi} is empty")
    return f"{node}_{lo:0{SEQ_WIDTH}d}_{hi:0{SEQ_WIDTH}d}.parquet"


def parse_segment_file(path: Path, table: str) -> ParquetSegment | None:
    m = _FILE_RE.match(path.name)
    dm = _PART_RE.match(path.parent.parent.name)
    hm = _HOUR_RE.match(path.parent.name)
    if not (m and dm and hm):
        return None
    return ParquetSegment(
        path,
        table,
        dm.group(1),
        hm.group(1),
        m.group("node"),
        int(m.group("lo")),
        int(m.group("hi")),
    )


def partitions(data_dir: Path, table: str) -> Iterator[tuple[str, str, Path]]:
    """(dt, hr, dir) for every partition directory of `table`, oldest first."""
    root = data_dir / table
    if not root.is_dir():
        return
    for d in sorted(root.iterdir()):
        dm = _PART_RE.match(d.name)
        if not dm or not d.is_dir():
            continue
        for h in sorted(d.iterdir()):
            hm = _HOUR_RE.match(h.name)
            if hm and h.is_dir():
                yield dm.group(1), hm.group(1), h


def list_table_files(data_dir: Path, table: str) -> list[ParquetSegment]:
    """Every well-named Parquet file of `table` (temporary files are ignored)."""
    out: list[ParquetSegment] = []
    for _dt, _hr, d in partitions(data_dir, table):
        try:
            names = os.listdir(d)
        except FileNotFoundError:  # removed by retention while listing
            continue
        for name in sorted(names):
            seg = parse_segment_file(d / name, table)
            if seg is not None:
                out.append(seg)
    return out


def visible(files: Iterable[ParquetSegment]) -> list[ParquetSegment]:
    """Drop files whose rows are also in a covering (compacted) file of the same partition."""
    by_part: dict[tuple[str, str, str], list[ParquetSegment]] = {}
    for f in files:
        by_part.setdefault((f.dt, f.hr, f.node), []).append(f)
    out: list[ParquetSegment] = []
    for group in by_part.values():
        out.extend(f for f in group if not any(g.covers(f) for g in group))
    return sorted(out, key=lambda f: (f.dt, f.hr, f.node, f.lo))


def visible_files(
    data_dir: Path, table: str, start: datetime | None = None, end: datetime | None = None
) -> list[Path]:
    """The Parquet files a reader should scan for `table`, optionally pruned to [start, end)."""
    files = visible(list_table_files(data_dir, table))
    if start is not None or end is not None:
        lo = partition_key(start) if start is not None else ("0000-00-00", "00")
        hi = partition_key(end) if end is not None else ("9999-99-99", "99")
        files = [f for f in files if lo <= (f.dt, f.hr) <= hi]
    return [f.path for f in files]
