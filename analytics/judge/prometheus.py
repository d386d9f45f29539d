"""Per-side time series and request counts from Prometheus (Istio's standard metrics or custom
PromQL), on a step grid aligned to the epoch so that the same window always asks Prometheus the
same questions.

Why the grid is aligned (issue 14, item 5): a range query is evaluated at start, start + step,
...; with start = "now - 10m" (or a window rounded to whole seconds by the client) the
evaluation timestamps moved with every run, each run saw a different set of samples, and the
same window got different verdicts. Here every query is evaluated on multiples of the step
since the epoch (`align_window`), so two runs over the same window, or over windows that differ
by less than a step at either end, evaluate the same timestamps and get identical answers.

Why the window is at least `DEFAULT_MIN_WINDOW_S`: rate() and increase() need two samples in
their range. With Istio's usual 15 s scrape interval, a 15 s range holds one sample most of
the time (two only when a scrape lands exactly on the boundary), so `rate(x[15s])` was empty
in some runs and not in others. The query step is raised to a whole multiple of the caller's
step that is at least `min_window_s` (default 60 s, 4x the scrape interval, as Grafana's
$__rate_interval), and each step's window equals the step: consecutive steps do not overlap,
so per-step values are separate observations and per-step counts add up to the window's total
(no request is counted twice).

Each value describes one step (ts, ts + step]: the query is evaluated at the end of the step
over the trailing `[step]` range, and labelled with the start of the step, so a step's value
falls in the judge's block that starts at ts.

Built-ins for source=prometheus follow Istio's metric names (and Flagger's definitions), one
side at a time (destination-reported series of `destination_service_name`/`destination_version`):

  error_rate  errors / requests per step, where errors follow the metric's error_codes
              (5xx -> response_code=~"5..", 4xx, exact codes, "no_response" -> code 0, "grpc"
              -> grpc_response_status not OK, grpc_codes -> exact gRPC statuses). A side with
              traffic but no error series at all (a healthy baseline) has error rate 0 at each
              step with traffic: `... or on() (0 * (requests > 0))`, never "no data".
  latency     histogram_quantile(q, sum(rate(istio_request_duration_milliseconds_bucket{...}
              [${interval}])) by (le))

Templates substitute ${service}, ${version} (the side), ${interval} (the step window) and
${quantile}. "No data" is reported only when Prometheus holds no series for the side
(`PrometheusSource.has_series`, `no_data_reason`); an unreachable or failing Prometheus raises
PrometheusError instead, so it can never look like a metric without data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np

from meshlens.analytics.errors import JudgeInputError, PrometheusError
from meshlens.analytics.judge.data import Series, grpc_code
from meshlens.analytics.judge.model import MetricSpec

DEFAULT_MIN_WINDOW_S: Final = 60.0
"""Shortest rate()/increase() window (and so query step): 4x a 15 s scrape interval, so that a
window holds at least two samples even when a scrape is late or missed. Raise it (e.g. to 120)
when Prometheus scrapes the sidecars every 30 s."""

MAX_POINTS_PER_QUERY: Final = 10_000
"""Prometheus refuses range queries of more than 11,000 points per series: longer grids are
split into several queries on the same aligned grid."""

REQUESTS_METRIC: Final = "istio_requests_total"
DURATION_BUCKETS_METRIC: Final = "istio_request_duration_milliseconds_bucket"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SEL: Final = (
    'reporter="destination",destination_service_name="${service}",destination_version="${version}"'
)


# --- query templates (pure) ------------------------------------------------------------------


def error_matchers(error_codes: Sequence[str], grpc_codes: Sequence[str] = ()) -> tuple[str, ...]:
    """PromQL label matchers selecting the error series of istio_requests_total, as disjoint
    matcher groups (a series matches at most one group, so summing the groups counts every
    request once). Same classes as analytics.judge.data.error_mask on request-level data:
    "5xx"/"4xx"/"Nxx" -> response_code=~"N..", "no_response" or "0" -> response_code="0",
    exact codes ("503"), "grpc" -> any gRPC status but OK, grpc_codes -> exact gRPC statuses
    (numbers or names such as "UNAVAILABLE"; Istio's label carries the number).
    Raises JudgeInputError on an unknown class."""
    http: list[str] = []
    any_grpc = False
    for raw in error_codes:
        c = str(raw).strip().lower()
        if c in ("no_response", "0"):
            http.append("0")
        elif c == "grpc":
            any_grpc = True
        elif len(c) == 3 and c.endswith("xx") and c[0].isdigit():
            http.append(f"{c[0]}..")
        elif c.isdigit():
            http.append(c)
        else:
            raise JudgeInputError(f"unknown error code class {raw!r} for a Prometheus error rate")
    grpc: list[str] = []
    for g in grpc_codes:
        try:
            grpc.append(str(grpc_code(str(g))))
        except ValueError:
            raise JudgeInputError(f"unknown gRPC status {g!r}") from None
    groups: list[str] = []
    http_re = "|".join(dict.fromkeys(http))
    if http_re:
        groups.append(f'response_code=~"{http_re}"')
    grpc_matcher = (
        'grpc_response_status!~"0|"'
        if any_grpc
        else (f'grpc_response_status=~"{"|".join(dict.fromkeys(grpc))}"' if grpc else "")
    )
    if grpc_matcher:
        groups.append(f'response_code!~"{http_re}",{grpc_matcher}' if http_re else grpc_matcher)
    return tuple(groups)


def _increase(labels: str, extra: str = "") -> str:
    inner = f"{labels},{extra}" if extra else labels
    return f"increase({REQUESTS_METRIC}{{{inner}}}[${{interval}}])"


def requests_query(labels: str = _SEL) -> str:
    """Requests per step: sum(increase(istio_requests_total{<side>}[${interval}]))."""
    return f"sum({_increase(labels)})"


def errors_query(matchers: Sequence[str], labels: str = _SEL) -> str:
    """Errors per step, summed over the disjoint matcher groups of `error_matchers`. Empty at
    steps where the side has no error series (the caller counts those steps as 0 errors where
    the side has requests). Raises JudgeInputError when there is no matcher group."""
    if not matchers:
        raise JudgeInputError("no error classes: nothing counts as an error")
    return "sum(" + " or ".join(_increase(labels, m) for m in matchers) + ")"


def error_rate_query(error_codes: Sequence[str] = ("5xx",), grpc_codes: Sequence[str] = ()) -> str:
    """errors / requests per step; 0 (not empty) at steps with requests but no error series,
    empty at steps without requests."""
    total = requests_query()
    zero = f"0 * ({total} > 0)"
    matchers = error_matchers(error_codes, grpc_codes)
    if not matchers:
        return zero
    return f"({errors_query(matchers)} / {total}) or on() ({zero})"


ERROR_RATE_QUERY: Final = error_rate_query()
LATENCY_QUERY: Final = (
    f"histogram_quantile(${{quantile}}, sum(rate({DURATION_BUCKETS_METRIC}"
    f"{{{_SEL}}}[${{interval}}])) by (le))"
)


def render(template: str, values: dict[str, str]) -> str:
    """${name} placeholders -> values, verbatim."""
    out = template
    for k, v in values.items():
        out = out.replace("${" + k + "}", v)
    return out


def promql_string(value: str) -> str:
    """A value safe inside a PromQL double-quoted string (backslash and quote escaped), so a
    label value cannot end the string and change the query."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"')


def query_for(spec: MetricSpec) -> str:
    """The PromQL template of a metric: its own query, or the Istio built-in of its kind."""
    if spec.kind == "promql" or spec.query:
        return spec.query
    if spec.kind == "error_rate":
        return error_rate_query(spec.error_codes, spec.grpc_codes)
    if spec.kind == "latency":
        return LATENCY_QUERY
    raise PrometheusError("-", f"no built-in Prometheus query for a {spec.kind} metric")


def side_selector(service: str, version: str, metric: str = REQUESTS_METRIC) -> str:
    """The series selector of one side's destination-reported Istio series."""
    return render(
        f"{metric}{{{_SEL}}}",
        {"service": promql_string(service), "version": promql_string(version)},
    )


_SELECTOR_RE: Final = re.compile(
    r'[A-Za-z_:][A-Za-z0-9_:]*\{(?:[^{}"]|"(?:[^"\\]|\\.)*")*\}'
    r'|\{(?:[^{}"]|"(?:[^"\\]|\\.)*")*__name__(?:[^{}"]|"(?:[^"\\]|\\.)*")*\}'
)


def query_selectors(query: str) -> list[str]:
    """The `metric{...}` series selectors written in a PromQL query (best effort, for telling
    "no series" from "no samples" on custom queries): bare metric names without braces are
    not found, selectors in regex strings may be."""
    return list(dict.fromkeys(m.group(0) for m in _SELECTOR_RE.finditer(query)))


# --- time grid (pure) ------------------------------------------------------------------------


def _us(t: datetime) -> int:
    """Exact microseconds since the epoch (naive datetimes are taken as UTC)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - _EPOCH) // timedelta(microseconds=1)


def _step_ms(step_s: float) -> int:
    """The step in whole milliseconds (Prometheus' resolution), at least 1."""
    try:
        x = float(step_s)
    except (TypeError, ValueError):
        x = math.nan
    if not (math.isfinite(x) and x > 0):
        raise JudgeInputError(f"the step must be a positive number of seconds, not {step_s!r}")
    return max(1, round(x * 1000))


def _at(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def align_window(start: datetime, end: datetime, step_s: float) -> tuple[datetime, datetime]:
    """(start rounded up, end rounded down) to multiples of `step_s` since the epoch, in UTC.

    Prometheus evaluates a range query at start, start + step, ...: aligning both ends makes
    those timestamps a function of the window and the step alone, so the same window (or one
    shifted by less than a step) is evaluated at the same instants in every run, whatever the
    time of the run. The step is taken to the millisecond (Prometheus' resolution). When the
    window holds no step boundary the aligned start comes after the aligned end: an empty grid,
    which callers check (`step_starts`)."""
    step_us = _step_ms(step_s) * 1000
    lo = -(-_us(start) // step_us) * step_us
    hi = (_us(end) // step_us) * step_us
    return _EPOCH + timedelta(microseconds=lo), _EPOCH + timedelta(microseconds=hi)


def query_step(step_s: float, min_window_s: float = DEFAULT_MIN_WINDOW_S) -> float:
    """The step (= rate/increase window) used for the caller's `step_s`: the smallest whole
    multiple of it that is at least `min_window_s`, so every window holds two samples or more
    and a query step still covers whole caller steps (blocks)."""
    step_ms = _step_ms(step_s)
    min_ms = max(0, math.ceil(min_window_s * 1000 - 1e-6)) if math.isfinite(min_window_s) else 0
    k = max(1, -(-min_ms // step_ms))
    return k * step_ms / 1000.0


def step_starts(start: datetime, end: datetime, step_s: float) -> np.ndarray:
    """Epoch seconds of the starts of the whole aligned steps inside [start, end]: the steps
    (t, t + step] with t >= aligned start and t + step <= aligned end."""
    step_ms = _step_ms(step_s)
    lo, hi = align_window(start, end, step_s)
    lo_ms, hi_ms = _us(lo) // 1000, _us(hi) // 1000
    if hi_ms - lo_ms < step_ms:
        return np.zeros(0)
    return np.arange(lo_ms, hi_ms, step_ms, dtype=np.int64).astype(float) / 1000.0


def duration(step_s: float) -> str:
    """A PromQL range duration for a step: "60s", "1500ms"."""
    ms = _step_ms(step_s)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _iso(t: datetime) -> str:
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def no_data_reason(
    selector: str,
    start: datetime,
    end: datetime,
    *,
    has_series: bool,
    in_range: bool = False,
    window_s: float | None = None,
) -> str:
    """Why a side has no points, worded by what Prometheus holds:

    no series at all         "no data: Prometheus has no series matching <selector>"
    series, none in range    "no data in range: ... series ... but no samples between ..."
    samples, but too sparse  "no points: ... no <window> step had two samples ..."

    Only the first is "the side has no data"; the others point at the window or at the step."""
    span = f"between {_iso(start)} and {_iso(end)}"
    if not has_series:
        return (
            f"no data: Prometheus has no series matching {selector} (check the service and "
            "version labels and that Prometheus scrapes the sidecars)"
        )
    if not in_range:
        return f"no data in range: Prometheus has series matching {selector}, but no samples {span}"
    window = f"{window_s:g}s " if window_s else ""
    return (
        f"no points: series matching {selector} have samples {span}, but no {window}step "
        "had the two samples rate()/increase() need (make min_window_s at least 4x the "
        "scrape interval)"
    )


# --- values ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class CountSeries:
    """Requests and errors of one side per aligned step: ts[i] is the start of the step
    (ts[i], ts[i] + step_s] (epoch seconds). Counts are Prometheus' increase(), extrapolated to
    the step's edges, so not always integers. Steps where Prometheus has no requests series
    with two samples are absent; a step with requests but no error series has errors 0."""

    ts: np.ndarray
    errors: np.ndarray
    total: np.ndarray
    step_s: float = 0.0

    @property
    def n(self) -> int:
        return int(self.ts.size)

    @classmethod
    def empty(cls, step_s: float = 0.0) -> CountSeries:
        z = np.zeros(0)
        return cls(z, z.copy(), z.copy(), step_s)


def paired_counts(
    baseline: CountSeries, canary: CountSeries
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ts, errors_b, total_b, errors_c, total_c) on the union of both sides' steps, a step
    missing on one side counting 0 requests there: the per-block arrays that
    sequential.rate_ratio_test takes."""
    ts = np.union1d(baseline.ts, canary.ts)

    def spread(s: CountSeries) -> tuple[np.ndarray, np.ndarray]:
        e, n = np.zeros(ts.size), np.zeros(ts.size)
        idx = np.searchsorted(ts, s.ts)
        e[idx], n[idx] = s.errors, s.total
        return e, n

    eb, nb = spread(baseline)
    ec, nc = spread(canary)
    return ts, eb, nb, ec, nc


# --- I/O -------------------------------------------------------------------------------------


def _short(text: str, limit: int = 300) -> str:
    one = " ".join(str(text).split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


class PrometheusSource:
    """Prometheus' HTTP API (query_range, query, series), answering on aligned grids. Every
    failure (unreachable, timeout, HTTP error, an error answer) raises PrometheusError, so a
    Prometheus that is down never looks like a side without data."""

    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        import requests

        self.url = url.rstrip("/")
        self._timeout = float(timeout_s)
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> PrometheusSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _api(self, path: str, form: dict[str, str] | list[tuple[str, str]], what: str) -> Any:
        """POST a form to the API (queries can be long), return `data` of a success answer."""
        import requests

        try:
            resp = self._session.post(
                f"{self.url}{path}",
                data=form,
                timeout=(min(5.0, self._timeout), self._timeout + 5.0),
            )
        except requests.Timeout as exc:
            raise PrometheusError(
                self.url, f"no answer within {self._timeout:g}s ({_short(str(exc))}) for {what}"
            ) from None
        except requests.RequestException as exc:
            raise PrometheusError(
                self.url, f"unreachable ({type(exc).__name__}: {_short(str(exc))})"
            ) from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            if isinstance(body, dict) and body.get("error"):
                detail = f"{body.get('errorType', 'error')}: {body['error']}"
            else:
                detail = _short(resp.text, 200) or resp.reason
            raise PrometheusError(
                self.url, f"{path} answered HTTP {resp.status_code} ({detail}) for {what}"
            )
        return body.get("data")

    def _range(self, query: str, lo_ms: int, hi_ms: int, step_ms: int) -> list[dict[str, Any]]:
        data = self._api(
            "/api/v1/query_range",
            {
                "query": query,
                "start": f"{lo_ms / 1000:.3f}",
                "end": f"{hi_ms / 1000:.3f}",
                "step": f"{step_ms / 1000:.3f}",
                "timeout": f"{self._timeout:g}s",
            },
            f"query {_short(query, 500)}",
        )
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, list):
            raise PrometheusError(self.url, f"unexpected query_range answer for {_short(query)}")
        return result

    def series(self, query: str, start: datetime, end: datetime, step_s: float) -> Series:
        """The query evaluated at every multiple of `step_s` since the epoch in [start, end]
        (`align_window`), Series of those evaluation timestamps. Several result series (e.g.
        per pod) are summed per timestamp; NaN/Inf values (0/0 ratios, empty histograms) are
        dropped. Grids longer than MAX_POINTS_PER_QUERY are asked in several queries."""
        step_ms = _step_ms(step_s)
        lo, hi = align_window(start, end, step_s)
        lo_ms, hi_ms = _us(lo) // 1000, _us(hi) // 1000
        points: dict[int, float] = {}
        chunk = MAX_POINTS_PER_QUERY * step_ms
        a = lo_ms
        while a <= hi_ms:
            b = min(hi_ms, a + chunk - step_ms)
            for item in self._range(query, a, b, step_ms):
                for ts, value in item.get("values") or []:
                    v = float(value)
                    t = round(float(ts) * 1000)
                    if np.isfinite(v) and a <= t <= b:
                        points[t] = points.get(t, 0.0) + v
            a = b + step_ms
        keys = sorted(points)
        return Series(
            np.array(keys, dtype=np.int64).astype(float) / 1000.0,
            np.array([points[k] for k in keys], float),
        )

    def has_series(
        self,
        selector: str | Sequence[str],
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> bool:
        """Whether Prometheus holds a series matching the selector(s) (`metric{label="v"}`).

        Without start/end: anywhere in its storage (the series API), i.e. "does this side
        exist at all". With both: whether any matching series has a sample in [start, end]
        (count(last_over_time(selector[range])) at end), i.e. "is the window the problem"."""
        selectors = [selector] if isinstance(selector, str) else list(selector)
        if not selectors:
            return False
        if start is None or end is None:
            form = [("match[]", s) for s in selectors] + [("limit", "1")]
            data = self._api("/api/v1/series", form, f"series {_short(' '.join(selectors))}")
            return bool(data)
        lo, hi = _us(start) // 1000, _us(end) // 1000
        if hi < lo:
            return False
        rng = f"{max(1, hi - lo)}ms"
        query = " or ".join(f"count(last_over_time({s}[{rng}]))" for s in selectors)
        data = self._api(
            "/api/v1/query",
            {"query": query, "time": f"{hi / 1000:.3f}", "timeout": f"{self._timeout:g}s"},
            f"query {_short(query, 500)}",
        )
        result = data.get("result") if isinstance(data, dict) else None
        return bool(result)

    def explain_no_data(
        self,
        selector: str | Sequence[str],
        start: datetime,
        end: datetime,
        *,
        window_s: float | None = None,
    ) -> str:
        """`no_data_reason` for a selector that gave no points over [start, end], after asking
        Prometheus whether the series exist at all and whether they have samples there."""
        exists = self.has_series(selector)
        in_range = exists and self.has_series(selector, start, end)
        text = selector if isinstance(selector, str) else " or ".join(selector)
        return no_data_reason(
            text, start, end, has_series=exists, in_range=in_range, window_s=window_s
        )


# --- one side of an analysis -----------------------------------------------------------------


def _side_values(spec: MetricSpec, service: str, version: str, step_s: float) -> dict[str, str]:
    return {
        "service": promql_string(service),
        "version": promql_string(version),
        "interval": duration(step_s),
        "quantile": f"{spec.quantile if spec.quantile is not None else 0.99:g}",
    }


def _eval_bounds(
    start: datetime, end: datetime, step_s: float
) -> tuple[np.ndarray, datetime, datetime] | None:
    """Step starts and the first/last evaluation instants (ends of the first/last steps)."""
    starts = step_starts(start, end, step_s)
    if not starts.size:
        return None
    step_ms = _step_ms(step_s)
    first = round(starts[0] * 1000) + step_ms
    last = round(starts[-1] * 1000) + step_ms
    return starts, _at(first), _at(last)


def side_series(
    source: PrometheusSource,
    spec: MetricSpec,
    *,
    service: str,
    version: str,
    start: datetime,
    end: datetime,
    step_s: float,
    min_window_s: float = DEFAULT_MIN_WINDOW_S,
) -> Series:
    """One side's per-step values of the metric over [start, end]: one value per whole aligned
    step of `query_step(step_s, min_window_s)` seconds, labelled with the step's start and
    computed over that step alone (`${interval}` = the step). Empty when no whole step fits
    in the window or Prometheus has no points (see `side_no_data_reason`)."""
    step = query_step(step_s, min_window_s)
    bounds = _eval_bounds(start, end, step)
    if bounds is None:
        return Series(np.zeros(0), np.zeros(0))
    _, first, last = bounds
    query = render(query_for(spec), _side_values(spec, service, version, step))
    s = source.series(query, first, last, step)
    return Series(s.ts - step, s.values)


def side_counts(
    source: PrometheusSource,
    spec: MetricSpec,
    *,
    service: str,
    version: str,
    start: datetime,
    end: datetime,
    step_s: float,
    min_window_s: float = DEFAULT_MIN_WINDOW_S,
) -> CountSeries:
    """One side's requests and errors per whole aligned step (Istio's istio_requests_total,
    destination-reported), for an error_rate metric with the built-in query:

      requests  sum(increase(istio_requests_total{<side>}[step]))
      errors    the same over the error series of `error_matchers(spec)`; 0 at every step
                with requests where the side has no error series (a healthy side)

    The increase window equals the step, so steps do not overlap and their counts add up to
    the window's. Raises JudgeInputError for other kinds or a custom query."""
    if spec.kind != "error_rate" or spec.query:
        raise JudgeInputError(
            f"metric {spec.name}: request counts come from the built-in Istio error_rate "
            "query only (not from a custom query or a "
            f"{spec.kind} metric)"
        )
    step = query_step(step_s, min_window_s)
    bounds = _eval_bounds(start, end, step)
    if bounds is None:
        return CountSeries.empty(step)
    _, first, last = bounds
    values = _side_values(spec, service, version, step)
    total = source.series(render(requests_query(), values), first, last, step)
    matchers = error_matchers(spec.error_codes, spec.grpc_codes)
    errors: dict[int, float] = {}
    if matchers and total.n:
        e = source.series(render(errors_query(matchers), values), first, last, step)
        errors = {round(t * 1000): v for t, v in zip(e.ts, e.values, strict=True)}
    err = np.array([errors.get(round(t * 1000), 0.0) for t in total.ts], float)
    return CountSeries(total.ts - step, err, total.values.astype(float), step)


def side_selectors(spec: MetricSpec, *, service: str, version: str) -> list[str]:
    """The series selectors whose absence means "no data" for one side of a metric: the Istio
    metric of a built-in kind, or the selectors written in a custom query."""
    if spec.kind == "promql" or spec.query:
        query = render(spec.query, _side_values(spec, service, version, 60.0))
        return query_selectors(query)
    metric = DURATION_BUCKETS_METRIC if spec.kind == "latency" else REQUESTS_METRIC
    return [side_selector(service, version, metric)]


def side_no_data_reason(
    source: PrometheusSource,
    spec: MetricSpec,
    *,
    service: str,
    version: str,
    start: datetime,
    end: datetime,
    step_s: float,
    min_window_s: float = DEFAULT_MIN_WINDOW_S,
) -> str:
    """Why `side_series`/`side_counts` returned no points for this side (asks Prometheus)."""
    step = query_step(step_s, min_window_s)
    lo, hi = align_window(start, end, step)
    if step_starts(start, end, step).size == 0:
        return (
            f"no whole {step:g}s step between {_iso(start)} and {_iso(end)}: the window is "
            "shorter than one aligned step"
        )
    selectors = side_selectors(spec, service=service, version=version)
    if not selectors:
        query = render(query_for(spec), _side_values(spec, service, version, step))
        return f"the query returned no points between {_iso(lo)} and {_iso(hi)}: {query}"
    return source.explain_no_data(selectors, lo, hi, window_s=step)
