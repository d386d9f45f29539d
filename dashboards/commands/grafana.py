"""`meshlens grafana build|check`: write the generated dashboards, or verify they are current."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from meshlens.dashboards.grafana import OUTPUT_DIR, build_all
from meshlens.dashboards.grafana.builder import dumps


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=("build", "check"),
        help="build: write the JSON files; check: exit 1 when any is stale",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=OUTPUT_DIR,
        help=f"directory of the JSON files (default {OUTPUT_DIR})",
    )


def stale_files(out: Path) -> list[str]:
    """Names of dashboards whose file is missing or differs from a fresh build."""
    stale = []
    for name, data in build_all().items():
        path = out / name
        if not path.is_file() or path.read_text(encoding="utf-8") != dumps(data):
            stale.append(name)
    return stale


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    if args.action == "check":
        stale = stale_files(out)
        if stale:
            print(
                f"stale Grafana dashboards in {out}: {', '.join(stale)} "
                "(run: meshlens grafana build)",
                file=sys.stderr,
            )
            return 1
        print(f"{len(build_all())} dashboards up to date in {out}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name, data in build_all().items():
        (out / name).write_text(dumps(data), encoding="utf-8")
        print(out / name)
    return 0
