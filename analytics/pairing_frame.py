"""Pairing's merge rules (analytics/pairing.py) executed column by column on polars Series.

The stored paired hours (analytics/paired_store.py) are built in two steps: DuckDB finds who
pairs with whom from the narrow key columns (`pairing.pair_index_sql`: one (di, si) row per
paired row), then each column is gathered from the server's and the client's report and merged
here by `pairing.merge_rule`. Only one input column is in memory at a time besides the index
and the output. Pure: no I/O. Held equal to the SQL view by tests/analytics/test_paired_store.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from meshlens.analytics.pairing import (
    CLIENT_DURATION_COLUMN,
    COLUMNS,
    KEY,
    PAIRED_COLUMN,
    SERVER_KNOWN_FIRST,
    SERVER_SIDE,
    SOURCE_FIRST,
    UNKNOWN_VALUES,
    merge_rule,
)

_D, _S, _DP = pl.col("d"), pl.col("s"), pl.col("d_present")


def _known(first: pl.Expr, second: pl.Expr) -> pl.Expr:
    """`first` where it is known (not NULL, '' or 'unknown'), else coalesce(second, first)."""
    known = first.is_not_null() & ~first.is_in(list(UNKNOWN_VALUES))
    return pl.when(known).then(first).otherwise(pl.coalesce(second, first))


def merge_expr(column: str) -> pl.Expr:
    """The paired value of `column` over a frame of d (the server's value), s (the client's)
    and d_present (the server side has a report)."""
    rule = merge_rule(column)
    if rule == KEY:
        return pl.coalesce(_D, _S)
    if rule == SOURCE_FIRST:
        return _known(_S, _D)
    if rule == SERVER_KNOWN_FIRST:
        return _known(_D, _S)
    return pl.when(_DP).then(_D).otherwise(_S)


@dataclass(frozen=True, slots=True)
class PairIndex:
    """The pair index (di: the server's row, si: the client's; either may be null) and what
    every column's merge derives from it, computed once."""

    di: pl.Series
    si: pl.Series
    either: pl.Series  # the server's row when there is one, else the client's
    d_present: pl.Series

    @classmethod
    def of(cls, di: pl.Series, si: pl.Series) -> PairIndex:
        return cls(di, si, pl.select(pl.coalesce(di, si)).to_series(), di.is_not_null())


def merged_column(name: str, col: pl.Series, ix: PairIndex) -> pl.Series:
    """The paired values of one input column `col` for the pair index `ix`."""
    if merge_rule(name) in (KEY, SERVER_SIDE):
        # Equal on both sides, or the server's when there is one: one gather.
        return col.gather(ix.either).alias(name)
    frame = pl.DataFrame(
        {"d": col.gather(ix.di), "s": col.gather(ix.si), "d_present": ix.d_present}
    )
    return frame.select(merge_expr(name).alias(name)).to_series()


def merge_pairs(
    column_of: Callable[[str], pl.Series], di: pl.Series, si: pl.Series
) -> pl.DataFrame:
    """The paired rows for the pair index (di, si) over rows whose columns `column_of` gives
    (each call returns one whole input column, rows numbered as in the index). Columns come
    out in the requests schema's order, then `paired` and `client_duration_ms`."""
    ix = PairIndex.of(di, si)
    d_present = ix.d_present
    out: dict[str, pl.Series] = {}
    for name in COLUMNS:
        col = column_of(name)
        out[name] = merged_column(name, col, ix)
        if name == "duration_ms":
            out[CLIENT_DURATION_COLUMN] = col.gather(si).alias(CLIENT_DURATION_COLUMN)
    out[PAIRED_COLUMN] = (d_present & si.is_not_null()).alias(PAIRED_COLUMN)
    ordered = [*COLUMNS, PAIRED_COLUMN, CLIENT_DURATION_COLUMN]
    return pl.DataFrame([out[n] for n in ordered])
