"""Graph JSON -> plotly Figure and the headline numbers (dashboards/graph_figure.py): pure."""

from __future__ import annotations

from typing import Any

import pytest

from meshlens.dashboards import graph_figure as gf
from meshlens.dashboards.graph_layout import layered_layout

WINDOW = {"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-01T00:10:00+00:00"}


def _node(nid: str, ns: str, wl: str, health: str | None, **kw: Any) -> dict[str, Any]:
    return {
        "id": nid,
        "node_type": kw.pop("node_type", "workload"),
        "namespace": ns,
        "workload": wl,
        "app": wl.split("-")[0],
        "version": kw.pop("version", "v1"),
        "service": wl.split("-")[0],
        "health": health,
        "requests_in": kw.pop("requests_in", 0),
        "requests_out": kw.pop("requests_out", 0),
        "errors_in": kw.pop("errors_in", 0),
        **kw,
    }


def _edge(src: str, dst: str, n: int, **kw: Any) -> dict[str, Any]:
    return {
        "source": src,
        "target": dst,
        "protocol": kw.pop("protocol", "http"),
        "requests": n,
        "errors": kw.pop("errors", 0),
        "rps": n / 600,
        "p50_ms": 5.0,
        "p95_ms": 20.0,
        "p99_ms": 40.0,
        "mtls_ratio": kw.pop("mtls_ratio", 1.0),
        "request_bytes": kw.pop("request_bytes", 0),
        "response_bytes": kw.pop("response_bytes", 0),
        "health": kw.pop("health", "Healthy"),
        "first_seen": "2026-01-01T00:05:00+00:00",
        "last_seen": "2026-01-01T00:09:59+00:00",
        **kw,
    }


GRAPH: dict[str, Any] = {
    "window": WINDOW,
    "nodes": [
        _node("wl:istio-system/gw", "istio-system", "gw", "Healthy", requests_out=600),
        {
            "id": "unknown",
            "node_type": "unknown",
            "namespace": "unknown",
            "health": None,
            "requests_out": 60,
        },
        _node("wl:shop/front-v1", "shop", "front-v1", "Degraded", requests_in=660),
        _node("wl:shop/back-v2", "shop", "back-v2", "Failure", requests_in=1200, errors_in=240),
        {
            "id": "svc:unknown/api.example.com",
            "node_type": "service",
            "namespace": "unknown",
            "service": "api.example.com",
            "is_service_entry": True,
            "health": "NA",
        },
    ],
    "edges": [
        _edge("wl:istio-system/gw", "wl:shop/front-v1", 600),
        _edge("unknown", "wl:shop/front-v1", 60, mtls_ratio=0.0),
        _edge("wl:shop/front-v1", "wl:shop/back-v2", 1200, errors=240, health="Failure"),
        _edge(
            "wl:shop/front-v1",
            "svc:unknown/api.example.com",
            30,
            mtls_ratio=0.0,
            request_bytes=3000,
            response_bytes=9000,
        ),
        _edge("wl:shop/back-v2", "wl:shop/front-v1", 10),  # a cycle
    ],
}


def _figure(**opts: Any) -> Any:
    lay = layered_layout(
        [n["id"] for n in GRAPH["nodes"]], [(e["source"], e["target"]) for e in GRAPH["edges"]]
    )
    return gf.build_figure(GRAPH, lay, gf.FigureOptions(**opts))


def _points(fig: Any) -> dict[tuple[str, str], list[tuple[Any, str]]]:
    """(kind, id) -> [(trace, hover text)] for every clickable point."""
    out: dict[tuple[str, str], list[tuple[Any, str]]] = {}
    for tr in fig.data:
        if tr.customdata is None:
            continue
        for i, cd in enumerate(tr.customdata):
            out.setdefault((cd[0], cd[1]), []).append((tr, tr.hovertext[i]))
    return out


def test_every_node_and_edge_has_a_clickable_point() -> None:
    pts = _points(_figure())
    for n in GRAPH["nodes"]:
        assert ("node", n["id"]) in pts
    for e in GRAPH["edges"]:
        assert ("edge", f"{e['source']}>{e['target']}") in pts
    assert gf.parse_edge_key("wl:shop/front-v1>wl:shop/back-v2") == (
        "wl:shop/front-v1",
        "wl:shop/back-v2",
    )
    assert gf.parse_edge_key("wl:shop/front-v1") is None


def test_health_is_shown_by_symbol_as_well_as_colour() -> None:
    fig = _figure()
    glyph = {}
    for tr in fig.data:
        if tr.legendgroup == "health":
            glyph[tr.name] = tr.marker.symbol
            assert tr.marker.color == "#ffffff"  # the glyph, not its colour, tells
    assert glyph == {
        "healthy": "circle",
        "degraded": "triangle-up",
        "failure": "x",
        "no data": "line-ew",
    }
    assert len(set(glyph.values())) == 4
    fills = {}
    for tr in fig.data:
        if tr.legendgroup == "kinds":
            for (_, nid), colour in zip(tr.customdata, tr.marker.color, strict=True):
                fills[nid] = colour
    assert fills["wl:shop/back-v2"] == gf.HEALTH_COLOURS["failure"]
    assert fills["wl:shop/front-v1"] == gf.HEALTH_COLOURS["degraded"]


def test_kinds_have_their_own_shapes() -> None:
    kinds = {tr.name: tr.marker.symbol for tr in _figure().data if tr.legendgroup == "kinds"}
    assert kinds == {"workload": "circle", "external": "diamond", "unknown": "hexagon"}


def test_hover_text_names_the_node_and_its_numbers() -> None:
    pts = _points(_figure(seconds=300.0, latency={"wl:shop/back-v2": (3.0, 30.0, 90.0)}))
    hover = pts[("node", "wl:shop/back-v2")][0][1]
    for text in ("back-v2", "namespace: shop", "version: v1", "4.00 rps", "20.00 %", "90 ms"):
        assert text in hover
    edge = pts[("edge", "wl:shop/front-v1>wl:shop/back-v2")][0][1]
    assert "1200" in edge and "20.00 %" in edge and "40 ms" in edge and "mTLS: 100.00 %" in edge


def test_edges_have_arrows_dashes_for_plaintext_and_a_lock_for_mtls() -> None:
    fig = _figure()
    arrows = [a for a in fig.layout.annotations if a.showarrow]
    assert len(arrows) == len(GRAPH["edges"])
    dashes = {tr.line.dash for tr in fig.data if tr.mode == "lines"}
    assert dashes == {"dash", "solid"}
    mid = {tr.name: tr for tr in fig.data if tr.legendgroup == "edges"}
    lock = mid["edge: all mTLS (lock)"]
    plain = mid["edge: some plaintext"]
    assert lock.marker.symbol == gf.MTLS_SYMBOL and plain.marker.symbol == gf.PLAIN_SYMBOL
    assert ["edge", "unknown>wl:shop/front-v1"] in [list(c) for c in plain.customdata]
    assert ["edge", "wl:istio-system/gw>wl:shop/front-v1"] in [list(c) for c in lock.customdata]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("rps", "2.00 rps"), ("error %", "20.0%"), ("p99", "40 ms"), ("none", "")],
)
def test_edge_labels_follow_the_choice(choice: str, expected: str) -> None:
    fig = _figure(edge_label=choice, seconds=600.0)
    texts = {
        cd[1]: text
        for tr in fig.data
        if tr.legendgroup == "edges"
        for cd, text in zip(tr.customdata, tr.text, strict=True)
    }
    assert texts["wl:shop/front-v1>wl:shop/back-v2"] == expected


def test_throughput_is_offered_only_when_edges_carry_bytes() -> None:
    assert "throughput" in gf.label_options(GRAPH)
    no_bytes = {**GRAPH, "edges": [e for e in GRAPH["edges"] if not e["request_bytes"]]}
    assert "throughput" not in gf.label_options(no_bytes)
    pair = gf.pair_stats(GRAPH, 600.0)["wl:shop/front-v1>svc:unknown/api.example.com"]
    assert gf.pair_label(pair, "throughput") == "20 B/s"


def test_find_rings_matches_and_dims_the_rest() -> None:
    fig = _figure(find="BACK")
    ring = next(tr for tr in fig.data if tr.name == "find match")
    assert len(ring.x) == 1
    workloads = next(tr for tr in fig.data if tr.name == "workload")
    opacity = dict(zip([c[1] for c in workloads.customdata], workloads.marker.opacity, strict=True))
    assert opacity["wl:shop/back-v2"] == 1.0 and opacity["wl:shop/front-v1"] < 1.0


def test_selection_is_drawn() -> None:
    fig = _figure(selected_node="wl:shop/front-v1")
    assert any(tr.name == "selected" for tr in fig.data)
    fig = _figure(selected_edge="wl:shop/front-v1>wl:shop/back-v2")
    assert any(tr.mode == "lines" and tr.line.color == gf.SELECT_COLOUR for tr in fig.data)


def test_labels_leave_out_the_selected_namespace() -> None:
    front = GRAPH["nodes"][2]
    assert gf.node_label(front, "workload", "shop") == "front-v1"
    assert gf.node_label(front, "workload", "istio-system") == "front-v1<br><i>shop</i>"
    assert gf.home_namespace(GRAPH["nodes"], None) == "shop"  # most nodes live there
    assert gf.node_name(GRAPH["nodes"][4], "workload") == "api.example.com"


def test_hiding_a_node_drops_its_edges() -> None:
    g = gf.without(GRAPH, ["wl:shop/back-v2"])
    assert "wl:shop/back-v2" not in {n["id"] for n in g["nodes"]}
    assert all("wl:shop/back-v2" not in (e["source"], e["target"]) for e in g["edges"])
    assert len(g["edges"]) == 3


def test_requests_per_second_is_what_enters_not_every_hop() -> None:
    t = gf.totals(GRAPH, span_s=300.0)
    assert t.roots == ("unknown", "wl:istio-system/gw")
    assert t.entry_requests == 660
    assert t.entry_rps == pytest.approx(660 / 300)
    assert t.hop_requests == 600 + 60 + 1200 + 30 + 10
    assert t.entry_error_rate == 0.0
    assert t.plaintext_edges == 2
