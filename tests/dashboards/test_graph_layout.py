"""The layered layout of the Mesh page's graph (dashboards/graph_layout.py): pure."""

from __future__ import annotations

import itertools
import random

from meshlens.dashboards.graph_layout import Layout, back_edges, layered_layout


def _segment_crossings(lay: Layout) -> int:
    """Crossings between route segments that span the same pair of ranks."""
    segs = [seg for r in lay.routes.values() for seg in itertools.pairwise(r)]
    return sum(
        1
        for (p1, q1), (p2, q2) in itertools.combinations(segs, 2)
        if p1[0] == p2[0] and q1[0] == q2[0] and (p1[1] - p2[1]) * (q1[1] - q2[1]) < 0
    )


BOOKINFO = [
    ("gateway", "productpage"),
    ("unknown", "productpage"),
    ("productpage", "details"),
    ("productpage", "reviews-v1"),
    ("productpage", "reviews-v2"),
    ("productpage", "reviews-v3"),
    ("reviews-v2", "ratings"),
    ("reviews-v3", "ratings"),
    ("ratings", "mongodb"),
    ("productpage", "googleapis"),
]


def _ids(edges: list[tuple[str, str]]) -> list[str]:
    return sorted({n for e in edges for n in e})


def test_ranks_are_the_longest_path_from_the_roots() -> None:
    lay = layered_layout(_ids(BOOKINFO), BOOKINFO)
    assert lay.ranks["gateway"] == lay.ranks["unknown"] == 0  # roots: nothing calls them
    assert lay.ranks["productpage"] == 1
    assert lay.ranks["details"] == lay.ranks["reviews-v2"] == 2
    assert lay.ranks["ratings"] == 3 and lay.ranks["mongodb"] == 4
    assert lay.width == 5
    # Every edge points right (x grows with rank).
    for s, t in BOOKINFO:
        assert lay.positions[s][0] < lay.positions[t][0]


def test_a_long_edge_is_routed_through_the_ranks_it_crosses() -> None:
    edges = [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")]
    lay = layered_layout(_ids(edges), edges)
    route = lay.routes[("a", "d")]
    assert len(route) == 4  # a, two virtual points, d
    assert [p[0] for p in route] == [0.0, 1.0, 2.0, 3.0]
    assert route[0] == lay.positions["a"] and route[-1] == lay.positions["d"]
    # The virtual points do not sit on the real nodes of their ranks.
    assert route[1] != lay.positions["b"] and route[2] != lay.positions["c"]


def test_no_two_nodes_overlap() -> None:
    rng = random.Random(3)
    for _ in range(30):
        ids = [f"n{i}" for i in range(12)]
        edges = [(rng.choice(ids), rng.choice(ids)) for _ in range(20)]
        lay = layered_layout(ids, edges)
        assert set(lay.positions) == set(ids)
        assert len(set(lay.positions.values())) == len(ids)


def test_cycles_are_broken_by_ignoring_back_edges() -> None:
    edges = [("root", "a"), ("a", "b"), ("b", "c"), ("c", "a"), ("c", "c")]
    assert back_edges(_ids(edges), edges) == frozenset({("c", "a")})
    lay = layered_layout(_ids(edges), edges)
    assert lay.back_edges == frozenset({("c", "a")})
    assert [lay.ranks[n] for n in ("root", "a", "b", "c")] == [0, 1, 2, 3]
    # The back edge is still drawn, from its source to its target.
    assert lay.routes[("c", "a")][0] == lay.positions["c"]
    assert lay.routes[("c", "a")][-1] == lay.positions["a"]
    assert ("c", "c") in lay.routes  # a self-loop is kept for drawing


def test_a_graph_that_is_only_a_cycle_still_gets_a_layout() -> None:
    edges = [("x", "y"), ("y", "z"), ("z", "x")]
    lay = layered_layout(_ids(edges), edges)
    assert sorted(lay.ranks.values()) == [0, 1, 2]
    assert len(lay.back_edges) == 1


def test_the_same_graph_in_any_order_gives_the_same_layout() -> None:
    ref = layered_layout(_ids(BOOKINFO), BOOKINFO)
    rng = random.Random(7)
    for _ in range(10):
        edges = BOOKINFO[:]
        rng.shuffle(edges)
        nodes = _ids(edges)
        rng.shuffle(nodes)
        assert layered_layout(nodes, edges) == ref


def test_barycenter_sweeps_remove_crossings() -> None:
    edges = [
        ("n0", "n1"),
        ("n1", "n5"),
        ("n1", "n6"),
        ("n2", "n3"),
        ("n2", "n5"),
        ("n3", "n5"),
        ("n4", "n6"),
    ]
    ids = [f"n{i}" for i in range(7)]
    before = layered_layout(ids, edges, sweeps=0)
    after = layered_layout(ids, edges)
    assert _segment_crossings(before) >= 2
    assert _segment_crossings(after) == 0


def test_edges_to_unknown_nodes_and_empty_graphs() -> None:
    lay = layered_layout(["a"], [("a", "ghost")])
    assert lay.positions == {"a": (0.0, 0.0)} and not lay.routes
    assert layered_layout([], []) == Layout()
