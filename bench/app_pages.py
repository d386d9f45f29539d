"""Each page of the Streamlit app rendered by Streamlit's AppTest on a large store: first render
(cold caches), second render (warm), one interaction, and the data loaders each page called.

    .venv/bin/python -m bench.app_pages --rows 10000000 [--hours 6] [--range-min 15] [--repeat 3]

The store is bench/dashboard.py's (`--rows` synthetic bookinfo requests over the last `--hours`,
written once into .bench-data/ui-<rows>, reused while it exists), plus a few canary verdicts (so
the Canary page has a rollout to draw). Pages are asked for an absolute
range of `--range-min` minutes ending at the store's newest row (in the URL, as a shared link
would), so a store written hours ago measures the same as a fresh one.

Cold: `st.cache_data` and `st.cache_resource` cleared, then a new session renders the page. Warm:
another new session renders it again (what the next user or an auto-refresh costs). Interaction:
in the warm session, one widget change typical of the page and its rerun. Python imports are
paid before measuring (every page is rendered once on an empty store). Targets: a page renders
in under 1 s, an interaction in under 0.5 s. Each page is measured `--repeat` times and the
medians are shown. The OS page cache is warm in every case (the store was just written or read).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
import streamlit as st  # noqa: E402
import streamlit.logger  # noqa: E402

# Streamlit outside a server warns about every cache and context it misses; only errors matter.
streamlit.logger.set_log_level("error")

from streamlit.testing.v1 import AppTest  # noqa: E402

from bench.dashboard import ensure_store  # noqa: E402
from meshlens.analytics.paired_store import remove_all, store_settled_hours  # noqa: E402
from meshlens.collector.store.layout import visible_files  # noqa: E402
from meshlens.collector.store.parquet_write import write_table  # noqa: E402
from meshlens.collector.store.schema import VERDICTS  # noqa: E402
from meshlens.dashboards import data  # noqa: E402

APP = str(ROOT / "dashboards" / "app.py")
PAGE_TARGET_S = 1.0
INTERACTION_TARGET_S = 0.5
TIMEOUT_S = 600.0  # one render on a 10M store on a slow machine must not abort the run


@dataclass(frozen=True, slots=True)
class Interaction:
    """One widget change: `apply` changes the widget of a rendered page (the bench then reruns),
    or raises LookupError when the page has no such widget (a redesign renamed it)."""

    what: str
    apply: Callable[[AppTest], None]


def _other_option(key: str) -> Callable[[AppTest], None]:
    """Select the first option of selectbox `key` that is not the current one."""

    def apply(at: AppTest) -> None:
        box = _find(at, "selectbox", key)
        options = [o for o in box.options if o != box.value]
        if not options:
            raise LookupError(f"selectbox {key} has one option")
        box.set_value(options[0])

    return apply


def _select(key: str, value: str) -> Callable[[AppTest], None]:
    def apply(at: AppTest) -> None:
        _find(at, "selectbox", key).set_value(value)

    return apply


def _click(key: str) -> Callable[[AppTest], None]:
    def apply(at: AppTest) -> None:
        _find(at, "button", key).click()

    return apply


def _edit(key: str) -> Callable[[AppTest], None]:
    """Change text area `key` (a YAML comment at the end: the same config, a new cache key, so
    the check runs again over the requests)."""

    def apply(at: AppTest) -> None:
        area = _find(at, "text_area", key)
        area.set_value(f"{area.value or ''}\n# edited by bench.app_pages\n")

    return apply


def _find(at: AppTest, kind: str, key: str) -> Any:
    try:
        return getattr(at, kind)(key=key)
    except KeyError:
        raise LookupError(f"no {kind} with key {key!r} on the page") from None


@dataclass(frozen=True, slots=True)
class PageCase:
    name: str
    script: str  # as AppTest.switch_page takes it
    interaction: Interaction


PAGES: tuple[PageCase, ...] = (
    PageCase("Mesh", "views/mesh.py", Interaction("graph level", _other_option("mesh_level"))),
    PageCase("Service", "views/service.py", Interaction("service", _other_option("service_name"))),
    PageCase("Canary", "views/canary.py", Interaction("rollout", _other_option("canary_rollout"))),
    PageCase("SQL", "views/sql.py", Interaction("run example", _click("sql_run"))),
    PageCase(
        "Requests & traces",
        "views/traces.py",
        Interaction("status 5xx", _select("tr_status", "5xx")),
    ),
    PageCase("Security", "views/security.py", Interaction("edit config", _edit("security_yaml"))),
    PageCase("Routing", "views/routing.py", Interaction("edit config", _edit("routing_yaml"))),
)


@dataclass(frozen=True, slots=True)
class Call:
    page: str
    phase: str  # cold / warm / interaction
    loader: str
    seconds: float


class LoaderTimer:
    """Wraps every public function of `meshlens.dashboards.data` (pages call them as
    `data.name(...)`), so each page's loaders are timed as the page really calls them."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.page = ""
        self.phase = ""

    @contextmanager
    def installed(self) -> Iterator[None]:
        originals: dict[str, Any] = {}
        for name in dir(data):
            fn = getattr(data, name)
            if name.startswith("_") or isinstance(fn, type) or not callable(fn):
                continue
            originals[name] = fn
            setattr(data, name, self._wrap(name, fn))
        try:
            yield
        finally:
            for name, fn in originals.items():
                setattr(data, name, fn)

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.calls.append(Call(self.page, self.phase, name, time.perf_counter() - t0))

        timed.__wrapped__ = fn  # type: ignore[attr-defined]
        return timed


@dataclass(frozen=True, slots=True)
class Result:
    page: str
    cold: float | None
    warm: float | None
    interaction: float | None
    what: str
    note: str


def _session(case: PageCase, query: dict[str, str]) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    at.query_params = dict(query)
    at.switch_page(case.script)
    return at


def _run(at: AppTest) -> tuple[float, str]:
    """Seconds of one run, and the page's problem if it showed one."""
    t0 = time.perf_counter()
    at.run()
    secs = time.perf_counter() - t0
    if at.exception:
        return secs, "exception: " + at.exception[0].message.splitlines()[0][:80]
    if at.error:
        return secs, "page shows: " + str(at.error[0].value).splitlines()[0][:80]
    return secs, ""


def measure(case: PageCase, query: dict[str, str], timer: LoaderTimer) -> Result:
    timer.page = case.name
    streamlit.logger.set_log_level("error")  # AppTest sets it back from the config
    st.cache_data.clear()
    st.cache_resource.clear()
    timer.phase = "cold"
    cold, note = _run(_session(case, query))
    timer.phase = "warm"
    at = _session(case, query)
    warm, note2 = _run(at)
    note = note or note2
    timer.phase = "interaction"
    interaction: float | None
    try:
        case.interaction.apply(at)
    except LookupError as exc:
        interaction, note = None, note or str(exc)
    else:
        interaction, note3 = _run(at)
        note = note or note3
    return Result(case.name, cold, warm, interaction, case.interaction.what, note)


def median_of(runs: list[Result]) -> Result:
    """Each column's median over the repeats (a loaded machine makes single runs noisy)."""

    def med(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return statistics.median(kept) if kept else None

    first = runs[0]
    return Result(
        first.page,
        med([r.cold for r in runs]),
        med([r.warm for r in runs]),
        med([r.interaction for r in runs]),
        first.what,
        next((r.note for r in runs if r.note), ""),
    )


def warm_imports(query: dict[str, str]) -> float:
    """Render every page once on an empty store: Python imports and Streamlit's own first-use
    costs are paid here, not by the first page measured."""
    t0 = time.perf_counter()
    saved = os.environ.get("MESHLENS_DATA_DIR")
    with tempfile.TemporaryDirectory(prefix="meshlens-bench-empty-") as empty:
        os.environ["MESHLENS_DATA_DIR"] = empty
        try:
            for case in PAGES:
                _session(case, query).run()
        finally:
            if saved is None:
                os.environ.pop("MESHLENS_DATA_DIR", None)
            else:
                os.environ["MESHLENS_DATA_DIR"] = saved
    return time.perf_counter() - t0


def _fmt(secs: float | None) -> str:
    return "n/a" if secs is None else f"{secs:.3f}"


def _verdict(secs: float | None, target: float) -> str:
    if secs is None:
        return "-"
    return "PASS" if secs < target else "MISS"


def report(results: list[Result], calls: list[Call], repeat: int) -> None:
    print(
        f"\n{'page':18} {'cold s':>8} {'warm s':>8} {'interact s':>10}  "
        f"{'cold':4} {'warm':4} {'int.':4}  interaction / note"
    )
    for r in results:
        tail = r.what + (f"  [{r.note}]" if r.note else "")
        print(
            f"{r.page:18} {_fmt(r.cold):>8} {_fmt(r.warm):>8} {_fmt(r.interaction):>10}  "
            f"{_verdict(r.cold, PAGE_TARGET_S):4} {_verdict(r.warm, PAGE_TARGET_S):4} "
            f"{_verdict(r.interaction, INTERACTION_TARGET_S):4}  {tail}"
        )
    print(
        f"median of {repeat} run(s) per page; targets: page render < {PAGE_TARGET_S:g} s "
        f"(cold and warm), interaction < {INTERACTION_TARGET_S:g} s"
    )
    # Loaders: total seconds and calls per page and phase (a loader called by another through
    # the package counts in both); helpers that never took a millisecond are left out.
    agg: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for c in calls:
        agg[(c.page, c.loader)][c.phase].append(c.seconds)
    print(
        "\ndata loaders as the pages called them: seconds per phase (summed over the page's "
        f"calls, mean of {repeat} run(s)), calls per run; under 1 ms left out"
    )
    print(f"{'page':18} {'loader':24} {'cold s':>8} {'warm s':>8} {'interact s':>10} {'calls':>5}")
    for (page, loader), phases in agg.items():
        n = sum(len(v) for v in phases.values()) // repeat
        if all(sum(v) / repeat < 0.001 for v in phases.values()):
            continue

        def total(phase: str, phases: dict[str, list[float]] = phases) -> str:
            v = phases.get(phase)
            return f"{sum(v) / repeat:.3f}" if v else "-"

        print(
            f"{page:18} {loader:24} {total('cold'):>8} {total('warm'):>8} "
            f"{total('interaction'):>10} {n:5}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--hours", type=float, default=6.0)
    ap.add_argument("--range-min", type=int, default=15, help="minutes of the time range")
    ap.add_argument("--data-dir", type=Path, default=None, help="default: .bench-data/ui-<rows>")
    ap.add_argument("--repeat", type=int, default=3, help="runs per page; medians are shown")
    ap.add_argument("--only", nargs="+", choices=[p.name for p in PAGES], help="these pages")
    ap.add_argument(
        "--pairing",
        choices=("running", "settled", "live"),
        default="running",
        help="what maintenance has stored paired: 'running' as a collector would have at the "
        "store's newest row (settle 2 min, one 30 s maintenance interval later), 'settled' "
        "everything (a store written long ago), 'live' nothing",
    )
    args = ap.parse_args(argv)
    ddir: Path = args.data_dir or ROOT / ".bench-data" / f"ui-{_short(args.rows)}"

    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    ensure_store(ddir, args.rows, args.hours, store_pairing=False)
    remove_all(ddir)
    newest = data.time_extent(str(ddir.resolve()))
    if args.pairing != "live" and newest is not None:
        now = time.time() if args.pairing == "settled" else newest[1].timestamp() + 30.0
        t1 = time.perf_counter()
        n = store_settled_hours(ddir, now, settle=120.0)
        print(
            f"pairing '{args.pairing}': {n} hour(s) stored paired in "
            f"{time.perf_counter() - t1:.1f} s (as of {_iso(datetime.fromtimestamp(now, UTC))})"
        )
    else:
        print("pairing 'live': nothing stored, every window is paired live")
    data.time_extent.clear()
    t_store = time.perf_counter() - t0
    # The sign-in gate and anything else from the caller's environment stay out of the bench.
    for key in [k for k in os.environ if k.startswith("MESHLENS_")]:
        del os.environ[key]
    os.environ["MESHLENS_DATA_DIR"] = str(ddir.resolve())
    extent = data.time_extent(str(ddir.resolve()))
    if extent is None:
        print(f"store {ddir} has no requests", file=sys.stderr)
        return 1
    end = extent[1].astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
    start = end - timedelta(minutes=args.range_min)
    ensure_verdicts(ddir, end)
    query = {"from": _iso(start), "to": _iso(end)}
    print(
        f"store: {ddir} ({args.rows:,} rows requested over {args.hours:g} h; "
        f"ready in {t_store:.1f} s)"
    )
    print(f"range: {query['from']} .. {query['to']} ({args.range_min} min, absolute, in the URL)")
    print(f"imports and first use paid on an empty store: {warm_imports(query):.1f} s")

    timer = LoaderTimer()
    results = []
    with timer.installed():
        for case in PAGES:
            if args.only and case.name not in args.only:
                continue
            results.append(median_of([measure(case, query, timer) for _ in range(args.repeat)]))
            r = results[-1]
            print(
                f"  {r.page}: cold {_fmt(r.cold)} s, warm {_fmt(r.warm)} s, "
                f"interaction {_fmt(r.interaction)} s",
                file=sys.stderr,
                flush=True,
            )
    report(results, timer.calls, args.repeat)
    print(f"load average (1 min): {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    return 0


def ensure_verdicts(ddir: Path, end: datetime) -> None:
    """A gate's verdicts inside the measured range (the request store alone has none, and the
    Canary page would only say so): reviews v2 -> v3 judged four times, and one promoted
    rollout, so the page draws its history and the versions' latencies from the requests."""
    if visible_files(ddir, "verdicts"):
        return
    metric = {
        "name": "latency_p99",
        "classification": "pass",
        "baseline": 40.0,
        "canary": 42.0,
        "unit": "ms",
        "effect": 0.02,
        "ci": [-0.05, 0.08],
        "n_baseline": 9000,
        "n_canary": 3000,
        "reason": "no evidence of slower responses",
        "critical": False,
    }
    rows: list[dict[str, Any]] = []
    steps = [(10, "pass", "advance"), (25, "pass", "advance"), (50, "inconclusive", "hold")]
    steps.append((50, "pass", "advance"))
    for i, (weight, verdict, action) in enumerate(steps):
        rows.append(
            {
                "ts": end - timedelta(minutes=12 - 3 * i),
                "rollout": "reviews-v3",
                "service": "reviews",
                "baseline": "v2",
                "canary": "v3",
                "phase": "progressing",
                "canary_weight": weight,
                "verdict": verdict,
                "score": 90.0,
                "details": json.dumps({"verdict": verdict, "metrics": [metric]}),
                "action": action,
                "dry_run": False,
            }
        )
    rows.append({**rows[0], "rollout": "details-v2", "service": "details", "baseline": "v1"})
    rows[-1].update(canary="v2", phase="succeeded", canary_weight=100, action="promote")
    table = pa.Table.from_pylist(rows, schema=VERDICTS)
    write_table(ddir, "verdicts", table, node="bench", lo=1, fsync=False)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def _short(rows: int) -> str:
    """10000000 -> 10m, 1000000 -> 1m (bench/run_all.py's directory names)."""
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}m"
    if rows % 1_000 == 0:
        return f"{rows // 1_000}k"
    return str(rows)


if __name__ == "__main__":
    sys.exit(main())
