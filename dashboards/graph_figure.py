"""Service graph JSON (analytics.graph) -> an interactive plotly Figure, and the graph's headline
numbers. Pure: no Streamlit, so it is tested on plain dicts.

Nodes: the marker's shape tells the kind (workload, app, service, external host, unknown), its
fill and an inner glyph the health (a dot when healthy, a warning triangle when degraded, a cross
on failure, a dash for no data), so health does not rest on colour alone. Edges: a line with an
arrow head at the target, dashed when some of the traffic is plaintext, and at its midpoint a
clickable point: a square (the lock) when all of it is mutual TLS, an open circle otherwise.
Every node and edge point carries `customdata = [kind, id]` ("node", node id) or
("edge", "source>target"), which is what a click selection returns.

Rates: the graph's own rps are requests / window length; `seconds` (the data's span within the
window) gives rates over the time traffic was actually seen.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import plotly.graph_objects as go

from meshlens.dashboards.graph_layout import Layout, Point

EDGE_SEP: Final = ">"

HEALTH_COLOURS: Final = {
    "healthy": "#3e8635",
    "degraded": "#f0ab00",
    "failure": "#c9190b",
    "nodata": "#b8bbbe",
}
HEALTH_LABELS: Final = {
    "healthy": "healthy",
    "degraded": "degraded",
    "failure": "failure",
    "nodata": "no data",
}
# The glyph drawn inside a node: health readable without colour.
HEALTH_GLYPHS: Final = {
    "healthy": "circle",
    "degraded": "triangle-up",
    "failure": "x",
    "nodata": "line-ew",
}
KIND_SYMBOLS: Final = {
    "workload": "circle",
    "app": "square",
    "service": "triangle-up",
    "external": "diamond",
    "unknown": "hexagon",
}
MTLS_SYMBOL: Final = "square"  # the lock mark at an all-mTLS edge's midpoint
PLAIN_SYMBOL: Final = "circle-open"
EDGE_LABELS: Final = ("none", "rps", "error %", "p50", "p95", "p99", "throughput")
SELECT_COLOUR: Final = "#0066cc"
FIND_COLOUR: Final = "#8f4700"
NODE_SIZE: Final = 26


# A halo keeps a label readable where an edge runs under it (the app uses a light theme).
LABEL_HALO: Final = "0 0 2px white, 0 0 3px white, 0 0 4px white"


def num(value: Any) -> float | None:
    """A finite float, or None."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def edge_key(source: str, target: str) -> str:
    return f"{source}{EDGE_SEP}{target}"


def parse_edge_key(text: str) -> tuple[str, str] | None:
    src, sep, dst = str(text).partition(EDGE_SEP)
    return (src, dst) if sep and src and dst else None


def health_of(item: Mapping[str, Any]) -> str:
    """healthy | degraded | failure | nodata from a node's or edge's `health`."""
    h = item.get("health")
    if isinstance(h, Mapping):
        h = h.get("status")
    text = str(h or "").lower()
    if text in ("healthy", "degraded", "failure"):
        return text
    return "failure" if text == "unhealthy" else "nodata"


def node_kind(node: Mapping[str, Any]) -> str:
    if node.get("is_service_entry"):
        return "external"
    t = str(node.get("node_type") or "")
    if t == "unknown" or node.get("id") == "unknown":
        return "unknown"
    return t if t in KIND_SYMBOLS else "unknown"


def _known(v: Any) -> str:
    text = str(v or "")
    return "" if text in ("", "unknown") else text


def node_name(node: Mapping[str, Any], level: str) -> str:
    """The name a person looks for: workload, app (with version), service or host."""
    t = node.get("node_type")
    nid = str(node.get("id") or "")
    if t == "unknown" or nid == "unknown":
        return "unknown"
    if t == "virtual":
        return nid.removeprefix("virtual:")
    if t == "service":
        return _known(node.get("service")) or nid.rpartition("/")[2]
    if t == "app":
        name = _known(node.get("app")) or nid.rpartition("/")[2]
        version = _known(node.get("version"))
        if level == "versioned-app" and version and not name.endswith(f"/{version}"):
            return f"{name} {version}"
        return name.replace("/", " ")
    return _known(node.get("workload")) or nid.rpartition("/")[2]


def home_namespace(nodes: Sequence[Mapping[str, Any]], selected: str | None) -> str:
    """The namespace labels leave out: the selected one, else the one most nodes are in."""
    if selected:
        return selected
    counts: dict[str, int] = defaultdict(int)
    for n in nodes:
        ns = _known(n.get("namespace"))
        if ns:
            counts[ns] += 1
    return max(sorted(counts), key=lambda k: counts[k], default="")


def node_label(node: Mapping[str, Any], level: str, home_ns: str) -> str:
    name = node_name(node, level)
    ns = _known(node.get("namespace"))
    return f"{name}<br><i>{ns}</i>" if ns and ns != home_ns else name


@dataclass(frozen=True, slots=True)
class PairStats:
    """All edges between one source and one target (one per protocol), as one."""

    source: str
    target: str
    protocols: tuple[str, ...]
    requests: int  # HTTP/gRPC requests
    connections: int  # TCP connections
    errors: int
    bytes: int
    rps: float
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    throughput_bps: float
    mtls_ratio: float | None
    health: str

    @property
    def key(self) -> str:
        return edge_key(self.source, self.target)


def _rate_seconds(graph: Mapping[str, Any], seconds: float | None) -> float:
    if seconds and seconds > 0:
        return float(seconds)
    window = graph.get("window") or {}
    try:
        start = datetime.fromisoformat(str(window.get("start")))
        end = datetime.fromisoformat(str(window.get("end")))
        return max((end - start).total_seconds(), 1e-9)
    except (TypeError, ValueError):
        return 1.0


def pair_stats(graph: Mapping[str, Any], seconds: float | None = None) -> dict[str, PairStats]:
    """Edges grouped by (source, target): counts summed; latency from the request protocol with
    the most requests (quantiles do not add up); health the worst of the protocols."""
    secs = _rate_seconds(graph, seconds)
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for e in graph.get("edges", []):
        groups[(str(e.get("source")), str(e.get("target")))].append(e)
    out: dict[str, PairStats] = {}
    rank = {"nodata": 0, "healthy": 1, "degraded": 2, "failure": 3}
    for (s, t), es in sorted(groups.items()):
        req = [e for e in es if e.get("protocol") != "tcp"]
        tcp = [e for e in es if e.get("protocol") == "tcp"]
        n = sum(int(e.get("requests") or 0) for e in req)
        errors = sum(int(e.get("errors") or 0) for e in req)
        total = sum(int(e.get("requests") or 0) for e in es)
        mtls = sum((num(e.get("mtls_ratio")) or 0.0) * int(e.get("requests") or 0) for e in es)
        nbytes = sum(
            int(e.get("request_bytes") or 0) + int(e.get("response_bytes") or 0) for e in es
        )
        main = max(req, key=lambda e: int(e.get("requests") or 0), default=None)
        out[edge_key(s, t)] = PairStats(
            source=s,
            target=t,
            protocols=tuple(sorted({str(e.get("protocol")) for e in es})),
            requests=n,
            connections=sum(int(e.get("requests") or 0) for e in tcp),
            errors=errors,
            bytes=nbytes,
            rps=n / secs,
            error_rate=errors / n if n else None,
            p50_ms=num(main.get("p50_ms")) if main else None,
            p95_ms=num(main.get("p95_ms")) if main else None,
            p99_ms=num(main.get("p99_ms")) if main else None,
            throughput_bps=nbytes / secs,
            mtls_ratio=mtls / total if total else None,
            health=max((health_of(e) for e in es), key=lambda h: rank[h], default="nodata"),
        )
    return out


def has_throughput(graph: Mapping[str, Any]) -> bool:
    return any(
        int(e.get("request_bytes") or 0) + int(e.get("response_bytes") or 0) > 0
        for e in graph.get("edges", [])
    )


def label_options(graph: Mapping[str, Any]) -> list[str]:
    """Edge label choices; throughput only when the edges carry byte counts."""
    return [o for o in EDGE_LABELS if o != "throughput" or has_throughput(graph)]


def human_bytes(bps: float) -> str:
    for unit in ("B/s", "KB/s", "MB/s", "GB/s"):
        if abs(bps) < 1000 or unit == "GB/s":
            return f"{bps:.0f} {unit}" if unit == "B/s" else f"{bps:.1f} {unit}"
        bps /= 1000
    return f"{bps:.1f} GB/s"  # pragma: no cover


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms" if v >= 10 else f"{v:.1f} ms"


def pair_label(p: PairStats, choice: str) -> str:
    if choice == "rps":
        return f"{p.rps:.2f} rps" if p.requests else ""
    if choice == "error %":
        return "" if p.error_rate is None else f"{100 * p.error_rate:.1f}%"
    if choice in ("p50", "p95", "p99"):
        v = getattr(p, f"{choice}_ms")
        return "" if v is None else _ms(v)
    if choice == "throughput":
        return human_bytes(p.throughput_bps)
    return ""


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f} %"


def pair_hover(p: PairStats, names: Mapping[str, str]) -> str:
    lines = [
        f"<b>{names.get(p.source, p.source)} → {names.get(p.target, p.target)}</b>",
        f"protocol: {', '.join(p.protocols)}",
    ]
    if p.requests:
        lines += [
            f"requests: {p.requests} ({p.rps:.2f} rps)",
            f"errors: {p.errors} ({_pct(p.error_rate)})",
            f"p50 / p95 / p99: {_ms(p.p50_ms)} / {_ms(p.p95_ms)} / {_ms(p.p99_ms)}",
        ]
    if p.connections:
        lines.append(f"tcp connections: {p.connections}")
    if p.bytes:
        lines.append(f"throughput: {human_bytes(p.throughput_bps)}")
    lines.append(f"mTLS: {_pct(p.mtls_ratio)}")
    lines.append(f"health: {HEALTH_LABELS[p.health]}")
    return "<br>".join(lines)


@dataclass(frozen=True, slots=True)
class NodeStats:
    rps_in: float
    rps_out: float
    requests_in: int
    requests_out: int
    error_rate_in: float | None
    latency: tuple[float | None, float | None, float | None] = (None, None, None)


def node_stats(
    graph: Mapping[str, Any],
    seconds: float | None = None,
    latency: Mapping[str, Sequence[float | None]] | None = None,
) -> dict[str, NodeStats]:
    secs = _rate_seconds(graph, seconds)
    out: dict[str, NodeStats] = {}
    for n in graph.get("nodes", []):
        nid = str(n.get("id"))
        rin, rout = int(n.get("requests_in") or 0), int(n.get("requests_out") or 0)
        errs = int(n.get("errors_in") or 0)
        q = list((latency or {}).get(nid) or (None, None, None))[:3]
        q += [None] * (3 - len(q))
        out[nid] = NodeStats(
            rps_in=rin / secs,
            rps_out=rout / secs,
            requests_in=rin,
            requests_out=rout,
            error_rate_in=errs / rin if rin else None,
            latency=(num(q[0]), num(q[1]), num(q[2])),
        )
    return out


def node_hover(node: Mapping[str, Any], st: NodeStats, level: str) -> str:
    p50, p95, p99 = st.latency
    lines = [
        f"<b>{node_name(node, level)}</b>",
        f"namespace: {node.get('namespace') or '-'}",
        f"version: {node.get('version') or '-'}",
        f"kind: {node_kind(node)}",
        f"health: {HEALTH_LABELS[health_of(node)]}",
        f"in: {st.rps_in:.2f} rps · out: {st.rps_out:.2f} rps",
        f"errors in: {_pct(st.error_rate_in)}",
        f"p50 / p95 / p99 in: {_ms(p50)} / {_ms(p95)} / {_ms(p99)}",
    ]
    return "<br>".join(lines)


# -- headline numbers ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Totals:
    """What enters the mesh (edges out of the graph's roots) versus every hop."""

    span_s: float  # the part of the window with data (first..last request seen in it)
    entry_requests: int
    entry_errors: int
    hop_requests: int
    plaintext_edges: int
    roots: tuple[str, ...] = field(default_factory=tuple)

    @property
    def entry_rps(self) -> float:
        return self.entry_requests / self.span_s if self.span_s > 0 else 0.0

    @property
    def hop_rps(self) -> float:
        return self.hop_requests / self.span_s if self.span_s > 0 else 0.0

    @property
    def entry_error_rate(self) -> float | None:
        return self.entry_errors / self.entry_requests if self.entry_requests else None


def roots(graph: Mapping[str, Any]) -> list[str]:
    """Nodes without inbound edges (ingress gateways, `unknown` callers): where requests enter."""
    targets = {str(e.get("target")) for e in graph.get("edges", [])}
    return sorted(
        str(n.get("id")) for n in graph.get("nodes", []) if str(n.get("id")) not in targets
    )


def totals(graph: Mapping[str, Any], span_s: float) -> Totals:
    """Entry requests = requests on edges out of the roots (HTTP/gRPC), every hop's too;
    `span_s`: the seconds the window has data for (rates divide by it)."""
    root_ids = set(roots(graph))
    req = [e for e in graph.get("edges", []) if e.get("protocol") != "tcp"]
    entry = [e for e in req if str(e.get("source")) in root_ids]
    return Totals(
        span_s=float(span_s),
        entry_requests=sum(int(e.get("requests") or 0) for e in entry),
        entry_errors=sum(int(e.get("errors") or 0) for e in entry),
        hop_requests=sum(int(e.get("requests") or 0) for e in req),
        plaintext_edges=sum(
            1 for e in graph.get("edges", []) if (num(e.get("mtls_ratio")) or 0.0) < 0.999
        ),
        roots=tuple(sorted(root_ids)),
    )


# -- filtering -----------------------------------------------------------------------------
def without(graph: Mapping[str, Any], hidden: Iterable[str]) -> dict[str, Any]:
    """The graph without the `hidden` nodes and their edges."""
    gone = set(hidden)
    return {
        **graph,
        "nodes": [n for n in graph.get("nodes", []) if str(n.get("id")) not in gone],
        "edges": [
            e
            for e in graph.get("edges", [])
            if str(e.get("source")) not in gone and str(e.get("target")) not in gone
        ],
    }


def matches(node: Mapping[str, Any], text: str, level: str) -> bool:
    """Find: case-insensitive substring of the id, name, namespace, app, version or service."""
    t = text.strip().lower()
    if not t:
        return False
    fields = [node.get(k) for k in ("id", "namespace", "workload", "app", "version", "service")]
    fields.append(node_name(node, level))
    return any(t in str(f or "").lower() for f in fields)


# -- the figure ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FigureOptions:
    level: str = "workload"
    namespace: str | None = None  # the selected namespace (labels leave it out)
    edge_label: str = "none"
    find: str = ""
    selected_node: str | None = None
    selected_edge: str | None = None  # "source>target"
    seconds: float | None = None  # rate denominator: the data span (None: the window)
    latency: Mapping[str, Sequence[float | None]] = field(default_factory=dict)
    height: int | None = None


def _edge_colour(health: str) -> str:
    return {"degraded": "#c58c00", "failure": "#c9190b"}.get(health, "#6a6e73")


def _polyline_mid(points: Sequence[Point]) -> Point:
    """The point halfway along a polyline."""
    lengths = [math.dist(a, b) for a, b in itertools.pairwise(points)]
    half = sum(lengths) / 2
    for (a, b), seg in zip(itertools.pairwise(points), lengths, strict=True):
        if half <= seg and seg > 0:
            f = half / seg
            return (a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]))
        half -= seg
    return points[len(points) // 2]


def _offset(points: Sequence[Point], d: float) -> list[Point]:
    """The polyline shifted sideways by `d` (two edges in opposite directions stay apart)."""
    (x0, y0), (x1, y1) = points[0], points[-1]
    length = math.hypot(x1 - x0, y1 - y0) or 1.0
    nx, ny = -(y1 - y0) / length * d, (x1 - x0) / length * d
    return [(x + nx, y + ny) for x, y in points]


def _loop(p: Point) -> list[Point]:
    x, y = p
    return [(x, y), (x + 0.12, y + 0.2), (x, y + 0.3), (x - 0.12, y + 0.2), (x, y)]


def edge_routes(graph: Mapping[str, Any], layout: Layout) -> dict[str, list[Point]]:
    """The drawn polyline of each (source, target) pair."""
    pairs = {(str(e.get("source")), str(e.get("target"))) for e in graph.get("edges", [])}
    out: dict[str, list[Point]] = {}
    for s, t in sorted(pairs):
        if s not in layout.positions or t not in layout.positions:
            continue
        if s == t:
            out[edge_key(s, t)] = _loop(layout.positions[s])
            continue
        route = list(layout.routes.get((s, t)) or (layout.positions[s], layout.positions[t]))
        if (t, s) in pairs:
            route = _offset(route, 0.06)
        out[edge_key(s, t)] = route
    return out


def build_figure(graph: Mapping[str, Any], layout: Layout, options: FigureOptions) -> go.Figure:
    """The interactive figure of `graph` (already without hidden nodes) placed by `layout`."""
    level = options.level
    nodes = [n for n in graph.get("nodes", []) if str(n.get("id")) in layout.positions]
    names = {str(n.get("id")): node_name(n, level) for n in nodes}
    pairs = pair_stats(graph, options.seconds)
    stats = node_stats(graph, options.seconds, options.latency)
    routes = edge_routes(graph, layout)
    fig = go.Figure()

    # Edge lines, one trace per (style, colour, selected): few traces, one hover point each.
    lines: dict[tuple[str, str, bool], tuple[list[float | None], list[float | None]]] = {}
    annotations: list[dict[str, Any]] = []
    mids: dict[bool, list[tuple[Point, PairStats]]] = {True: [], False: []}
    for key, route in routes.items():
        p = pairs[key]
        plain = p.mtls_ratio is None or p.mtls_ratio < 0.999
        selected = options.selected_edge == key
        colour = SELECT_COLOUR if selected else _edge_colour(p.health)
        xs, ys = lines.setdefault(("dash" if plain else "solid", colour, selected), ([], []))
        for x, y in route:
            xs.append(x)
            ys.append(y)
        xs.append(None)
        ys.append(None)
        if p.source != p.target:
            (ax, ay), (x, y) = route[-2], route[-1]
            annotations.append(
                {
                    "x": x,
                    "y": y,
                    "ax": ax + 0.75 * (x - ax),
                    "ay": ay + 0.75 * (y - ay),
                    "xref": "x",
                    "yref": "y",
                    "axref": "x",
                    "ayref": "y",
                    "showarrow": True,
                    "arrowhead": 2,
                    "arrowsize": 1.2,
                    "arrowwidth": 2.5 if selected else 1.5,
                    "arrowcolor": colour,
                    "standoff": NODE_SIZE / 2 + 2,
                    "text": "",
                }
            )
        mids[not plain].append((_polyline_mid(route), p))
    for (dash, colour, selected), (xs, ys) in sorted(lines.items(), key=lambda kv: repr(kv[0])):
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                line={"color": colour, "width": 3.5 if selected else 1.6, "dash": dash},
                hoverinfo="skip",
                showlegend=False,
                name="edges",
            )
        )
    for secure, items in ((True, mids[True]), (False, mids[False])):
        if not items:
            continue
        fig.add_trace(
            go.Scatter(
                x=[pt[0] for pt, _ in items],
                y=[pt[1] for pt, _ in items],
                mode="markers+text" if options.edge_label != "none" else "markers",
                text=[pair_label(p, options.edge_label) for _, p in items],
                textposition="top center",
                textfont={"size": 10, "color": "#4f5255", "shadow": LABEL_HALO},
                marker={
                    "symbol": MTLS_SYMBOL if secure else PLAIN_SYMBOL,
                    "size": [13 if options.selected_edge == p.key else 8 for _, p in items],
                    "color": [
                        SELECT_COLOUR if options.selected_edge == p.key else "#4f5255"
                        for _, p in items
                    ],
                    "line": {"width": 1, "color": "#4f5255"},
                },
                customdata=[["edge", p.key] for _, p in items],
                hovertext=[pair_hover(p, names) for _, p in items],
                hoverinfo="text",
                name="edge: all mTLS (lock)" if secure else "edge: some plaintext",
                legendgroup="edges",
            )
        )

    # Rings under the nodes: the selected node and the Find matches.
    ring_sets = (
        ("selected", SELECT_COLOUR, [n for n in nodes if n.get("id") == options.selected_node]),
        ("find match", FIND_COLOUR, [n for n in nodes if matches(n, options.find, level)]),
    )
    for name, colour, ring in ring_sets:
        if ring:
            fig.add_trace(
                go.Scatter(
                    x=[layout.positions[str(n["id"])][0] for n in ring],
                    y=[layout.positions[str(n["id"])][1] for n in ring],
                    mode="markers",
                    marker={
                        "symbol": "circle-open",
                        "size": NODE_SIZE + (18 if name == "selected" else 12),
                        "color": colour,
                        "line": {"width": 3, "color": colour},
                    },
                    hoverinfo="skip",
                    name=name,
                )
            )

    home = home_namespace(nodes, options.namespace)
    finding = bool(options.find.strip())
    by_kind: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for n in nodes:
        by_kind[node_kind(n)].append(n)
    for kind in KIND_SYMBOLS:
        group = by_kind.get(kind)
        if not group:
            continue
        fig.add_trace(
            go.Scatter(
                x=[layout.positions[str(n["id"])][0] for n in group],
                y=[layout.positions[str(n["id"])][1] for n in group],
                mode="markers+text",
                text=[node_label(n, level, home) for n in group],
                textposition="bottom center",
                textfont={"size": 11, "shadow": LABEL_HALO},
                marker={
                    "symbol": KIND_SYMBOLS[kind],
                    "size": NODE_SIZE,
                    "color": [HEALTH_COLOURS[health_of(n)] for n in group],
                    "opacity": [
                        1.0 if not finding or matches(n, options.find, level) else 0.3
                        for n in group
                    ],
                    "line": {"width": 1.5, "color": "#151515"},
                },
                customdata=[["node", str(n["id"])] for n in group],
                hovertext=[node_hover(n, stats[str(n["id"])], level) for n in group],
                hoverinfo="text",
                name=kind,
                legendgroup="kinds",
            )
        )
    by_health: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for n in nodes:
        by_health[health_of(n)].append(n)
    for health, glyph in HEALTH_GLYPHS.items():
        group = by_health.get(health)
        if not group:
            continue
        line_glyph = glyph == "line-ew"
        fig.add_trace(
            go.Scatter(
                x=[layout.positions[str(n["id"])][0] for n in group],
                y=[layout.positions[str(n["id"])][1] for n in group],
                mode="markers",
                marker={
                    "symbol": glyph,
                    "size": 10,
                    "color": "#ffffff",
                    "line": {"width": 2.5 if line_glyph else 1, "color": "#151515"},
                },
                customdata=[["node", str(n["id"])] for n in group],
                hovertext=[node_hover(n, stats[str(n["id"])], level) for n in group],
                hoverinfo="text",
                name=HEALTH_LABELS[health],
                legendgroup="health",
            )
        )

    px = [p[0] for p in layout.positions.values()] or [0.0]
    py = [p[1] for p in layout.positions.values()] or [0.0]
    tallest = max(
        (sum(1 for r in layout.ranks.values() if r == k) for k in set(layout.ranks.values())),
        default=1,
    )
    fig.update_layout(
        annotations=annotations,
        height=options.height or max(380, min(1400, 110 * tallest + 120)),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        dragmode="pan",
        clickmode="event+select",
        hovermode="closest",
        showlegend=True,
        legend={"orientation": "h", "y": -0.02, "yanchor": "top", "x": 0, "itemclick": False},
        xaxis={
            "visible": False,
            # Labels are centred under their node: leave room for a long name at either end.
            "range": [min(px) - 0.75, max(px) + 0.75],
            "fixedrange": False,
        },
        yaxis={"visible": False, "range": [min(py) - 0.6, max(py) + 0.6]},
        plot_bgcolor="rgba(0,0,0,0)",
        paper_bgcolor="rgba(0,0,0,0)",
    )
    return fig
