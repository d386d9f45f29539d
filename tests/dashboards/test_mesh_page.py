"""The Mesh page (dashboards/views/mesh.py) through AppTest: the interactive graph, the details
panel, the view kept in the URL, and honest headline numbers."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from meshlens.analytics.catalog import connect

APP = str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py")
PRODUCTPAGE = "wl:bookinfo/productpage-v1"
REVIEWS_V3 = "wl:bookinfo/reviews-v3"


def _app(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: str(m.value) for m in at.metric}


def _markdown(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in at.markdown)


def _window(at: AppTest) -> tuple[datetime, datetime]:
    """The window the page says it shows: its caption 'YYYY-mm-dd HH:MM:SS → [date ]HH:MM:SS
    UTC' (the end's date only when it differs)."""
    cap = next(c.value for c in at.caption if "→" in c.value and "nodes" in c.value)
    left, right = cap.split(" UTC")[0].split(" → ")
    start = datetime.fromisoformat(left + "+00:00")
    day = "" if " " in right else f"{start:%Y-%m-%d} "
    return start, datetime.fromisoformat(f"{day}{right}+00:00")


def _figure(at: AppTest) -> dict[str, Any]:
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    return dict(json.loads(charts[0].proto.spec))


def _clickable(fig: dict[str, Any]) -> set[tuple[str, str]]:
    return {(cd[0], cd[1]) for tr in fig["data"] for cd in tr.get("customdata") or []}


def _sql(ddir: Path, sql: str, start: datetime, end: datetime) -> Any:
    conn = connect(ddir)
    try:
        params = {"start": start, "end": end} if "$start" in sql else {}
        return conn.execute(sql, params).fetchone()
    finally:
        conn.close()


def test_requests_per_second_is_the_rate_entering_the_mesh(data_env: Path) -> None:
    at = _app()
    start, end = _window(at)
    # Independently of the graph: calls (request ids) to productpage (every request entering
    # the synthetic mesh goes there: from the gateway or from outside the mesh), over the part
    # of the window the store has data for.
    (entered,) = _sql(
        data_env,
        """SELECT count(DISTINCT request_id) FROM requests
           WHERE destination_workload = 'productpage-v1' AND ts >= $start AND ts < $end""",
        start,
        end,
    )
    first, last = _sql(data_env, "SELECT min(ts), max(ts) FROM requests", start, end)
    span = (min(end, last) - max(start, first)).total_seconds()
    assert span < (end - start).total_seconds()  # the data stops before the window ends
    metrics = _metrics(at)
    shown = float(metrics["Requests/s"])
    assert shown == pytest.approx(entered / span, rel=0.01)
    assert float(metrics["Hops/s"]) > 3 * shown  # every hop would have inflated it
    assert int(metrics["Edges with plaintext"]) >= 2  # user -> productpage, the external host


def test_the_graph_is_an_interactive_plotly_chart(data_env: Path) -> None:
    at = _app()
    assert at.title[0].value.endswith("Mesh")
    fig = _figure(at)
    points = _clickable(fig)
    nodes = {i for kind, i in points if kind == "node"}
    edges = {i for kind, i in points if kind == "edge"}
    assert PRODUCTPAGE in nodes and "unknown" in nodes
    assert f"{PRODUCTPAGE}>{REVIEWS_V3}" in edges
    # The selectbox offers the same nodes and edges.
    options = set(at.selectbox(key="mesh_selected").options)
    assert "node: productpage-v1" in options
    assert "edge: productpage-v1 → reviews-v3" in options


def test_selecting_a_node_shows_its_inbound_and_outbound_traffic(data_env: Path) -> None:
    at = _app()
    assert "Select a node" in "\n".join(c.value for c in at.caption)
    t0 = time.perf_counter()
    at.selectbox(key="mesh_selected").set_value(PRODUCTPAGE).run()
    took = time.perf_counter() - t0
    assert not at.exception, [e.message for e in at.exception]
    start, end = _window(at)
    (inbound,) = _sql(
        data_env,
        """SELECT count(DISTINCT request_id) FROM requests
           WHERE destination_workload = 'productpage-v1' AND ts >= $start AND ts < $end""",
        start,
        end,
    )
    (outbound,) = _sql(
        data_env,
        """SELECT count(DISTINCT request_id) FROM requests WHERE protocol <> 'tcp'
           AND source_workload = 'productpage-v1' AND ts >= $start AND ts < $end""",
        start,
        end,
    )
    text = _markdown(at)
    assert f"**Inbound** · {inbound} requests" in text
    assert f"**Outbound** · {outbound} requests" in text
    assert "productpage-v1" in at.subheader[0].value
    assert {"In rps", "Out rps", "Error % in"} <= set(_metrics(at))
    inbound_df = next(d.value for d in at.dataframe if "source_version" in d.value.columns)
    assert any(str(s).startswith("istio-ingressgateway") for s in inbound_df["source"])
    # The selection is in the URL and ringed in the figure.
    assert at.query_params["node"] == [PRODUCTPAGE] or at.query_params["node"] == PRODUCTPAGE
    assert any(tr.get("name") == "selected" for tr in _figure(at)["data"])
    print(f"select node: {took:.2f} s")


ISTIO = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  subsets: [{name: v3, labels: {version: v3}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-only, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: ratings}}
"""


def test_an_edge_from_the_url_opens_its_details_with_errors_and_links(
    data_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "istio.yaml").write_text(ISTIO)
    monkeypatch.setenv("MESHLENS_ISTIO_CONFIG", str(tmp_path / "istio.yaml"))
    at = _app(edge=f"{PRODUCTPAGE}>{REVIEWS_V3}", labels="error %")
    assert at.selectbox(key="mesh_selected").value == f"{PRODUCTPAGE}>{REVIEWS_V3}"
    assert at.selectbox(key="mesh_labels").value == "error %"
    assert at.subheader[0].value == "productpage-v1 → reviews-v3"
    errors = next(d.value for d in at.dataframe if "response_code" in d.value.columns)
    assert len(errors) > 0 and (errors["response_code"].isin([0, 503])).all()
    assert all(str(u).startswith("traces?") for u in errors["trace"] if u)
    # Links to the other pages carry the selection.
    links = {el.proto.page: el.proto for el in at.get("page_link")}
    assert any("service" in p for p in links)
    text = _markdown(at)
    assert "degraded" in text or "failure" in text  # reviews-v3 returns 5 % 5xx
    assert "Set by **code 5XX (http)**" in text
    # The Istio config that applies to the target: the reviews DestinationRule, not the
    # policy that selects ratings.
    config = [e.label for e in at.expander]
    assert any(lbl.startswith("DestinationRule bookinfo/reviews · host reviews") for lbl in config)
    assert not any("ratings-only" in lbl for lbl in config)


def test_level_namespace_and_hidden_nodes_come_back_from_the_url(data_env: Path) -> None:
    at = _app(level="app", ns="bookinfo", hide="unknown", node="app:bookinfo/reviews")
    assert at.selectbox(key="mesh_level").value == "app"
    assert at.selectbox(key="mesh_namespace").value == "bookinfo"
    assert at.multiselect(key="mesh_hide").value == ["unknown"]
    assert at.selectbox(key="mesh_selected").value == "app:bookinfo/reviews"
    nodes = {i for kind, i in _clickable(_figure(at)) if kind == "node"}
    assert "unknown" not in nodes and "app:bookinfo/reviews" in nodes
    # Changing the view writes it back.
    at.selectbox(key="mesh_level").set_value("workload").run()
    assert not at.exception
    assert "level" not in at.query_params  # the default is left out of the URL
    assert at.query_params["ns"] in ("bookinfo", ["bookinfo"])


def test_an_empty_store_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHLENS_DATA_DIR", str(tmp_path))
    at = _app()
    assert "No traffic in the store yet" in "\n".join(i.value for i in at.info)
    assert len(at.get("plotly_chart")) == 0


def test_namespace_and_level_change_the_graph(data_env: Path) -> None:
    at = _app()
    full = {i for kind, i in _clickable(_figure(at)) if kind == "edge"}
    at.selectbox(key="mesh_namespace").set_value("istio-system").run()
    assert not at.exception
    narrowed = {i for kind, i in _clickable(_figure(at)) if kind == "edge"}
    assert narrowed and narrowed < full  # only the gateway's edges
    assert all("istio-system" in e for e in narrowed)
    at.selectbox(key="mesh_namespace").set_value("All")
    at.selectbox(key="mesh_level").set_value("app").run()
    assert not at.exception
    nodes = {i for kind, i in _clickable(_figure(at)) if kind == "node"}
    assert "app:bookinfo/reviews" in nodes and not any(n.startswith("wl:") for n in nodes)


def test_a_link_to_a_node_without_traffic_says_so(data_env: Path) -> None:
    at = _app(node="wl:nowhere/ghost-v1")
    assert at.selectbox(key="mesh_selected").value == ""
    assert any("wl:nowhere/ghost-v1" in i.value for i in at.info)
