"""Import-direction rules of the README's architecture section, checked on the source
(datasette's test_docs idea).

One installed package, `meshlens`. Its parts are the repository's folders:
    meshlens.collector (store) <- meshlens.analytics <- meshlens.dashboards
with `meshlens.settings`, `meshlens.httpd`, `meshlens.child_process`, `meshlens.durable_file`
shared below them, and
the composition roots (`meshlens/cli.py`, `serve.py`, `server.py`) the only modules allowed to
reach across. The local mesh, the demo and the synthetic-data generator (`meshlens.localmesh`,
`meshlens.demo`, `meshlens.synth`) stand apart: no product module imports them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPOSITION_ROOTS = {
    "meshlens/__main__.py",
    "meshlens/container.py",
    "meshlens/cli.py",
    "meshlens/serve.py",
    "meshlens/server.py",
}
APART = (
    "meshlens.demo",
    "meshlens.localmesh",
    "meshlens.synth",
    "meshlens.cli",
    "meshlens.container",
    "meshlens.serve",
    "meshlens.server",
)
PARTS = ("collector", "analytics", "dashboards")

RULES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    # (folder, banned prefixes, allowed exceptions among the banned)
    (
        "collector",
        ("meshlens.analytics", "meshlens.dashboards", "polars", "duckdb", "streamlit", *APART),
        (),
    ),
    (
        "analytics",
        ("meshlens.collector", "meshlens.dashboards", "grpc", "streamlit", *APART),
        ("meshlens.collector.store", "meshlens.collector.errors"),
    ),
    (
        "dashboards",
        ("meshlens.collector", "grpc", *APART),
        ("meshlens.collector.store", "meshlens.collector.errors"),
    ),
    (
        "meshlens",  # the shared pieces (the roots, demo and local mesh are skipped below)
        ("meshlens.analytics", "meshlens.dashboards", "grpc", "streamlit", *APART),
        (),
    ),
]


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _matches(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _sources(folder: str) -> list[Path]:
    """The .py files of a folder, not following meshlens/'s links to the parts."""
    base = ROOT / folder
    out = []
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if folder == "meshlens" and (
            rel.split("/")[1] in (*PARTS, "demo", "localmesh") or rel in COMPOSITION_ROOTS
        ):
            continue
        if rel in COMPOSITION_ROOTS or "/proto/gen/" in rel:
            continue
        out.append(path)
    return out


@pytest.mark.parametrize(("folder", "banned", "allowed"), RULES, ids=[r[0] for r in RULES])
def test_import_direction(folder: str, banned: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    bad: list[str] = []
    for path in _sources(folder):
        for mod in imports(path):
            if _matches(mod, banned) and not _matches(mod, allowed):
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_only_meshlens_is_imported_by_name() -> None:
    """The folders are parts of `meshlens`: importing them as top-level `collector`,
    `analytics` or `dashboards` (which works from the repository root only) would load a
    second copy of each module."""
    bad: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith((".venv/", "meshlens/", "build/")) or "/proto/gen/" in rel:
            continue
        bad += [f"{rel} imports {m}" for m in imports(path) if _matches(m, PARTS)]
    assert not bad, "\n".join(bad)


def _modules_loaded_by(argv: list[str], tmp_path: Path) -> set[str]:
    code = (
        "import sys\n"
        "from meshlens.cli import main\n"
        f"rc = main({argv!r})\n"
        "print('MODULES', ' '.join(sorted(m.split('.')[0] for m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("MODULES ")), None)
    assert line is not None, out.stdout + out.stderr
    return set(line.split()[1:])


def test_meshlens_sql_imports_neither_grpc_nor_streamlit(tmp_path: Path) -> None:
    loaded = _modules_loaded_by(["sql", "--data-dir", str(tmp_path), "select 1 as x"], tmp_path)
    assert "grpc" not in loaded
    assert "streamlit" not in loaded


def test_meshlens_serve_help_does_not_import_streamlit(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from meshlens.cli import build_parser\n"
        "build_parser('serve')\n"
        "import meshlens.server\n"
        "print('streamlit' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith("False"), out.stdout + out.stderr


def test_project_packages_are_the_ones_on_disk() -> None:
    import meshlens
    import meshlens.analytics
    import meshlens.collector
    import meshlens.dashboards

    for mod in (meshlens, meshlens.analytics, meshlens.collector, meshlens.dashboards):
        assert Path(str(mod.__file__)).is_relative_to(ROOT), mod.__file__


def _module_graph() -> dict[str, set[str]]:
    """Product module -> product modules it imports, at the top or inside a function."""
    modules: dict[str, Path] = {}
    for folder in (*PARTS, "meshlens"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT)
            if "/proto/gen/" in rel.as_posix() or (folder == "meshlens" and rel.parts[1] in PARTS):
                continue
            parts = rel.with_suffix("").parts
            name = ".".join(parts if folder == "meshlens" else ("meshlens", *parts))
            modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def test_no_import_cycles() -> None:
    """A lazy import that closes a cycle is still a cycle: the two modules cannot be read,
    tested or moved apart."""
    graph = _module_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)
