"""`meshlens sql "SELECT ..."`: one read-only query over the store.

Exit codes: 0 ok (a truncated result says so on stderr), 1 the query failed or timed out,
2 the sandbox rejected it or an argument is invalid.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TextIO

import pyarrow.parquet as pq

from meshlens.analytics.commands.output import format_table, json_text, write_csv
from meshlens.analytics.errors import AnalyticsError, QueryRejected
from meshlens.analytics.sql import (
    DEFAULT_MAX_ROWS,
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_TIMEOUT_S,
    QueryResult,
    run_query,
)
from meshlens.analytics.window import TimeWindow, parse_time, window_from_args
from meshlens.settings import Setting, add_settings, parse_duration

FORMATS: Final = ("table", "csv", "json", "parquet")

SQL_SETTINGS: Final = (
    Setting("format", "table", "output format", str, FORMATS),
    Setting(
        "max_rows", DEFAULT_MAX_ROWS, "return at most this many rows (truncated is reported)", int
    ),
    Setting("timeout", DEFAULT_TIMEOUT_S, "interrupt the query after this long", parse_duration),
    Setting("memory_limit", DEFAULT_MEMORY_LIMIT, "DuckDB memory limit for the query", str),
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "query",
        help="one SELECT over requests, spans, metrics, logs, verdicts, traffic, edges, signals",
    )
    add_settings(parser, SQL_SETTINGS)
    parser.add_argument(
        "--output",
        "-o",
        default=None,
        help="write to this file instead of stdout (parquet: required for a tty)",
    )
    g = parser.add_argument_group("time window (optional: default is all data)")
    g.add_argument("--since", default=None, help="only rows of the last SINCE (e.g. 15m)")
    g.add_argument("--from", dest="from_", default=None, help="only rows from this time")
    g.add_argument("--to", default=None, help="only rows before this time")


def _window(args: argparse.Namespace) -> TimeWindow | None:
    """No window flag: all data. Only --from: from then on. Otherwise as every other command."""
    if args.since is None and args.from_ is None and args.to is None:
        return None
    if args.from_ is not None and args.to is None and args.since is None:
        return TimeWindow(parse_time(args.from_), datetime(9999, 12, 31, tzinfo=UTC))
    return window_from_args(args)


def _write_text(out: TextIO, fmt: str, result: QueryResult) -> None:
    if fmt == "json":
        out.write(json_text(result.records()))
    elif fmt == "csv":
        write_csv(out, result.columns, result.rows)
    else:
        out.write(format_table(result.columns, result.rows))


def run(args: argparse.Namespace) -> int:
    try:
        window = _window(args)
        result = run_query(
            Path(args.data_dir),
            args.query,
            max_rows=args.max_rows,
            timeout_s=args.timeout,
            window=window,
            memory_limit=args.memory_limit,
        )
    except QueryRejected as exc:
        print(f"meshlens sql: {exc}", file=sys.stderr)
        return 2
    except AnalyticsError as exc:
        print(f"meshlens sql: {exc}", file=sys.stderr)
        return 1
    if args.format == "parquet":
        assert result.arrow is not None
        if args.output:
            pq.write_table(result.arrow, args.output)
        elif sys.stdout.isatty():
            print(
                "meshlens sql: refusing to write Parquet to a terminal; use --output FILE",
                file=sys.stderr,
            )
            return 2
        else:
            sys.stdout.flush()
            pq.write_table(result.arrow, sys.stdout.buffer)
            sys.stdout.buffer.flush()
    elif args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as out:
            _write_text(out, args.format, result)
    else:
        _write_text(sys.stdout, args.format, result)
    if result.truncated:
        print(
            f"meshlens sql: result truncated to {args.max_rows} rows (--max-rows)", file=sys.stderr
        )
    return 0
