"""Import-direction rules of ARCHITECTURE.md, checked on the source (datasette's test_docs idea).

collector.store <- analytics <- dashboards. The composition roots (collector/cli.py,
collector/server.py) are the only places allowed to reach across.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPOSITION_ROOTS = {"collector/cli.py", "collector/server.py"}

RULES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    # (package dir, banned prefixes, allowed exceptions among the banned)
    ("collector", ("analytics", "dashboards", "polars", "duckdb", "streamlit"), ()),
    (
        "analytics",
        ("collector", "dashboards", "grpc", "streamlit"),
        ("collector.store", "collector.httpd", "collector.config", "collector.errors"),
    ),
    (
        "dashboards",
        ("collector", "grpc"),
        ("collector.store", "collector.config", "collector.errors"),
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


@pytest.mark.parametrize(("package", "banned", "allowed"), RULES, ids=[r[0] for r in RULES])
def test_import_direction(package: str, banned: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    bad: list[str] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel in COMPOSITION_ROOTS or "/proto/gen/" in rel:
            continue
        for mod in imports(path):
            if _matches(mod, banned) and not _matches(mod, allowed):
                bad.append(f"{rel} imports {mod}")
    assert not bad, "\n".join(bad)


def _modules_loaded_by(argv: list[str], tmp_path: Path) -> set[str]:
    code = (
        "import sys\n"
        "from collector.cli import main\n"
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
        "from collector.cli import build_parser\n"
        "build_parser('serve')\n"
        "import collector.server\n"
        "print('streamlit' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith("False"), out.stdout + out.stderr


def test_project_packages_are_the_ones_on_disk() -> None:
    import analytics
    import collector
    import dashboards

    for mod in (analytics, collector, dashboards):
        assert Path(str(mod.__file__)).resolve().is_relative_to(ROOT)


def _module_graph() -> dict[str, set[str]]:
    """Product module -> product modules it imports, at the top or inside a function."""
    modules: dict[str, Path] = {}
    for package in ("collector", "analytics", "dashboards"):
        for path in (ROOT / package).rglob("*.py"):
            if "/proto/gen/" in path.as_posix():
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
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
