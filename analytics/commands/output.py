"""Rendering rows for the terminal and for machines: table, csv, json (shared by the commands)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any, TextIO

from meshlens.analytics.sql import json_value


def cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    jv = json_value(v)
    return jv if isinstance(jv, str) else json.dumps(jv) if isinstance(jv, list | dict) else str(jv)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int = 60) -> str:
    """A plain aligned text table (numbers right-aligned), for humans."""
    texts = [[cell(v)[:max_width] for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in texts:
        for i, t in enumerate(row):
            widths[i] = max(widths[i], len(t))
    numeric = [
        bool(rows) and all(isinstance(r[i], int | float) or r[i] is None for r in rows)
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(list(columns)), line(["-" * w for w in widths])]
    out.extend(line(r) for r in texts)
    return "\n".join(out) + "\n"


def write_csv(out: TextIO, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow(["" if v is None else cell(v) for v in row])


def csv_text(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    write_csv(buf, columns, rows)
    return buf.getvalue()


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str, allow_nan=False) + "\n"
