"""Turn one closed WAL segment into Parquet files (runs in a worker process or a thread).

`convert_segment` is a plain module-level function of plain arguments so a
`ProcessPoolExecutor` can run it: it reads the segment, decodes record by record (a record that
fails to decode is counted, logged and kept in `<data>/deadletter/<node>_<seq>.wal` in WAL
framing for a later replay; the rest of the segment is kept), and writes one file per table and
hour partition named `<node>_<seq>_<seq>.parquet` with `write_table`. The same segment always
gives the same files, so converting it again after a crash changes nothing. A decoder that cannot
be imported fails the whole conversion (retried later; the WAL segment stays). Deleting the WAL
segment is the caller's job, after this returns.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from meshlens.collector.decode import limits, registry
from meshlens.collector.store import wal
from meshlens.collector.store.layout import list_table_files, wal_segment_path
from meshlens.collector.store.parquet_write import conform, parquet_options, write_table
from meshlens.collector.store.records import Record, RecordKind
from meshlens.collector.store.schema import TABLES
from meshlens.durable_file import fsync_dir, make_dirs, write_atomic

log = logging.getLogger(__name__)

MAX_ERROR_SAMPLES = 5
DEAD_LETTER_DIR = "deadletter"

Decoder = Callable[[Record], dict[str, pa.Table]]


@dataclass(frozen=True, slots=True)
class ConvertResult:
    seq: int
    records: int
    rows: dict[str, int]
    decode_errors: int
    error_samples: tuple[str, ...]
    files: tuple[str, ...]
    seconds: float
    wal_problem: str | None = None
    # What the decode limits changed (collector/decode/limits.py): attributes_dropped,
    # timestamps_clamped, rows_too_old.
    limited: dict[str, int] = field(default_factory=dict)


def load_decoder(kind: RecordKind, overrides: Mapping[int, str]) -> Decoder:
    """The decoder for `kind`: an override "module:function" when given, else the registry's."""
    spec = overrides.get(int(kind))
    if spec is None:
        return registry.decoder_for(kind)
    module, _, name = spec.partition(":")
    fn: Decoder = getattr(importlib.import_module(module), name)
    return fn


def warm_up(overrides: Mapping[int, str]) -> int:
    """Import every decoder and run each stage once on tiny input (in a fresh worker), so the
    first real segment does not pay for imports and kernel set-up."""
    loaded = 0
    for kind in RecordKind:
        try:
            fn = load_decoder(kind, overrides)
            loaded += 1
        except Exception as exc:  # a missing decoder fails later, per record, with its reason
            log.debug("decoder for %s not loaded: %s", kind.name, exc)
            continue
        try:
            fn(Record(kind, 0, b""))
        except Exception:  # empty input may be invalid; only the warm-up matters
            pass
    sample = conform("spans", pa.table({}))
    pq.write_table(sample, pa.BufferOutputStream(), **parquet_options("spans"))
    return loaded


class DecoderUnavailable(RuntimeError):
    """A decoder could not be imported: a systemic fault, so the segment is kept and retried
    rather than every record being dead-lettered."""


# Records of a two-step kind whose Arrow tables are built at once: enough to amortise the
# per-column cost, few enough that their Python row values stay small (worker memory).
BATCH_RECORDS = 64

Part = tuple[int, bytes, Record, object]  # (index, body, record, the decoder's first step)


class _Decoding:
    """State of `decode_all`: decoders by kind, pending two-step parts, outputs, failures."""

    def __init__(self, overrides: Mapping[int, str]) -> None:
        self.overrides = overrides
        self.decoders: dict[RecordKind, Decoder] = {}
        self.batch: dict[RecordKind, tuple[Callable[[Record], object], Callable[..., Any]]] = {}
        self.no_batch: set[RecordKind] = set()
        self.parts: dict[str, list[pa.Table]] = {}
        self.failed: list[bytes] = []
        self.samples: list[str] = []
        self.pending: list[Part] = []
        self.pending_kind: RecordKind | None = None

    def decoder(self, kind: RecordKind) -> Decoder:
        fn = self.decoders.get(kind)
        if fn is None:
            try:
                fn = self.decoders[kind] = load_decoder(kind, self.overrides)
            except Exception as exc:
                raise DecoderUnavailable(f"decoder for {kind.name}: {exc!r}") from exc
        return fn

    def two_step(
        self, kind: RecordKind
    ) -> tuple[Callable[[Record], object], Callable[..., Any]] | None:
        if kind in self.no_batch:
            return None
        steps = self.batch.get(kind)
        if steps is None:
            names = registry.BATCH_DECODERS.get(kind)
            if names is None or int(kind) in self.overrides:
                self.no_batch.add(kind)
                return None
            try:
                m1, _, f1 = names[0].partition(":")
                m2, _, f2 = names[1].partition(":")
                steps = (
                    getattr(importlib.import_module(m1), f1),
                    getattr(importlib.import_module(m2), f2),
                )
            except Exception as exc:
                raise DecoderUnavailable(f"batch decoder for {kind.name}: {exc!r}") from exc
            self.batch[kind] = steps
        return steps

    def add(self, tables: dict[str, pa.Table]) -> None:
        for table, data in tables.items():
            if data.num_rows:
                self.parts.setdefault(table, []).append(conform(table, data))

    def fail(self, i: int, body: bytes, what: str, exc: Exception) -> None:
        self.failed.append(body)
        if len(self.samples) < MAX_ERROR_SAMPLES:
            self.samples.append(f"record {i} ({what}): {type(exc).__name__}: {exc}")

    def flush(self) -> None:
        """Build the tables of the pending two-step records; if that fails, decode them one
        by one so only the bad record is dead-lettered."""
        pending, kind = self.pending, self.pending_kind
        self.pending, self.pending_kind = [], None
        if not pending or kind is None:
            return
        steps = self.batch[kind]
        try:
            self.add(steps[1]([p[3] for p in pending]))
            return
        except Exception:
            pass
        fn = self.decoder(kind)
        for i, body, record, _ in pending:
            try:
                self.add(fn(record))
            except Exception as exc:
                self.fail(i, body, kind.name, exc)


def decode_all(
    bodies: list[bytes], overrides: Mapping[int, str]
) -> tuple[dict[str, pa.Table], list[bytes], list[str]]:
    """Decode each record on its own (a bad one fails alone). Returns rows per table (in
    record order), the bodies that failed (for the dead-letter file), and a few error
    messages. Kinds with a two-step decoder (registry.BATCH_DECODERS) build their Arrow
    tables for up to BATCH_RECORDS consecutive records at once."""
    st = _Decoding(overrides)
    for i, body in enumerate(bodies):
        what = "record"
        try:
            record = Record.decode(body)
            what = record.kind.name
            steps = st.two_step(record.kind)
            if st.pending and (steps is None or record.kind != st.pending_kind):
                st.flush()  # keep the rows in record order
            if steps is None:
                st.add(st.decoder(record.kind)(record))
                continue
            part = steps[0](record)
            st.pending.append((i, body, record, part))
            st.pending_kind = record.kind
            if len(st.pending) >= BATCH_RECORDS:
                st.flush()
        except DecoderUnavailable:
            raise
        except Exception as exc:  # one bad record (or a decoder bug) must not lose the rest
            st.fail(i, body, what, exc)
    st.flush()
    return {t: pa.concat_tables(ts) for t, ts in st.parts.items()}, st.failed, st.samples


def dead_letter_path(data_dir: Path, node: str, seq: int) -> Path:
    return data_dir / DEAD_LETTER_DIR / wal_segment_path(data_dir, node, seq).name


def write_dead_letters(path: Path, bodies: list[bytes], *, fsync: bool = True) -> None:
    """The records that failed to decode, in WAL framing, so a fixed decoder can replay them.
    Same name for the same segment, so a replay after a crash rewrites it."""
    make_dirs(path.parent, fsync=fsync)
    payload = wal.MAGIC + b"".join(wal.frame(b) for b in bodies)
    write_atomic(path, payload, fsync=fsync, fsync_parent=fsync)


def dead_letter_segment(
    data_dir: Path, node: str, seq: int, path: Path, reason: str, *, fsync: bool = True
) -> Path:
    """Move a WAL segment that keeps failing to convert into the dead letters (same name and
    framing, so `Store.requeue_dead_letters` replays it), with `<name>.reason` saying why.

    Parquet files an earlier try left for `seq` are removed first: the replay converts the
    whole segment again under a new number, and their rows would otherwise be counted twice.
    A record dead-letter file of the same segment is replaced (the segment holds its records)."""
    for table in TABLES:
        for f in list_table_files(data_dir, table):
            if f.node == node and f.lo == seq and f.hi == seq:
                f.path.unlink(missing_ok=True)
                if fsync:
                    fsync_dir(f.path.parent)
    dest = dead_letter_path(data_dir, node, seq)
    make_dirs(dest.parent, fsync=fsync)
    note = dest.with_name(f"{dest.name}.reason")
    note.write_text(f"{reason}\n")
    os.replace(path, dest)
    if fsync:
        fsync_dir(dest.parent)
        fsync_dir(path.parent)
    return dest


def convert_segment(
    data_dir: str,
    node: str,
    seq: int,
    path: str,
    limit: int | None = None,
    overrides: Mapping[int, str] | None = None,
    fsync: bool = True,
) -> ConvertResult:
    """Read, decode and write one WAL segment; returns counts (the segment is left in place)."""
    t0 = time.monotonic()
    data = Path(path).read_bytes()
    if limit is not None:
        data = data[:limit]
    bodies, scanned = wal.read_frames(data)
    before = limits.counts()
    tables, failed, samples = decode_all(bodies, overrides or {})
    after = limits.counts()
    limited = {k: n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)}
    files: list[str] = []
    rows: dict[str, int] = {}
    if failed:
        dead = dead_letter_path(Path(data_dir), node, seq)
        write_dead_letters(dead, failed, fsync=fsync)
        files.append(str(dead))
    for table in sorted(tables):
        rows[table] = tables[table].num_rows
        written = write_table(Path(data_dir), table, tables[table], node, seq, fsync=fsync)
        files.extend(str(p) for p in written)
    return ConvertResult(
        seq=seq,
        records=len(bodies),
        rows=rows,
        decode_errors=len(failed),
        error_samples=tuple(samples),
        files=tuple(files),
        seconds=time.monotonic() - t0,
        wal_problem=scanned.problem,
        limited=limited,
    )
