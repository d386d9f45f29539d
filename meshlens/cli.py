"""`meshlens`: one CLI, subcommands imported lazily so each starts fast.

Each subcommand module exposes `configure(parser: argparse.ArgumentParser) -> None` and
`run(args: argparse.Namespace) -> int`. Only the chosen module is imported: `meshlens sql` never
loads grpc, `meshlens serve` never loads streamlit. This dispatcher is the composition root, so
it names modules of every package as strings and imports none of them statically.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Final

from meshlens.collector.errors import CollectorError
from meshlens.settings import COMMON, add_settings

COMMANDS: Final[dict[str, tuple[str, str]]] = {
    "serve": (
        "meshlens.serve",
        "run the collector: OTLP + Envoy ALS receivers, store, API",
    ),
    "import": (
        "meshlens.collector.commands.importer",
        "import Istio/Envoy access-log files into requests",
    ),
    "sql": ("meshlens.analytics.commands.sql", "run a read-only SQL query over the store"),
    "graph": (
        "meshlens.analytics.commands.graph",
        "service graph (Kiali semantics) for a time window",
    ),
    "signals": (
        "meshlens.analytics.commands.signals",
        "golden signals per service/workload/version",
    ),
    "health": (
        "meshlens.analytics.commands.health",
        "health of nodes and edges (Kiali tolerances)",
    ),
    "canary": ("meshlens.analytics.commands.canary", "judge a canary against its baseline"),
    "gate": ("meshlens.analytics.commands.gate", "progressive rollout driven by canary verdicts"),
    "check": ("meshlens.analytics.commands.check", "Istio config against observed traffic"),
    "ui": ("meshlens.dashboards.commands.ui", "the Streamlit app"),
    "grafana": (
        "meshlens.dashboards.commands.grafana",
        "build or check the generated Grafana dashboards",
    ),
    "demo": ("meshlens.demo.command", "a real local mesh with live dashboards"),
}


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meshlens",
        description="Observability pipeline and analytics for Istio/Envoy service meshes.",
        epilog="Run 'meshlens COMMAND --help' for a command's options.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return p


def build_parser(command: str) -> tuple[argparse.ArgumentParser, object]:
    """The parser of one subcommand, with the common settings, and its module."""
    module_name, help_text = COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"meshlens {command}", description=help_text)
    add_settings(parser, COMMON)
    module.configure(parser)
    return parser, module


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if not args_in or args_in[0] in ("-h", "--help"):
        _top_parser().print_help()
        return 0 if args_in else 2
    command = args_in[0]
    if command not in COMMANDS:
        _top_parser().print_usage(sys.stderr)
        print(
            f"meshlens: unknown command {command!r}; choose from {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    try:
        parser, module = build_parser(command)
        args = parser.parse_args(args_in[1:])
    except CollectorError as exc:  # bad environment variable value
        print(f"meshlens {command}: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(module.run(args))  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        return 130
    except CollectorError as exc:
        print(f"meshlens {command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
