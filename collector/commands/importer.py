"""`meshlens import accesslog FILE...`: Istio/Envoy access-log files into the `requests` table.

Text (Istio's default format, Envoy's default format) and JSON formats are detected per entry,
also a JSON format that Envoy prints over several lines (a JSON `accessLogFormat` under TEXT
encoding); `kubectl logs` output works as is (`--timestamps` and `--prefix` prefixes are
stripped from every line), `-` reads stdin, `.gz` files are decompressed. Every line that is not
imported is reported on stderr with its file, line number(s) and the reason (a run of lines
with the same reason as one report), and nothing else is lost. Rows are written straight to
Parquet (writer node `import-<random>`), in batches, so a huge file needs bounded memory.

    kubectl logs deploy/reviews-v1 -c istio-proxy --timestamps | meshlens import accesslog -
    meshlens import accesslog --proxy-pod reviews-v1-7f9c8d6b5-x2x4p --proxy-namespace default a.log
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from meshlens.collector.decode import identity
from meshlens.collector.decode.access_log_text import Rejected, parse_lines
from meshlens.collector.decode.request_rows import rows_to_table
from meshlens.collector.store.parquet_write import write_table
from meshlens.settings import Setting, add_settings, parse_bool

log = logging.getLogger(__name__)

IMPORT: Final = (
    Setting("progress", True, "show a progress bar on stderr (when it is a terminal)", parse_bool),
    Setting("proxy_pod", "", "pod whose istio-proxy wrote the log (names the reporting workload)"),
    Setting("proxy_namespace", "", "namespace of --proxy-pod"),
    Setting("batch_rows", 100_000, "rows per Parquet file written", int),
)


@dataclass(slots=True)
class ImportStats:
    lines: int = 0  # non-blank lines read
    rows: int = 0
    skipped: int = 0  # non-blank lines not imported, every one reported
    files_written: int = 0
    reports: int = 0  # reports made (a run of lines with one reason is one)


class _Reports:
    """Rejected entries -> report lines; a run with one reason is one report (kept as its
    first entry, last line and line count, so a huge file of other output needs no memory)."""

    def __init__(self, name: str, report: Callable[[str], None] | None, stats: ImportStats):
        self.name = name
        self.report = report
        self.stats = stats
        self.first: Rejected | None = None
        self.last = 0
        self.entries = 0
        self.lines = 0

    def add(self, rejected: Rejected) -> None:
        self.stats.skipped += rejected.lines
        if self.first is not None and self.first.reason != rejected.reason:
            self.flush()
        if self.first is None:
            self.first = rejected
        self.last = rejected.last
        self.entries += 1
        self.lines += rejected.lines

    def flush(self) -> None:
        first = self.first
        if first is None:
            return
        self.stats.reports += 1
        if self.report is not None:
            if self.entries == 1:
                where = first.where
            else:
                where = f"{first.first}-{self.last} ({self.lines} lines)"
            self.report(f"{self.name}:{where}: {first.reason}: {first.excerpt}")
        self.first = None
        self.entries = self.lines = 0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=["accesslog"], help="what to import")
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="access-log files ('-' = stdin; .gz allowed)"
    )
    add_settings(parser, IMPORT)


def _open(name: str) -> tuple[IO[bytes], int | None]:
    """(binary stream, size in bytes or None)."""
    if name == "-":
        return sys.stdin.buffer, None
    path = Path(name)
    if name.endswith(".gz"):
        # progress counts decompressed bytes, so no total for .gz
        return gzip.GzipFile(path, "rb"), None  # type: ignore[return-value]
    return path.open("rb"), path.stat().st_size


def _local_workload(pod: str, namespace: str) -> identity.Workload:
    if not pod and not namespace:
        return identity.UNKNOWN_WORKLOAD
    return identity.Workload(
        workload=identity.known(identity.workload_from_pod(pod) if pod else ""),
        namespace=identity.known(namespace),
        pod=identity.known(pod),
    )


class _Progress:
    """tqdm over bytes read (only when enabled; tqdm itself hides on non-terminals)."""

    def __init__(self, enabled: bool, total: int | None, desc: str) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                desc=desc,
                unit="B",
                unit_scale=True,
                file=sys.stderr,
                disable=None,
                leave=False,
            )

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def printing(self, report: Callable[[str], None] | None) -> Callable[[str], None] | None:
        """`report`, clearing the bar while it prints so the two do not garble each other."""
        if report is None or self.bar is None:
            return report

        def around(line: str) -> None:
            self.bar.clear()
            report(line)
            self.bar.refresh()

        return around


def _lines(stream: IO[bytes], progress: _Progress) -> Iterator[tuple[int, str]]:
    for lineno, data in enumerate(stream, start=1):
        progress.update(len(data))
        yield lineno, data.decode("utf-8", errors="replace")


def import_files(
    data_dir: Path,
    files: list[str],
    *,
    progress: bool = False,
    local: identity.Workload = identity.UNKNOWN_WORKLOAD,
    batch_rows: int = 100_000,
    node: str | None = None,
    report: Callable[[str], None] | None = None,
) -> ImportStats:
    """Parse and write; returns the counts. `report` gets one line per run of lines that
    were not imported ("<file>:<line>[-<line>]: <reason>: <excerpt>"); nothing else is
    printed besides the progress bar."""
    node = node or f"import-{secrets.token_hex(3)}"
    seq = time.time_ns() // 1000
    stats = ImportStats()
    rows: list[dict[str, Any]] = []
    node_id = f"file:{local.pod}.{local.namespace}" if local.pod != identity.UNKNOWN else ""

    def flush() -> None:
        nonlocal seq, rows
        if rows:
            written = write_table(data_dir, "requests", rows_to_table(rows), node=node, lo=seq)
            stats.files_written += len(written)
            seq += 1
            rows = []

    def counted(numbered: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
        for lineno, line in numbered:
            if line.strip():
                stats.lines += 1
            yield lineno, line

    for name in files:
        stream, size = _open(name)
        bar = _Progress(progress, size, os.path.basename(name) if name != "-" else "stdin")
        reports = _Reports(name if name != "-" else "stdin", bar.printing(report), stats)
        try:
            numbered = counted(_lines(stream, bar))
            for item in parse_lines(numbered, local=local, node_id=node_id, origin="file"):
                if isinstance(item, Rejected):
                    reports.add(item)
                    continue
                reports.flush()
                rows.append(item)
                stats.rows += 1
                if len(rows) >= batch_rows:
                    flush()
            reports.flush()
        finally:
            bar.close()
            if stream is not sys.stdin.buffer:
                stream.close()
    flush()
    return stats


def run(args: argparse.Namespace) -> int:
    missing = [f for f in args.files if f != "-" and not Path(f).is_file()]
    if missing:
        print(f"meshlens import: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.batch_rows < 1:
        print("meshlens import: --batch-rows must be at least 1", file=sys.stderr)
        return 2
    started = time.monotonic()

    def report(line: str) -> None:
        print(f"  skipped {line}", file=sys.stderr)

    stats = import_files(
        Path(args.data_dir),
        list(args.files),
        progress=bool(args.progress),
        local=_local_workload(args.proxy_pod, args.proxy_namespace),
        batch_rows=args.batch_rows,
        report=report,
    )
    took = time.monotonic() - started
    if stats.skipped:
        print(
            f"skipped {stats.skipped} of {stats.lines} lines that are not access-log entries "
            "(each reported above with its reason)",
            file=sys.stderr,
        )
    if stats.rows == 0:
        print(
            f"meshlens import: no access-log lines found in {stats.lines} lines of "
            f"{', '.join(args.files)} (expected Istio's or Envoy's text or JSON access-log "
            "format)",
            file=sys.stderr,
        )
        return 1
    print(
        f"imported {stats.rows} requests from {stats.lines} lines in {took:.1f}s "
        f"into {args.data_dir} ({stats.files_written} Parquet files)",
        file=sys.stderr,
    )
    return 0
