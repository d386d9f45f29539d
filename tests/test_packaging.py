"""`pip install meshlens` gives a working product: every third-party module the product
packages import is a declared dependency (not only in requirements.lock), so e.g.
`meshlens demo --help` cannot fail with ModuleNotFoundError on a clean install."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("collector", "analytics", "dashboards")  # the folders: parts of `meshlens`
# Build-time tools imported only by developer scripts inside the packages.
DEV_ONLY = {"grpc_tools"}


def _imported_top_level() -> dict[str, str]:
    found: dict[str, str] = {}
    for pkg in ("meshlens", *PACKAGES):
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT)
            if "proto/gen" in rel.as_posix() or (pkg == "meshlens" and rel.parts[1] in PACKAGES):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top != "meshlens":
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


def test_the_wheel_installs_one_package_and_every_subcommand_runs(tmp_path: Path) -> None:
    """The distribution puts one name, `meshlens`, into site-packages (the folders
    collector/, analytics/, dashboards/ are its parts), and the installed copy alone, away
    from the repository, answers every subcommand."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info")
    for name in ("meshlens", *PACKAGES):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=ignore)
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("meshlens-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert tops == {"meshlens"}, tops
    assert any(n.startswith("meshlens/collector/decode/_als_wire") for n in names)
    site = tmp_path / "site"
    install = subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import meshlens.collector.decode._als_wire as m; print(m.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    from meshlens.cli import COMMANDS

    for command in COMMANDS:
        out = subprocess.run(
            [sys.executable, "-m", "meshlens", command, "--help"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
        )
        assert out.returncode == 0, f"meshlens {command} --help: {out.stderr[-2000:]}"
        assert f"meshlens {command}" in out.stdout
