"""Block length from the data: how long a time block (one observation of the block tests) is.

A fixed 10 s block judges a slow trickle over an hour well and a dense burst (hundreds of
requests per side within seconds) not at all: the burst fits in one or two blocks. The block
length here follows the span and the rate of the data in the window instead:

    block = snap_up(max(need / rate_of_the_sparser_side, span / MAX_BLOCKS,
                        min(10 s, span / 24)))

`need` is how many requests each side should have in a block for the block's statistic to mean
something: 20 for error counts, the median and the whole distribution, and enough for a tail
quantile to have a request above it in the pooled block (1 / (2 (1 - q)): 50 per side for
p99; ties at the quantile count half, sequential.exceedance_blocks). `span` is
the time from the first to the last request of either side. Lengths snap up to a fixed ladder
(0.1 s .. 10 min), so successive looks at a growing window reuse a handful of partitions, and
the same data always gives the same blocks. Pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

LADDER_S: Final = (
    *(0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75),
    *(1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0),
    *(180.0, 300.0, 600.0),
)
MAX_BLOCKS: Final = 120  # more blocks add little power and cost time at every look
MIN_PER_SIDE: Final = 20
MIN_BLOCK_S: Final = 10.0
FLOOR_BLOCKS: Final = 24  # below MIN_BLOCK_S only for data spanning less than 24 of them


def least_per_side(quantile: float | None) -> int:
    """Blocks with fewer requests than this on a side are left out of a latency test: 5, and
    for a tail quantile half its per-side target. Blocks weigh equally, and a partial block at
    the window's edge, too small to hold a tail sample, would dominate the test's variance
    (which blocks count depends on traffic only, never on the latencies)."""
    need = need_per_side(quantile)
    return 5 if need <= MIN_PER_SIDE else need // 2


def need_per_side(quantile: float | None) -> int:
    """Requests per side a block should hold for a statistic about `quantile` (None: the
    whole distribution or error counts)."""
    if quantile is None or quantile <= 0.5:
        return MIN_PER_SIDE
    return max(MIN_PER_SIDE, math.ceil(0.5 / (1.0 - quantile) - 1e-9))


def snap_up(seconds: float) -> float:
    """The smallest ladder length >= seconds (the largest when beyond the ladder)."""
    for length in LADDER_S:
        if length >= seconds - 1e-9:
            return length
    return LADDER_S[-1]


@dataclass(frozen=True, slots=True)
class BlockChoice:
    block_s: float
    span_s: float  # first to last request of either side
    rate_b: float  # requests per second over the span
    rate_c: float
    why: str


def choose_block(
    ts_b: np.ndarray, ts_c: np.ndarray, *, quantile: float | None = None
) -> BlockChoice:
    """The block length for one metric from both sides' request times (epoch seconds)."""
    tb, tc = np.asarray(ts_b, float), np.asarray(ts_c, float)
    need = need_per_side(quantile)
    if tb.size == 0 or tc.size == 0:
        return BlockChoice(10.0, 0.0, 0.0, 0.0, "no traffic on a side: default 10s")
    first = min(float(tb.min()), float(tc.min()))
    last = max(float(tb.max()), float(tc.max()))
    # A span shorter than a request gap still spans one "request's worth" of time.
    span = max(last - first, LADDER_S[0])
    rate_b, rate_c = tb.size / span, tc.size / span
    by_rate = need / min(rate_b, rate_c)
    by_span = span / MAX_BLOCKS
    # At least 10 s once the data span minutes: error bursts and level drift last tens of
    # seconds, and a block is one bet; fewer distinct lengths as the window grows, too.
    floor = min(MIN_BLOCK_S, span / FLOOR_BLOCKS)
    block = snap_up(max(by_rate, by_span, floor))
    why = (
        f"{block:g}s blocks: {need} requests per side per block at "
        f"{min(rate_b, rate_c):.3g}/s on the sparser side, over {span:.3g}s of data"
    )
    return BlockChoice(block, span, rate_b, rate_c, why)


def block_keys(ts: np.ndarray, origin: float, block_s: float) -> np.ndarray:
    """Each time's block number, counted from `origin` (a multiple of block_s: the same data
    always fall into the same blocks, whatever the window's start)."""
    return np.floor((np.asarray(ts, float) - origin) / block_s).astype(np.int64)


def origin_for(start: float, block_s: float) -> float:
    return math.floor(start / block_s) * block_s


@dataclass(frozen=True, slots=True)
class BlockCounts:
    """Requests and flagged requests (errors) per block, for blocks where either side has
    requests, in time order."""

    keys: np.ndarray
    n_b: np.ndarray
    e_b: np.ndarray
    n_c: np.ndarray
    e_c: np.ndarray


def count_blocks(
    ts_b: np.ndarray,
    flag_b: np.ndarray,
    ts_c: np.ndarray,
    flag_c: np.ndarray,
    *,
    origin: float,
    block_s: float,
) -> BlockCounts:
    kb, kc = block_keys(ts_b, origin, block_s), block_keys(ts_c, origin, block_s)
    keys = np.unique(np.concatenate([kb, kc]))
    pb, pc = np.searchsorted(keys, kb), np.searchsorted(keys, kc)

    def count(pos: np.ndarray, w: np.ndarray | None) -> np.ndarray:
        return np.bincount(pos, weights=w, minlength=keys.size).astype(float)

    return BlockCounts(
        keys,
        count(pb, None),
        count(pb, np.asarray(flag_b, float)),
        count(pc, None),
        count(pc, np.asarray(flag_c, float)),
    )


def paired_groups(
    ts_b: np.ndarray,
    v_b: np.ndarray,
    ts_c: np.ndarray,
    v_c: np.ndarray,
    *,
    origin: float,
    block_s: float,
    min_per_side: int = 5,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Values of each side grouped by block, for the blocks where both sides have at least
    `min_per_side` values, in time order."""
    kb, kc = block_keys(ts_b, origin, block_s), block_keys(ts_c, origin, block_s)
    ob, oc = np.argsort(kb, kind="stable"), np.argsort(kc, kind="stable")
    kb, kc = kb[ob], kc[oc]
    vb, vc = np.asarray(v_b, float)[ob], np.asarray(v_c, float)[oc]
    ub, cb = np.unique(kb, return_counts=True)
    uc, cc = np.unique(kc, return_counts=True)
    both = np.intersect1d(ub[cb >= min_per_side], uc[cc >= min_per_side])
    lo_b, hi_b = np.searchsorted(kb, both), np.searchsorted(kb, both, side="right")
    lo_c, hi_c = np.searchsorted(kc, both), np.searchsorted(kc, both, side="right")
    gb = [vb[a:z] for a, z in zip(lo_b, hi_b, strict=True)]
    gc = [vc[a:z] for a, z in zip(lo_c, hi_c, strict=True)]
    return gb, gc


def series_block(ts_b: np.ndarray, ts_c: np.ndarray) -> float:
    """Blocks for series (each point already an aggregate, e.g. a Prometheus step): the
    series' own spacing, or longer when the span holds more than MAX_BLOCKS of them."""
    gaps = [np.diff(np.unique(np.asarray(t, float))) for t in (ts_b, ts_c)]
    steps = np.concatenate([g[g > 0] for g in gaps])
    step = float(np.median(steps)) if steps.size else 10.0
    both = np.concatenate([np.asarray(ts_b, float), np.asarray(ts_c, float)])
    span = float(both.max() - both.min()) if both.size else 0.0
    return snap_up(max(step, span / MAX_BLOCKS))
