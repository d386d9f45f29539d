"""Turn one closed WAL segment into Parquet files (runs in a worker process or a thread).

`convert_segment` is a plain module-level function of plain arguments so a
`ProcessPoolExecutor` can run it: it reads the segment, decodes record by record (a record that
fails to decode is counted, logged and skipped; the rest of the segment is kept), and writes one
file per table and hour partition named `<node>_<seq>_<seq>.parquet` with `write_table`. The
same segment always gives the same files, so converting it again after a crash changes nothing.
Deleting the WAL segment is the caller's job, after this returns.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from collector.decode import registry
from collector.store import wal
from collector.store.records import Record, RecordKind
from collector.store.writer import conform, write_table

log = logging.getLogger(__name__)

MAX_ERROR_SAMPLES = 5

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


def load_decoder(kind: RecordKind, overrides: Mapping[int, str]) -> Decoder:
    """The decoder for `kind`: an override "module:function" when given, else the registry's."""
    spec = overrides.get(int(kind))
    if spec is None:
        return registry.decoder_for(kind)
    module, _, name = spec.partition(":")
    fn: Decoder = getattr(importlib.import_module(module), name)
    return fn


def warm_up(overrides: Mapping[int, str]) -> int:
    """Import every decoder now (in a fresh worker) so the first segment does not pay for it."""
    loaded = 0
    for kind in RecordKind:
        try:
            load_decoder(kind, overrides)
            loaded += 1
        except Exception as exc:  # a missing decoder fails later, per record, with its reason
            log.debug("decoder for %s not loaded: %s", kind.name, exc)
    return loaded


def decode_all(
    records: list[Record], overrides: Mapping[int, str]
) -> tuple[dict[str, pa.Table], int, list[str]]:
    """Decode each record on its own; a failing record is skipped and counted."""
    parts: dict[str, list[pa.Table]] = {}
    errors = 0
    samples: list[str] = []
    decoders: dict[RecordKind, Decoder] = {}
    for i, record in enumerate(records):
        try:
            fn = decoders.get(record.kind)
            if fn is None:
                fn = decoders[record.kind] = load_decoder(record.kind, overrides)
            for table, data in fn(record).items():
                if data.num_rows:
                    parts.setdefault(table, []).append(conform(table, data))
        except Exception as exc:  # one bad record (or decoder bug) must not lose the segment
            errors += 1
            if len(samples) < MAX_ERROR_SAMPLES:
                samples.append(f"record {i} ({record.kind.name}): {type(exc).__name__}: {exc}")
    return {t: pa.concat_tables(ts) for t, ts in parts.items()}, errors, samples


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
    records, scanned = wal.read_records(Path(path), limit)
    tables, errors, samples = decode_all(records, overrides or {})
    files: list[str] = []
    rows: dict[str, int] = {}
    for table in sorted(tables):
        data = tables[table]
        rows[table] = data.num_rows
        files.extend(
            str(p) for p in write_table(Path(data_dir), table, data, node, seq, fsync=fsync)
        )
    return ConvertResult(
        seq=seq,
        records=len(records),
        rows=rows,
        decode_errors=errors,
        error_samples=tuple(samples),
        files=tuple(files),
        seconds=time.monotonic() - t0,
        wal_problem=scanned.problem,
    )
