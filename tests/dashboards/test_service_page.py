"""The Service page and the shared time range through AppTest: the service and the range come
from the URL and go back to it, rates are over the data's own span, chart buckets are whole,
the response code x flags heat map draws the seeded codes, health reads without colour."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from meshlens.dashboards import data
from tests.dashboards.test_app import APP, _frame

PAGE = "views/service.py"


def _service_page(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _charts(at: AppTest) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """Every Vega-Lite chart on the page: its spec and its data."""
    out = []
    for el in at.get("vega_lite_chart"):
        spec = json.loads(el.proto.spec)
        frames = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in el.proto.datasets]
        out.append((spec, frames[0] if frames else pd.DataFrame()))
    return out


def _extent(ddir: Path) -> tuple[datetime, datetime]:
    extent = data.time_extent(str(ddir))
    assert extent is not None
    return extent


def test_service_comes_from_the_url_and_goes_back_to_it(data_env: Path) -> None:
    at = _service_page(service="ratings")
    assert at.selectbox(key="service_name").value == "ratings"
    inbound = _frame(at, "source_workload", "rps")
    assert set(inbound["source_workload"]) == {"reviews-v2", "reviews-v3"}
    assert at.query_params["service"] == "ratings"

    at.selectbox(key="service_name").set_value("details").run()
    assert not at.exception
    assert at.query_params["service"] == "details"
    assert set(_frame(at, "source_workload", "rps")["source_workload"]) == {"productpage-v1"}


def test_a_service_without_traffic_in_the_url_is_said_so(data_env: Path) -> None:
    at = _service_page(service="nosuch")
    assert at.selectbox(key="service_name").value == "nosuch"
    assert any("no requests in this time range" in w.value for w in at.warning)


def test_absolute_range_in_the_url_selects_that_range(data_env: Path) -> None:
    _first, last = _extent(data_env)
    start = (last - timedelta(minutes=40)).replace(second=0, microsecond=0)
    end = start + timedelta(minutes=30)
    iso = "%Y-%m-%dT%H:%M:%SZ"
    at = _service_page(**{"from": start.strftime(iso), "to": end.strftime(iso)})
    assert at.radio(key="range_mode").value == "Absolute"
    assert at.datetime_input(key="range_from").value == start.replace(tzinfo=None)
    assert at.datetime_input(key="range_to").value == end.replace(tzinfo=None)
    assert at.selectbox(key="refresh").disabled  # an absolute range does not follow now
    assert at.query_params["from"] == start.strftime(iso)
    assert at.query_params["to"] == end.strftime(iso)
    assert "last" not in at.query_params
    # The page works on exactly that range: 30 minutes of data.
    caption = next(c.value for c in at.caption if c.value.startswith("req/s over"))
    assert f"the 30 min of data in this range ({start:%H:%M:%S} → {end:%H:%M:%S} UTC)" in caption

    # Back to relative: `last` replaces from/to in the URL.
    at.radio(key="range_mode").set_value("Relative").run()
    at.selectbox(key="range_last").set_value("1h").run()
    assert not at.exception
    assert at.query_params["last"] == "1h"
    assert "from" not in at.query_params and "to" not in at.query_params


def test_from_after_to_is_rejected_with_a_clear_message(data_env: Path) -> None:
    at = _service_page(**{"from": "2026-03-01T12:00:00Z", "to": "2026-03-01T11:00:00Z"})
    errors = [e.value for e in at.sidebar.error]
    assert any("must be before" in e and "last 15m" in e for e in errors), errors
    assert at.radio(key="range_mode").value == "Relative"

    # Absolute starts from the range shown; picking to <= from keeps it and says so.
    at.radio(key="range_mode").set_value("Absolute").run()
    start = at.datetime_input(key="range_from").value
    end = at.datetime_input(key="range_to").value
    assert isinstance(start, datetime) and isinstance(end, datetime)
    assert end - start == timedelta(minutes=15)
    shown = f"{start:%Y-%m-%d %H:%M:%S} → {end:%Y-%m-%d %H:%M:%S} UTC"
    at.datetime_input(key="range_to").set_value(start - timedelta(hours=1)).run()
    assert not at.exception
    errors = [e.value for e in at.sidebar.error]
    assert any("must be before" in e and f"still show {shown}" in e for e in errors), errors
    assert at.query_params["to"] == f"{end:%Y-%m-%dT%H:%M:%S}Z"


def test_rps_is_over_the_data_span_not_the_window(data_env: Path) -> None:
    # The store holds about 58 minutes; a 6 h window must not divide by 6 h.
    at = _service_page(service="reviews", last="6h")
    first, last = _extent(data_env)
    span_s = (last - first).total_seconds()
    assert 3000 < span_s < 3600
    inbound = _frame(at, "source_workload", "rps")
    outbound = _frame(at, "destination_service", "rps")
    for table in (inbound, outbound):
        for requests, rps in zip(table["requests"], table["rps"], strict=True):
            assert rps == pytest.approx(requests / span_s, rel=0.01, abs=0.001)
            assert rps > 5 * requests / 21600


def test_golden_signal_buckets_are_whole(data_env: Path) -> None:
    at = _service_page(service="reviews", last="1h")
    first, last = _extent(data_env)
    rps = next(df for spec, df in _charts(at) if "rps" in df.columns)
    buckets = pd.to_datetime(rps["bucket"], utc=True)
    assert len(buckets.unique()) > 30
    step = int(pd.Series(sorted(buckets.unique())).diff().min().total_seconds())
    assert any(f"step {step}s" in c.value for c in at.caption)
    assert all(b.timestamp() % step == 0 for b in buckets)
    # Neither the bucket the data starts inside of nor the one holding its end is drawn.
    assert buckets.min() >= first
    assert buckets.max() + timedelta(seconds=step) <= last
    # So no false dip at the end: the last bucket's rate is like the others.
    per_bucket = rps.groupby("bucket")["rps"].sum()
    assert per_bucket.iloc[-1] > 0.5 * per_bucket.median()


def test_heat_map_draws_the_seeded_codes(data_env: Path) -> None:
    at = _service_page(service="reviews", last="1h")
    heat = [
        (spec, df)
        for spec, df in _charts(at)
        if "layer" in spec and spec["layer"][0]["mark"]["type"] == "rect"
    ]
    assert len(heat) == 1
    spec, df = heat[0]
    assert {"200", "503"} <= set(df["response_code"].astype(str))
    assert (df["requests"] > 0).all()
    enc = spec["layer"][0]["encoding"]
    assert enc["x"]["title"] == "response flags" and enc["y"]["title"] == "response code"
    assert {"title": "requests", "field": "requests"}.items() <= next(
        t for t in enc["tooltip"] if t["field"] == "requests"
    ).items()
    assert spec["height"] == {"step": 44}  # a band per code, not a squeezed pixel height
    # The same counts as the table below it.
    pivot = _frame(at, "response_code")
    assert int(pivot.sum().sum()) == int(df["requests"].sum())


def test_health_is_a_word_and_an_icon_not_only_a_colour(data_env: Path) -> None:
    at = _service_page(service="reviews", last="1h")
    badges = [m.value for m in at.main.markdown if "-badge[" in m.value]
    assert len(badges) == 1
    assert any(word in badges[0] for word in ("Healthy", "Degraded", "Failure", "No traffic"))
    assert ":material/" in badges[0]
    assert any("inbound requests" in c.value for c in at.caption)


def test_service_page_on_an_old_store_says_where_the_data_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.dashboards.conftest import seed

    seed(tmp_path, datetime.now(UTC) - timedelta(days=2), n=500)
    monkeypatch.setenv("MESHLENS_DATA_DIR", str(tmp_path))
    at = _service_page(last="7d")
    assert any("Data covers" in i.value for i in at.sidebar.info)
    inbound = _frame(at, "source_workload", "rps")
    assert (inbound["rps"] > 0).all()
    # The chart step follows the hour of data, not the 7 days: there are whole buckets.
    rps = next(df for spec, df in _charts(at) if "rps" in df.columns)
    assert len(rps["bucket"].unique()) > 30


def test_the_service_survives_a_visit_to_another_page(data_env: Path) -> None:
    at = _service_page(service="ratings")
    at.switch_page("views/routing.py").run()
    assert not at.exception
    at.query_params.pop("service", None)  # page links carry no service
    at.switch_page(PAGE).run()
    assert not at.exception
    assert at.selectbox(key="service_name").value == "ratings"


def test_an_absolute_range_with_seconds_stays_exact(data_env: Path) -> None:
    at = _service_page(**{"from": "2026-03-01T10:00:17Z", "to": "2026-03-01T10:30:45Z"})
    at.run()  # a second run with the pickers drawn must not round the range
    assert not at.exception
    assert at.query_params["from"] == "2026-03-01T10:00:17Z"
    assert at.query_params["to"] == "2026-03-01T10:30:45Z"
    # Outside the data: the sidebar says so and shows the store's extent.
    assert any("No data in this range" in w.value for w in at.sidebar.warning)


def test_picking_an_absolute_range_and_back(data_env: Path) -> None:
    at = _service_page(**{"from": "2026-03-01T10:00:17Z", "to": "2026-03-01T10:30:45Z"})
    at.datetime_input(key="range_to").set_value(datetime(2026, 3, 1, 11, 0)).run()
    assert at.query_params["from"] == "2026-03-01T10:00:00Z"
    assert at.query_params["to"] == "2026-03-01T11:00:00Z"
    at.datetime_input(key="range_to").set_value(datetime(2026, 3, 1, 10, 30)).run()
    assert not at.exception
    assert at.query_params["to"] == "2026-03-01T10:30:00Z"
