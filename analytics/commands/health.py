"""`meshlens health`: health of nodes and edges with Kiali's tolerances.

Exit code 0 when nothing is Failure, 1 when some node is Failure (usable as a CI gate).
"""

from __future__ import annotations

import argparse
import sys

from meshlens.analytics.commands.common import (
    HEALTH_CONFIG,
    LEVEL,
    NAMESPACE,
    ORIGIN,
    PROMETHEUS_URL,
    SOURCE,
    add_common,
    run_safely,
)
from meshlens.analytics.commands.graph import load_graph
from meshlens.analytics.commands.output import format_table, json_text
from meshlens.analytics.health import FAILURE
from meshlens.settings import add_settings


def configure(parser: argparse.ArgumentParser) -> None:
    add_common(parser, ("table", "json"))
    add_settings(parser, (LEVEL, NAMESPACE, SOURCE, HEALTH_CONFIG, PROMETHEUS_URL, ORIGIN))


def run(args: argparse.Namespace) -> int:
    from meshlens.analytics.api import health_json

    def body() -> int:
        graph = load_graph(args)
        doc = health_json(graph, args.health_config or None)
        if args.format == "json":
            sys.stdout.write(json_text(doc))
        else:
            rows = []
            for n in doc["nodes"]:
                worst = max(
                    (t for t in n["traffic"] if t["error_pct"]),
                    key=lambda t: max(t["error_pct"].values()),
                    default=None,
                )
                detail = ""
                if worst:
                    code, pct = max(worst["error_pct"].items(), key=lambda kv: kv[1])
                    detail = f"{worst['direction']} {worst['protocol']} {code}: {pct:.2f}%"
                rows.append((n["id"], n["status"], detail))
            sys.stdout.write(format_table(("node", "status", "worst error ratio"), rows))
        return 1 if any(n["status"] == FAILURE for n in doc["nodes"]) else 0

    return run_safely("health", body)
