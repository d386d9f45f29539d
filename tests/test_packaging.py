"""`pip install meshlens` gives a working product: every third-party module the product
packages import is a declared dependency (not only in requirements.lock), so e.g.
`meshlens demo --help` cannot fail with ModuleNotFoundError on a clean install."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("collector", "analytics", "dashboards")
# Build-time tools imported only by developer scripts inside the packages.
DEV_ONLY = {"grpc_tools"}


def _imported_top_level() -> dict[str, str]:
    found: dict[str, str] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if "proto/gen" in path.as_posix():
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES:
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {
        re.split(r"[<>=!~\[ ;]", dep, maxsplit=1)[0].lower().replace("_", "-")
        for dep in project["dependencies"]
    }


def test_every_imported_distribution_is_declared() -> None:
    dists = packages_distributions()
    declared = _declared()
    missing = []
    for module, where in sorted(_imported_top_level().items()):
        if module in DEV_ONLY or module == "__future__":
            continue
        owners = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        assert owners, f"{module} (imported by {where}) is not installed"
        if not owners & declared:
            missing.append(f"{module} ({where}; from {sorted(owners)})")
    assert not missing, "imported but not in [project.dependencies]: " + ", ".join(missing)
