"""Traffic stored already paired: `<data>/traffic/dt=YYYY-MM-DD/hr=HH/paired.parquet`.

Pairing the two reports of each request (analytics/pairing.py) is a join over every report of
the window; at 10M reports it took longer than everything else a query does. Reports of a time
stop arriving soon after it, so the collector's maintenance pairs each hour as far as it has
settled (`settled_until`: whole minutes, the hour still being written again each STEP) and
stores the result; readers take the stored part and pair only the rest (the last minutes, or
any hour whose inputs changed) with the SQL view.

Exactness:
- A paired row belongs to the hour of its `ts` (the server's time when paired). Both reports of
  one request are within MARGIN of each other, so [start, upto) is paired from the reports of
  [start - MARGIN, upto + MARGIN) and keeps the rows inside; the live part does the same for
  its own ranges. A request crossing a boundary is paired once, on one side.
- A stored hour is used only while it is current: its footer records `upto` and a digest of
  the pairing rules (pairing.PAIRING_VERSION) and of the names of the visible requests files
  (of the hour and its neighbours) with reports in the widened range, by their footer
  statistics. A late file there, a compaction or a rule change makes the digest differ, and
  readers pair that hour live until maintenance stores it again.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from meshlens.analytics.duck_sql import sql_string, ts_literal
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
_UPTO_KEY: Final = b"meshlens.paired_upto"
# The hour still being written is stored up to a whole minute `settle` + MARGIN ago, and again
# once that point moved on by STEP.
STEP: Final = timedelta(minutes=1)
_ROW_GROUP: Final = 256 * 1024
# Rows of a stored hour: by minute, then grouped by source, destination and response code
# (then time). Rows of one edge sit together, which the graph's group-by and the column
# encodings both reward (an hour of 10M reports: the graph's query 0.53-0.57 -> 0.43-0.44 s,
# the file 127 -> 110 MB, for 3-4 s more CPU when maintenance stores the hour), while minutes
# stay in order, so row-group time statistics prune a window as well as strict time order did.
# More columns here (namespaces, protocol, grpc status, flags) cost twice that CPU, gain nothing.
STORED_ORDER: Final = (
    "source_workload",
    "destination_service",
    "destination_workload",
    "response_code",
)
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


# Each requests file's time range from its footer statistics, by (path, mtime, size): a file
# never changes once visible, and every reader checks its stored hours on every connect.
_RANGES: dict[tuple[str, int, int], tuple[datetime, datetime] | None] = {}


def ts_range(seg: ParquetSegment) -> tuple[datetime, datetime] | None:
    """[min, max] of the file's `ts` (None: unknown, taken as overlapping everything)."""
    try:
        st = seg.path.stat()
    except FileNotFoundError:
        return None
    key = (str(seg.path), st.st_mtime_ns, st.st_size)
    if key in _RANGES:
        return _RANGES[key]
    rng: tuple[datetime, datetime] | None = None
    try:
        md = pq.read_metadata(seg.path)
        idx = md.schema.to_arrow_schema().get_field_index("ts")
        lows: list[datetime] = []
        highs: list[datetime] = []
        for i in range(md.num_row_groups):
            stats = md.row_group(i).column(idx).statistics
            if idx < 0 or stats is None or not stats.has_min_max:
                lows = []
                break
            lows.append(_aware(stats.min))
            highs.append(_aware(stats.max))
        if lows:
            rng = (min(lows), max(highs))
    except (OSError, pa.ArrowInvalid, TypeError):
        rng = None
    if len(_RANGES) > 100_000:
        _RANGES.clear()
    _RANGES[key] = rng
    return rng


def _aware(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"not a time: {value!r}")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _overlaps(seg: ParquetSegment, lo: datetime, hi: datetime) -> bool:
    rng = ts_range(seg)
    return rng is None or (rng[0] < hi and rng[1] >= lo)


def inputs_digest(
    files: dict[datetime, list[ParquetSegment]], hour: datetime, upto: datetime
) -> str:
    """What stored rows of [hour, upto) depend on: the pairing rules, `upto`, and the visible
    requests files (of the hour and its neighbours) holding reports of [hour, upto) widened
    by MARGIN. A file arriving later with reports of that range changes it."""
    lo, hi = hour - MARGIN, upto + MARGIN
    names = sorted(
        f"{s.dt}/{s.hr}/{s.path.name}"
        for h in (hour - HOUR, hour, hour + HOUR)
        for s in files.get(h, ())
        if _overlaps(s, lo, hi)
    )
    text = "\n".join([PAIRING_VERSION, upto.astimezone(UTC).isoformat(), *names])
    return hashlib.sha256(text.encode()).hexdigest()


def paired_path(data_dir: Path, hour: datetime) -> Path:
    return partition_dir(data_dir, PAIRED_TABLE, hour) / PAIRED_FILE


def stored_state(path: Path) -> tuple[str, datetime] | None:
    """The digest and end (`upto`) in a stored hour's footer; None when missing or unreadable."""
    try:
        meta = pq.read_metadata(path).metadata or {}
        digest, upto = meta[_DIGEST_KEY].decode(), meta[_UPTO_KEY].decode()
        return digest, datetime.fromisoformat(upto)
    except (OSError, pa.ArrowInvalid, KeyError, ValueError):
        return None


def stored_upto(
    data_dir: Path, files: dict[datetime, list[ParquetSegment]], hour: datetime
) -> datetime | None:
    """How far the hour's stored pairing reaches while it matches today's inputs and rules
    (the hour's end when complete); None when there is none or it is stale."""
    path = paired_path(data_dir, hour)
    if not path.exists():
        return None
    state = stored_state(path)
    if state is None:
        return None
    digest, upto = state
    if not hour < upto <= hour + HOUR or digest != inputs_digest(files, hour, upto):
        return None
    return upto


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


def pair_index(paths: list[Path], lo: datetime, hi: datetime, memory_limit: str) -> pa.Table:
    """(di, si) for the reports in `paths` with ts in [lo, hi); rows are numbered across the
    files in order (file offset + row number in its file), so a column read file by file and
    concatenated is indexed by them."""
    offsets, total = [], 0
    for p in paths:
        offsets.append(total)
        total += pq.read_metadata(p).num_rows
    listing = ", ".join(sql_string(str(p)) for p in paths)
    starts = ", ".join(f"({sql_string(str(p))}, {o})" for p, o in zip(paths, offsets, strict=True))
    with duckdb.connect(":memory:") as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute(f"SET memory_limit = {sql_string(memory_limit)}")
        conn.execute("SET enable_progress_bar = false")
        conn.execute(f"""CREATE VIEW src AS
            SELECT r.* EXCLUDE (filename, file_row_number), o.start + r.file_row_number AS _i
            FROM read_parquet([{listing}], filename = true, file_row_number = true,
                              union_by_name = true, hive_partitioning = false) r
            JOIN (VALUES {starts}) o(name, start) ON r.filename = o.name
            WHERE r.ts >= {ts_literal(lo)} AND r.ts < {ts_literal(hi)}""")
        return conn.sql(pair_index_sql("src")).to_arrow_table()


def pair_hour(
    files: dict[datetime, list[ParquetSegment]],
    hour: datetime,
    memory_limit: str = "1GB",
    upto: datetime | None = None,
) -> pa.Table:
    """The paired rows of [hour, upto) (default: the whole hour), by minute, STORED_ORDER, then
    time (pure apart from reading the hour's and its neighbours' files): DuckDB pairs the
    narrow key columns, polars gathers each column."""
    end = hour + HOUR if upto is None else upto
    import polars as pl

    from meshlens.analytics.pairing_frame import merge_pairs

    paths = [
        s.path
        for h in (hour - HOUR, hour, hour + HOUR)
        for s in files.get(h, ())
        if _overlaps(s, hour - MARGIN, end + MARGIN)
    ]
    if not paths:
        return PAIRED_SCHEMA.empty_table()
    index = pl.from_arrow(pair_index(paths, hour - MARGIN, end + MARGIN, memory_limit))
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
    idx = idx.filter((pl.col("ts") >= hour) & (pl.col("ts") < end))
    idx = _in_stored_order(idx, lambda name: _read_column(paths, name))
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


def _in_stored_order(idx: pl.DataFrame, column_of: Callable[[str], pl.Series]) -> pl.DataFrame:
    """The pair index (di, si, ts) reordered by minute, STORED_ORDER, then time: sorting the
    index, with only the order's columns merged, costs far less memory than sorting the paired
    rows."""
    import polars as pl

    from meshlens.analytics.pairing_frame import PairIndex, merged_column

    ix = PairIndex.of(idx.get_column("di"), idx.get_column("si"))
    keys = [merged_column(n, column_of(n), ix) for n in STORED_ORDER]
    # Categories by their codes: rows of an edge only need to be together, not in text order.
    keys = [k.to_physical() if isinstance(k.dtype, pl.Categorical) else k for k in keys]
    minute = idx.get_column("ts").dt.truncate("1m").alias("_minute")
    order = (
        pl.DataFrame([minute, *keys, idx.get_column("ts")])
        .with_row_index("_row")
        .sort([minute.name, *(k.name for k in keys), "ts"], maintain_order=True)
        .get_column("_row")
    )
    return idx[order]


def store_hour(
    data_dir: Path,
    files: dict[datetime, list[ParquetSegment]],
    hour: datetime,
    upto: datetime | None = None,
) -> Path:
    """Pair [hour, upto) (default: the whole hour) and store it atomically with the digest of
    its inputs, replacing what was stored for the hour."""
    end = hour + HOUR if upto is None else upto
    table = pair_hour(files, hour, upto=end)
    digest = inputs_digest(files, hour, end)
    meta = {_DIGEST_KEY: digest.encode(), _UPTO_KEY: end.astimezone(UTC).isoformat().encode()}
    table = table.replace_schema_metadata(meta)
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


def settled_until(hour: datetime, now: float, settle: float) -> datetime | None:
    """How far `hour` can be stored at `now`: every report of a time more than `settle` (plus
    MARGIN, for its partner) ago has arrived. Whole minutes; None when not a minute yet."""
    cut = datetime.fromtimestamp(now - settle, UTC) - MARGIN
    upto = min(hour + HOUR, cut.replace(second=0, microsecond=0))
    return upto if upto > hour else None


def store_settled_hours(
    data_dir: Path, now: float, *, settle: float, in_child: bool = False
) -> int:
    """Store every hour as far as it has settled (`settled_until`) where what is stored is
    missing, stale or behind by STEP (one maintenance pass); remove stored hours that have no
    requests left. Returns how many hours were stored. `in_child`: pair in a spawned child
    process (what `meshlens serve` does): pairing an hour of 10M reports peaks at ~2.5 GB,
    and a child returns that memory to the system when it exits instead of leaving it in the
    collector's heap."""
    files = request_files(data_dir)
    due = []
    for hour in sorted(files):
        target = settled_until(hour, now, settle)
        if target is None:
            continue
        have = stored_upto(data_dir, files, hour)
        # Current and complete, or the hour still being written has not moved on by STEP.
        if have is not None and (have >= target or (target < hour + HOUR and target - have < STEP)):
            continue
        due.append((hour, target))
    stored = 0
    pool = _child_pool() if in_child and due else None
    try:
        for hour, upto in due:
            try:
                if pool is not None:
                    pool.submit(store_hour, data_dir, files, hour, upto).result()
                else:
                    store_hour(data_dir, files, hour, upto)
            except Exception:  # pyarrow, polars, DuckDB and OS errors alike
                # One unreadable hour must not stop the others: readers pair it live meanwhile.
                log.exception("could not store the paired traffic of %s", hour.isoformat())
                continue
            stored += 1
            log.info("stored the paired traffic of %s up to %s", hour.isoformat(), upto.isoformat())
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
    """Split the window (None: all time) into stored ranges and live ranges."""
    files = request_files(data_dir)
    if window is None:
        candidates = sorted(files)
    else:
        # Hours with files that intersect the window (never a walk over the window's hours:
        # "all time" is millions of them).
        candidates = sorted(h for h in files if h + HOUR > window.start and h < window.end)
    start = window.start if window is not None else None
    end = window.end if window is not None else None
    stored: list[tuple[datetime, datetime]] = []
    full: list[Path] = []
    partial: list[Path] = []
    for hour in candidates:
        upto = stored_upto(data_dir, files, hour)
        if upto is None:
            continue
        stored.append((hour, upto))
        inside = window is None or (window.start <= hour and upto <= window.end)
        (full if inside else partial).append(paired_path(data_dir, hour))
    # The live ranges: the window minus the stored ranges.
    live: list[tuple[datetime | None, datetime | None]] = []
    cursor = start
    first = True
    for lo_s, hi_s in stored:
        lo = lo_s if start is None else max(lo_s, start)
        if (first and cursor is None) or (cursor is not None and cursor < lo):
            live.append((cursor, lo))
        first = False
        cursor = hi_s if end is None else min(hi_s, end)
    if not stored:
        live.append((start, end))
    elif end is None or (cursor is not None and cursor < end):
        live.append((cursor, end))
    return PairedPlan(tuple(full), tuple(partial), tuple(live))


def remove_all(data_dir: Path) -> None:
    """Drop every stored hour (readers then pair everything live)."""
    for path in (data_dir / PAIRED_TABLE).glob(f"dt=*/hr=*/{PAIRED_FILE}"):
        os.unlink(path)
