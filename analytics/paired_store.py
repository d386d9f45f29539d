"""Hours of traffic stored already paired: `<data>/traffic/dt=YYYY-MM-DD/hr=HH/paired.parquet`.

Pairing the two reports of each request (analytics/pairing.py) is a join over every report of
the window; at 10M reports it took longer than everything else a query does. Requests stop
arriving for an hour soon after it ends, so the collector's maintenance pairs each settled
hour once and stores the result; readers take the stored hours and pair only the rest (the
hours still being written, or any hour whose inputs changed) with the SQL view.

Exactness:
- A paired row belongs to the hour of its `ts` (the server's time when paired). Both reports of
  one request are within MARGIN of each other, so an hour is paired from the reports of
  [start - MARGIN, end + MARGIN) and keeps the rows inside the hour; the live part does the
  same for its own hours. A request crossing an hour boundary is paired once, on one side.
- A stored hour is used only while it is current: its footer records a digest of the pairing
  rules (pairing.PAIRING_VERSION) and of the names of the visible requests files of the hour
  and its two neighbours. A late file, a compaction or a rule change makes the digest differ,
  and readers pair that hour live until maintenance stores it again.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from meshlens.analytics.pairing import (
    CLIENT_DURATION_COLUMN,
    PAIRED_COLUMN,
    PAIRING_VERSION,
    pair_index_sql,
)
from meshlens.analytics.window import TimeWindow
from meshlens.child_process import init_child
from meshlens.collector.store.layout import (
    PAIRED_TABLE,
    ParquetSegment,
    list_table_files,
    partition_dir,
    visible,
)
from meshlens.collector.store.parquet_write import parquet_options
from meshlens.collector.store.schema import HIGH_CARDINALITY, REQUESTS
from meshlens.durable_file import make_dirs, write_atomic

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger(__name__)

PAIRED_FILE: Final = "paired.parquet"
# The most a request's two reports are apart in time (clock skew and latency included).
MARGIN: Final = timedelta(seconds=60)
HOUR: Final = timedelta(hours=1)
_DIGEST_KEY: Final = b"meshlens.paired_inputs"
_ROW_GROUP: Final = 256 * 1024
PAIRED_SCHEMA: Final = pa.schema(
    [
        *REQUESTS,
        pa.field(PAIRED_COLUMN, pa.bool_()),
        pa.field(CLIENT_DURATION_COLUMN, pa.float64()),
    ]
)


def _hour_of(seg: ParquetSegment) -> datetime:
    return datetime.fromisoformat(f"{seg.dt}T{seg.hr}:00:00+00:00")


def request_files(data_dir: Path) -> dict[datetime, list[ParquetSegment]]:
    """The visible requests files by hour."""
    out: dict[datetime, list[ParquetSegment]] = {}
    for seg in visible(list_table_files(data_dir, "requests")):
        try:
            out.setdefault(_hour_of(seg), []).append(seg)
        except ValueError:  # an impossible date: never stored paired, always paired live
            continue
    return out


def inputs_digest(files: dict[datetime, list[ParquetSegment]], hour: datetime) -> str:
    names = sorted(
        f"{s.dt}/{s.hr}/{s.path.name}"
        for h in (hour - HOUR, hour, hour + HOUR)
        for s in files.get(h, ())
    )
    return hashlib.sha256("\n".join([PAIRING_VERSION, *names]).encode()).hexdigest()


def paired_path(data_dir: Path, hour: datetime) -> Path:
    return partition_dir(data_dir, PAIRED_TABLE, hour) / PAIRED_FILE


def stored_digest(path: Path) -> str | None:
    """The digest in a stored hour's footer; None when it is missing or unreadable."""
    try:
        meta = pq.read_metadata(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    value = meta.get(_DIGEST_KEY)
    return value.decode() if value is not None else None


def current_hours(
    data_dir: Path, files: dict[datetime, list[ParquetSegment]], hours: Iterable[datetime]
) -> list[datetime]:
    """Those of `hours` whose stored pairing is there and matches today's inputs and rules."""
    out = []
    for hour in hours:
        path = paired_path(data_dir, hour)
        if path.exists() and stored_digest(path) == inputs_digest(files, hour):
            out.append(hour)
    return out


# ---- writing (the collector's maintenance) ------------------------------------------------------


# Repetitive text columns are gathered as categoricals (a 4-byte code each, not the string).
_CATEGORICAL: Final = frozenset(
    f.name
    for f in REQUESTS
    if pa.types.is_string(f.type) and f.name not in HIGH_CARDINALITY.get("requests", ())
)


def _read_column(paths: list[Path], name: str) -> pl.Series:
    """One column of the files, concatenated in order (polars keeps file and row order)."""
    import polars as pl  # only the maintenance writes: readers start without polars

    # Files written before a column existed lack it: read as NULLs, as the live view does.
    dtype = pl.Series(pa.array([], REQUESTS.field(name).type)).dtype
    frame = pl.scan_parquet(
        paths,
        hive_partitioning=False,
        schema={name: dtype},
        missing_columns="insert",
        extra_columns="ignore",
    ).select(name)
    if name in _CATEGORICAL:
        frame = frame.select(pl.col(name).cast(pl.Categorical))
    return frame.collect().to_series()


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def pair_index(paths: list[Path], lo: datetime, hi: datetime, memory_limit: str) -> pa.Table:
    """(di, si) for the reports in `paths` with ts in [lo, hi); rows are numbered across the
    files in order (file offset + row number in its file), so a column read file by file and
    concatenated is indexed by them."""
    offsets, total = [], 0
    for p in paths:
        offsets.append(total)
        total += pq.read_metadata(p).num_rows
    listing = ", ".join(_quote(str(p)) for p in paths)
    starts = ", ".join(f"({_quote(str(p))}, {o})" for p, o in zip(paths, offsets, strict=True))
    with duckdb.connect(":memory:") as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute(f"SET memory_limit = {_quote(memory_limit)}")
        conn.execute("SET enable_progress_bar = false")
        conn.execute(f"""CREATE VIEW src AS
            SELECT r.* EXCLUDE (filename, file_row_number), o.start + r.file_row_number AS _i
            FROM read_parquet([{listing}], filename = true, file_row_number = true,
                              union_by_name = true, hive_partitioning = false) r
            JOIN (VALUES {starts}) o(name, start) ON r.filename = o.name
            WHERE r.ts >= {_ts(lo)} AND r.ts < {_ts(hi)}""")
        return conn.sql(pair_index_sql("src")).to_arrow_table()


def _ts(when: datetime) -> str:
    return f"TIMESTAMPTZ '{when.astimezone(UTC).isoformat()}'"


def pair_hour(
    files: dict[datetime, list[ParquetSegment]], hour: datetime, memory_limit: str = "1GB"
) -> pa.Table:
    """The paired rows of `hour`, in time order (pure apart from reading the hour's and its
    neighbours' files): DuckDB pairs the narrow key columns, polars gathers each column."""
    import polars as pl

    from meshlens.analytics.pairing_frame import merge_pairs

    paths = [s.path for h in (hour - HOUR, hour, hour + HOUR) for s in files.get(h, ())]
    if not paths:
        return PAIRED_SCHEMA.empty_table()
    index = pl.from_arrow(pair_index(paths, hour - MARGIN, hour + HOUR + MARGIN, memory_limit))
    assert isinstance(index, pl.DataFrame)
    di, si = index.get_column("di"), index.get_column("si")
    del index
    # The paired row's time is the server's when there is one; keep the hour's rows, in order.
    ts_all = _read_column(paths, "ts")
    idx = pl.DataFrame({"di": di, "si": si}).with_columns(
        ts=pl.when(pl.col("di").is_not_null())
        .then(ts_all.gather(pl.Series(di)))
        .otherwise(ts_all.gather(pl.Series(si)))
    )
    del ts_all
    idx = idx.filter((pl.col("ts") >= hour) & (pl.col("ts") < hour + HOUR)).sort("ts")
    merged = merge_pairs(
        lambda name: _read_column(paths, name), idx.get_column("di"), idx.get_column("si")
    )
    table = merged.to_arrow()
    # Categorical columns stay dictionary-encoded (the writer stores them so anyway).
    return pa.Table.from_arrays(
        [
            col if pa.types.is_dictionary(col.type) else col.cast(field.type)
            for col, field in zip(table.columns, PAIRED_SCHEMA, strict=True)
        ],
        names=PAIRED_SCHEMA.names,
    )


def store_hour(data_dir: Path, files: dict[datetime, list[ParquetSegment]], hour: datetime) -> Path:
    """Pair `hour` and store it atomically with the digest of its inputs."""
    table = pair_hour(files, hour)
    digest = inputs_digest(files, hour)
    table = table.replace_schema_metadata({_DIGEST_KEY: digest.encode()})
    path = paired_path(data_dir, hour)
    make_dirs(path.parent, fsync=True)

    def write(tmp: Path) -> None:
        pq.write_table(table, tmp, row_group_size=_ROW_GROUP, **_write_options())

    write_atomic(path, write, fsync_parent=True)
    return path


def _write_options() -> dict[str, object]:
    """The requests table's writer options (dictionaries, encodings, statistics), plus the
    two columns pairing adds."""
    opts = parquet_options("requests")
    opts["column_encoding"] = {
        **opts["column_encoding"],
        CLIENT_DURATION_COLUMN: "BYTE_STREAM_SPLIT",
    }
    return opts


def _settled(
    files: dict[datetime, list[ParquetSegment]], hour: datetime, now: float, settle: float
) -> bool:
    """Whether no more reports are expected for `hour`: its next hour ended `settle` ago and
    no file of the three hours changed for `settle`."""
    if (hour + 2 * HOUR).timestamp() + settle > now:
        return False
    for h in (hour - HOUR, hour, hour + HOUR):
        for seg in files.get(h, ()):
            try:
                if seg.path.stat().st_mtime + settle > now:
                    return False
            except FileNotFoundError:
                return False
    return True


def store_settled_hours(
    data_dir: Path, now: float, *, settle: float, in_child: bool = False
) -> int:
    """Store every settled hour whose stored pairing is missing or stale (one maintenance
    pass); remove stored hours that have no requests left. Returns how many hours were
    stored. `in_child`: pair in a spawned child process (what `meshlens serve` does): pairing
    an hour of 10M reports peaks at ~2.5 GB, and a child returns that memory to the system
    when it exits instead of leaving it in the collector's heap."""
    files = request_files(data_dir)
    due = []
    for hour in sorted(files):
        if not _settled(files, hour, now, settle):
            continue
        path = paired_path(data_dir, hour)
        if path.exists() and stored_digest(path) == inputs_digest(files, hour):
            continue
        due.append(hour)
    stored = 0
    pool = _child_pool() if in_child and due else None
    try:
        for hour in due:
            try:
                if pool is not None:
                    pool.submit(store_hour, data_dir, files, hour).result()
                else:
                    store_hour(data_dir, files, hour)
            except Exception:  # pyarrow, polars, DuckDB and OS errors alike
                # One unreadable hour must not stop the others: readers pair it live meanwhile.
                log.exception("could not store the paired traffic of %s", hour.isoformat())
                continue
            stored += 1
            log.info("stored the paired traffic of %s", hour.isoformat())
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    _remove_orphans(data_dir, set(files))
    return stored


def _child_pool() -> ProcessPoolExecutor:
    """One spawned worker that dies with the collector and ignores its stop signals (the
    collector's other workers do the same: meshlens/child_process.py)."""
    return ProcessPoolExecutor(
        max_workers=1,
        mp_context=mp.get_context("spawn"),
        initializer=init_child,
        initargs=(os.getpid(),),
    )


def _remove_orphans(data_dir: Path, hours: set[datetime]) -> None:
    root = data_dir / PAIRED_TABLE
    if not root.is_dir():
        return
    for path in root.glob(f"dt=*/hr=*/{PAIRED_FILE}"):
        try:
            hour = datetime.fromisoformat(
                f"{path.parent.parent.name[3:]}T{path.parent.name[3:]}:00:00+00:00"
            )
        except ValueError:
            continue
        if hour not in hours:
            path.unlink(missing_ok=True)


# ---- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PairedPlan:
    """Where a window's traffic comes from: stored hours, and the time ranges paired live."""

    stored: tuple[Path, ...]
    stored_partial: tuple[Path, ...]  # stored hours only partly inside the window
    live: tuple[tuple[datetime | None, datetime | None], ...]


def plan(data_dir: Path, window: TimeWindow | None) -> PairedPlan:
    """Split the window (None: all time) into stored hours and live ranges."""
    files = request_files(data_dir)
    if window is None:
        candidates = sorted(files)
    else:
        # Hours with files that intersect the window (never a walk over the window's hours:
        # "all time" is millions of them).
        candidates = sorted(h for h in files if h + HOUR > window.start and h < window.end)
    stored_hours = set(current_hours(data_dir, files, candidates))
    full: list[Path] = []
    partial: list[Path] = []
    for hour in sorted(stored_hours):
        inside = window is None or (window.start <= hour and hour + HOUR <= window.end)
        (full if inside else partial).append(paired_path(data_dir, hour))
    if not stored_hours:
        whole = (window.start, window.end) if window is not None else (None, None)
        return PairedPlan((), (), (whole,))
    # The live ranges: the window minus the stored hours.
    start = window.start if window is not None else None
    end = window.end if window is not None else None
    live: list[tuple[datetime | None, datetime | None]] = []
    cursor = start
    for hour in sorted(stored_hours):
        lo = hour if start is None else max(hour, start)
        if cursor is None or cursor < lo:
            live.append((cursor, lo))
        cursor = hour + HOUR if end is None else min(hour + HOUR, end)
    if end is None or (cursor is not None and cursor < end):
        live.append((cursor, end))
    return PairedPlan(tuple(full), tuple(partial), tuple(live))


def remove_all(data_dir: Path) -> None:
    """Drop every stored hour (readers then pair everything live)."""
    for path in (data_dir / PAIRED_TABLE).glob(f"dt=*/hr=*/{PAIRED_FILE}"):
        os.unlink(path)
