"""dashboards.dot: graph JSON -> DOT (pure)."""

from __future__ import annotations

from meshlens.dashboards.dot import HEALTH_COLOURS, LOCK, edge_label, to_dot

GRAPH = {
    "nodes": [
        {
            "id": "a",
            "namespace": "ns",
            "workload": "front-v1",
            "app": "front",
            "version": "v1",
            "health": "healthy",
        },
        {
            "id": "b",
            "namespace": "ns",
            "workload": 'back"v2',
            "app": "back",
            "version": "v2",
            "health": {"status": "failure"},
        },
        {"id": "c", "namespace": "unknown", "workload": "unknown", "health": None},
    ],
    "edges": [
        {
            "source": "a",
            "target": "b",
            "protocol": "http",
            "rps": 1.5,
            "error_rate": 0.2,
            "p95_ms": 42.0,
            "mtls_ratio": 1.0,
        },
        {
            "source": "c",
            "target": "a",
            "protocol": "http",
            "rps": 0.1,
            "error_rate": 0.0,
            "p95_ms": 3.0,
            "mtls_ratio": 0.0,
        },
        {"source": "a", "target": "zz", "protocol": "http"},  # dangling: dropped
    ],
}


def test_nodes_are_filled_by_health_and_quotes_are_escaped() -> None:
    dot = to_dot(GRAPH)
    assert dot.startswith("digraph mesh {") and dot.endswith("}")
    assert HEALTH_COLOURS["healthy"] in dot and HEALTH_COLOURS["failure"] in dot
    assert 'back\\"v2' in dot
    assert dot.count("->") == 2


def test_edges_show_rate_errors_p95_lock_and_dashed_plaintext() -> None:
    dot = to_dot(GRAPH)
    secure = next(line for line in dot.splitlines() if '"a" -> "b"' in line)
    plain = next(line for line in dot.splitlines() if '"c" -> "a"' in line)
    assert LOCK in secure and "style=solid" in secure
    assert "1.50 rps" in secure and "20.0% err" in secure and "p95 42 ms" in secure
    assert LOCK not in plain and "style=dashed" in plain


def test_partial_mtls_shows_its_share() -> None:
    assert f"{LOCK} 40%" in edge_label({"rps": 1, "error_rate": 0, "p95_ms": 1, "mtls_ratio": 0.4})


def test_levels_label_nodes_differently() -> None:
    assert "front v1" in to_dot(GRAPH, level="versioned-app")
    assert "front-v1" in to_dot(GRAPH, level="workload")


def test_big_graphs_keep_the_busiest_nodes() -> None:
    nodes = [{"id": f"n{i}", "requests_in": i, "requests_out": 0} for i in range(400)]
    dot = to_dot({"nodes": nodes, "edges": []})
    assert '"n399"' in dot and '"n100"' in dot and '"n99"' not in dot
