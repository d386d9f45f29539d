"""Settings and helpers shared by `meshlens graph|signals|health`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

from meshlens.analytics.errors import AnalyticsError
from meshlens.analytics.window import add_window_arguments
from meshlens.settings import Setting, add_settings


def _namespaces(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


LEVEL: Final = Setting(
    "level", "workload", "graph level", str, ("workload", "app", "versioned-app", "service")
)
NAMESPACE: Final = Setting(
    "namespace", (), "only traffic from or to these namespaces (comma-separated)", _namespaces
)
SOURCE: Final = Setting(
    "source",
    "requests",
    "graph from proxy requests, spans, or auto (requests when there are any)",
    str,
    ("requests", "spans", "auto"),
)
HEALTH_CONFIG: Final = Setting(
    "health_config",
    "",
    "YAML file with Kiali-style health tolerances (health_config.rate); default: Kiali's",
    str,
)
ORIGIN: Final = Setting(
    "origin",
    "",
    "only requests from this telemetry path (envoy_als, "
    "otel_als, file) when sidecars send the same request twice",
    str,
)
PROMETHEUS_URL: Final = Setting(
    "prometheus_url",
    "",
    "read Istio's standard metrics from this Prometheus instead of the store",
    str,
)


def add_common(parser: argparse.ArgumentParser, formats: tuple[str, ...]) -> None:
    add_window_arguments(parser)
    add_settings(parser, (Setting("format", formats[0], "output format", str, formats),))


def run_safely(command: str, body: Callable[[], int]) -> int:
    """Analytics errors become one line on stderr and exit code 2."""
    try:
        return body()
    except AnalyticsError as exc:
        print(f"meshlens {command}: {exc}", file=sys.stderr)
        return 2


def data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir)
