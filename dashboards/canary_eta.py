"""How long until an inconclusive canary analysis can settle: "about N more minutes". Pure.

Estimated only from what the judge itself recorded in the verdict row (analytics/judge/
seq_metrics.py): per metric its interval, estimate, tolerance, direction and sample sizes, and
the analysis window's length (the `window` of the verdict's details). Three cases:

- not enough requests (the minimum-sample guard): the requests still missing on each side at
  that side's rate over the window;
- not enough blocks: the blocks still missing times the block length;
- an interval still wider than the tolerance: the judge's own rule (bounds.more_traffic:
  half-widths shrink about as 1/sqrt(n)) gives the factor of the traffic so far that would
  bring the open bound inside the tolerance; the missing canary requests at the canary's
  rate over the window.

Anything else (no window, no traffic, an estimate already beyond the tolerance, an interval
with too few blocks to be bounded) is "cannot be estimated", with the reason, never a guess.
The two rules of the judge are passed in (`factor`, `side`) so this module stays pure and
cannot drift from the judge (the page passes dashboards.data.more_traffic / open_bound).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

Factor = Callable[[float, float, float], float | None]
Side = Callable[[float, float, float, str], tuple[str, float]]

UNSETTLED: Final = frozenset({"inconclusive", "nodata"})
ASSUMES: Final = (
    "assumes both versions keep their request rates of this analysis window, the effect stays "
    "where it is, and the gate's window keeps growing (not a fixed lookback); the judge's "
    "interval narrows about as 1/sqrt(n), which ignores the slow growth of its anytime-valid "
    "bound, so it is optimistic by tens of percent, and the gate's next analysis comes on top"
)

_GUARD = re.compile(r"baseline (\d+) and canary (\d+) requests, (\d+) needed on each side")
_BLOCKS = re.compile(r"not enough ([0-9.]+)s blocks[^:]*: (\d+) of (\d+) needed")


@dataclass(frozen=True, slots=True)
class MetricEta:
    metric: str
    minutes: float | None  # None: cannot be estimated (see why)
    why: str


@dataclass(frozen=True, slots=True)
class Eta:
    """The estimate for one analysis: the slowest unsettled metric decides."""

    minutes: float | None
    metrics: tuple[MetricEta, ...]
    assumes: str = ASSUMES

    @property
    def blocking(self) -> tuple[MetricEta, ...]:
        """The metrics that cannot be estimated."""
        return tuple(m for m in self.metrics if m.minutes is None)

    def headline(self) -> str:
        if not self.metrics:
            return "the analysis recorded no per-metric results: its wait cannot be estimated"
        if self.minutes is None:
            names = ", ".join(m.metric for m in self.blocking)
            return f"how many more minutes it needs cannot be estimated ({names}: see below)"
        return f"{minutes_text(self.minutes)} more until every metric can settle"


def minutes_text(minutes: float) -> str:
    """'about 45 minutes' (rounded up: an estimate is no promise), 'less than a minute'."""
    if minutes < 1:
        return "less than a minute"
    n = math.ceil(minutes)
    return "about 1 minute" if n == 1 else f"about {n:,} minutes"


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x)


def _window_s(details: Mapping[str, Any]) -> float | None:
    w = details.get("window")
    if isinstance(w, Mapping):
        s = _num(w.get("seconds"))
        if s is not None and s > 0:
            return s
    return None


def _rate_text(n: float, window_s: float) -> str:
    return f"{n / window_s * 60:,.0f}/min"


def _guard(m: Mapping[str, Any], window_s: float, match: re.Match[str]) -> MetricEta:
    name = str(m.get("name", "?"))
    n_b, n_c, need = (int(g) for g in match.groups())
    waits = []
    for side, n in (("baseline", n_b), ("canary", n_c)):
        if n >= need:
            continue
        if n <= 0:
            return MetricEta(name, None, f"no {side} requests in the window: no rate to go by")
        waits.append((need - n) / (n / window_s) / 60.0)
    minutes = max(waits, default=0.0)
    return MetricEta(
        name,
        minutes,
        f"{need} requests needed on each side, baseline has {n_b} "
        f"({_rate_text(n_b, window_s)}), canary {n_c} ({_rate_text(n_c, window_s)})",
    )


def _blocks(m: Mapping[str, Any], match: re.Match[str]) -> MetricEta:
    name = str(m.get("name", "?"))
    block_s, have, need = float(match.group(1)), int(match.group(2)), int(match.group(3))
    minutes = max(need - have, 0) * block_s / 60.0
    return MetricEta(
        name,
        minutes,
        f"{have} of {need} {block_s:g}s blocks with traffic on both sides "
        "(assumes every new block gets traffic on both sides)",
    )


def _interval(m: Mapping[str, Any], window_s: float, factor: Factor, side: Side) -> MetricEta:
    name = str(m.get("name", "?"))
    extra = m.get("details") if isinstance(m.get("details"), Mapping) else {}
    assert isinstance(extra, Mapping)
    tol = _num(extra.get("tolerance"))
    ci = m.get("ci") if isinstance(m.get("ci"), list | tuple) else None
    effect = _num(m.get("effect"))
    if tol is None or ci is None or len(ci) != 2:
        return MetricEta(name, None, "the verdict row has no interval or tolerance for it")
    # JSON has no infinities: a missing bound is an open (infinite) one.
    lo = _num(ci[0]) if ci[0] is not None else -math.inf
    hi = _num(ci[1]) if ci[1] is not None else math.inf
    if lo is None or hi is None:
        return MetricEta(name, None, "the verdict row has an unreadable interval for it")
    direction = str(m.get("direction", "increase"))
    which, bound = side(lo, hi, tol, direction)
    sign = -1.0 if which == "lower" else 1.0
    est = effect if effect is not None else 0.0
    est = min(max(est, lo), hi)  # the judge clamps the estimate into its interval too
    f = factor(sign * est, sign * bound, tol)
    if f is None:
        return MetricEta(
            name,
            None,
            "its estimate is already beyond the tolerance: more traffic is more likely to "
            "fail it than to pass it",
        )
    if math.isinf(f):
        return MetricEta(name, None, f"its {which} bound is still open: too few blocks to bound it")
    n_c = _num(m.get("n_canary")) or 0.0
    n_b = _num(m.get("n_baseline")) or 0.0
    if n_c <= 0 or n_b <= 0:
        return MetricEta(name, None, "no traffic on one side in the window: no rate to go by")
    # (f - 1) x the traffic so far, at the rate of the window: the same for both sides.
    minutes = (f - 1.0) * window_s / 60.0
    more_c = (f - 1.0) * n_c
    return MetricEta(
        name,
        minutes,
        f"about {f:.2f}x the traffic so far would bring its {which} bound inside the "
        f"tolerance: ~{more_c:,.0f} more canary requests at its {_rate_text(n_c, window_s)}",
    )


def estimate(
    metrics: Sequence[Mapping[str, Any]],
    details: Mapping[str, Any],
    *,
    factor: Factor,
    side: Side,
) -> Eta:
    """How long until the unsettled metrics of one analysis (its `details` JSON and its
    per-metric results) can settle, from the judge's own numbers; module doc."""
    window_s = _window_s(details)
    out: list[MetricEta] = []
    for m in metrics:
        if m.get("muted") or str(m.get("classification")) not in UNSETTLED:
            continue
        name = str(m.get("name", "?"))
        reason = str(m.get("reason", ""))
        if window_s is None:
            out.append(MetricEta(name, None, "the verdict row has no analysis window"))
            continue
        if guard := _GUARD.search(reason):
            out.append(_guard(m, window_s, guard))
        elif blocks := _BLOCKS.search(reason):
            out.append(_blocks(m, blocks))
        elif str(m.get("classification")) == "inconclusive":
            out.append(_interval(m, window_s, factor, side))
        else:
            out.append(MetricEta(name, None, f"no data the judge can size: {reason or 'n/a'}"))
    known = [e.minutes for e in out if e.minutes is not None]
    minutes = max(known) if out and len(known) == len(out) else None
    return Eta(minutes, tuple(out))
