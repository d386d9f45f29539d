"""A deterministic layered (Sugiyama-style) layout of a directed graph. Pure.

Steps, each deterministic for the same nodes and edges whatever their input order:
  1. Cycles: a depth-first search from the roots (nodes without inbound edges, in id order),
     then from any node not reached yet, marks the edges that close a cycle (to a node on the
     current search path) as back edges; the layout ignores them. Self-loops are ignored too.
  2. Ranks: the longest path from a root over the remaining (acyclic) edges, so every edge
     points to the right (x = rank) and chains read left to right like a request's path.
  3. Long edges get a virtual point in every rank they cross, so crossings are counted and
     edges routed around the nodes in between.
  4. Order within a rank: a few barycenter sweeps (down, then up), each node placed at the
     mean position of its neighbours in the previous rank; the order with the fewest crossings
     seen is kept.
Positions: x = rank * x_gap, y centred per rank with y_gap between nodes (top to bottom).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Final

Point = tuple[float, float]
EdgeKey = tuple[str, str]

SWEEPS: Final = 4


@dataclass(frozen=True, slots=True)
class Layout:
    """Node positions, ranks, and per edge the polyline from source to target (through the
    virtual points of long edges; a back edge's route runs from its source to its target too).
    """

    positions: Mapping[str, Point] = field(default_factory=dict)
    ranks: Mapping[str, int] = field(default_factory=dict)
    routes: Mapping[EdgeKey, tuple[Point, ...]] = field(default_factory=dict)
    back_edges: frozenset[EdgeKey] = frozenset()

    @property
    def width(self) -> int:
        return max(self.ranks.values(), default=-1) + 1


def back_edges(nodes: Sequence[str], edges: Iterable[EdgeKey]) -> frozenset[EdgeKey]:
    """Edges that close a cycle in a depth-first search from the roots (ids in sorted order)."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    has_in: set[str] = set()
    for s, t in sorted(set(edges)):
        if s == t or s not in succ or t not in succ:
            continue
        succ[s].append(t)
        has_in.add(t)
    order = sorted(succ)
    roots = [n for n in order if n not in has_in]
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    back: set[EdgeKey] = set()
    for start in [*roots, *order]:
        if start in state:
            continue
        # Iterative DFS (deep chains must not hit the recursion limit).
        state[start] = 1
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, i = stack[-1]
            if i < len(succ[node]):
                stack[-1] = (node, i + 1)
                nxt = succ[node][i]
                if state.get(nxt) == 1:
                    back.add((node, nxt))
                elif nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                stack.pop()
    return frozenset(back)


def longest_path_ranks(nodes: Sequence[str], dag_edges: Iterable[EdgeKey]) -> dict[str, int]:
    """Rank = length of the longest path from a node without inbound edges (Kahn's order)."""
    succ: dict[str, list[str]] = defaultdict(list)
    indeg = dict.fromkeys(nodes, 0)
    for s, t in sorted(set(dag_edges)):
        if s in indeg and t in indeg and s != t:
            succ[s].append(t)
            indeg[t] += 1
    rank = dict.fromkeys(nodes, 0)
    ready = sorted(n for n, d in indeg.items() if d == 0)
    while ready:
        n = ready.pop(0)
        for t in succ[n]:
            rank[t] = max(rank[t], rank[n] + 1)
            indeg[t] -= 1
            if indeg[t] == 0:
                ready.append(t)
        ready.sort()
    return rank


def _crossings(layers: Sequence[Sequence[str]], succ: Mapping[str, Sequence[str]]) -> int:
    total = 0
    for upper, lower in pairwise(layers):
        pos = {n: i for i, n in enumerate(lower)}
        pairs = [(i, pos[t]) for i, n in enumerate(upper) for t in succ.get(n, ()) if t in pos]
        for a in range(len(pairs)):
            ua, la = pairs[a]
            for b in range(a + 1, len(pairs)):
                ub, lb = pairs[b]
                if (ua - ub) * (la - lb) < 0:
                    total += 1
    return total


def layered_layout(
    nodes: Iterable[str],
    edges: Iterable[EdgeKey],
    *,
    x_gap: float = 1.0,
    y_gap: float = 1.0,
    sweeps: int = SWEEPS,
) -> Layout:
    """Positions for `nodes` (ids) with `edges` (source, target); edges to unknown ids are
    ignored. The same input (in any order) always gives the same layout."""
    ids = sorted(set(nodes))
    known = set(ids)
    edge_set = sorted({(s, t) for s, t in edges if s in known and t in known})
    back = back_edges(ids, edge_set)
    dag = [(s, t) for s, t in edge_set if s != t and (s, t) not in back]
    # A back edge reversed keeps its two ends in order (source after target).
    oriented = sorted({*dag, *((t, s) for s, t in back if (t, s) not in back)})
    rank = longest_path_ranks(ids, oriented)

    # Virtual points on long edges: chain (s, v1, ..., t) with one point per rank crossed.
    chains: dict[EdgeKey, list[str]] = {}
    rank_of: dict[str, int] = dict(rank)
    succ: dict[str, list[str]] = defaultdict(list)
    pred: dict[str, list[str]] = defaultdict(list)
    for s, t in oriented:
        chain = [s]
        for r in range(rank[s] + 1, rank[t]):
            v = f"\x00{s}\x00{t}\x00{r}"  # cannot clash with a real id (ids have no NUL)
            rank_of[v] = r
            chain.append(v)
        chain.append(t)
        chains[(s, t)] = chain
        for a, b in pairwise(chain):
            succ[a].append(b)
            pred[b].append(a)

    depth = max(rank_of.values(), default=-1) + 1
    layers: list[list[str]] = [[] for _ in range(depth)]
    # Initial order: a depth-first walk from the roots, so children start near their parent.
    seen: set[str] = set()
    for root in sorted(n for n in ids if not pred.get(n)):
        stack = [root]
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            layers[rank_of[n]].append(n)
            stack.extend(reversed(sorted(succ.get(n, ()))))
    for n in sorted(rank_of):
        if n not in seen:
            layers[rank_of[n]].append(n)

    best = [list(layer) for layer in layers]
    best_cross = _crossings(best, succ)
    for _ in range(sweeps):
        if best_cross == 0:
            break
        for i in range(1, depth):  # down: by predecessors
            _order_by(layers, i, layers[i - 1], pred)
        for i in range(depth - 2, -1, -1):  # up: by successors
            _order_by(layers, i, layers[i + 1], succ)
        cross = _crossings(layers, succ)
        if cross < best_cross:
            best, best_cross = [list(layer) for layer in layers], cross

    place: dict[str, Point] = {}
    for r, layer in enumerate(best):
        mid = (len(layer) - 1) / 2
        for k, n in enumerate(layer):
            place[n] = (r * x_gap, (mid - k) * y_gap)
    routes: dict[EdgeKey, tuple[Point, ...]] = {}
    for s, t in edge_set:
        if s == t:
            routes[(s, t)] = (place[s], place[s])
        elif (s, t) in back:
            chain = chains.get((t, s), [t, s])
            routes[(s, t)] = tuple(place[n] for n in reversed(chain))
        else:
            routes[(s, t)] = tuple(place[n] for n in chains[(s, t)])
    return Layout(
        positions={n: place[n] for n in ids},
        ranks={n: rank[n] for n in ids},
        routes=routes,
        back_edges=back,
    )


def _order_by(
    layers: list[list[str]], i: int, ref: Sequence[str], neigh: Mapping[str, Sequence[str]]
) -> None:
    pos = {n: k for k, n in enumerate(ref)}
    current = {n: k for k, n in enumerate(layers[i])}

    def key(n: str) -> tuple[float, float, str]:
        ks = [pos[m] for m in neigh.get(n, ()) if m in pos]
        # A node without neighbours in `ref` keeps its place.
        return (sum(ks) / len(ks) if ks else float(current[n]), float(current[n]), n)

    layers[i].sort(key=key)
