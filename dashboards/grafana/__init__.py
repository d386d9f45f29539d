"""Grafana dashboards generated from code (grafana-foundation-sdk).

`build_all()` -> {file name: dashboard JSON}; `meshlens grafana build` writes them next to this
file, `meshlens grafana check` fails when the committed JSON differs from a fresh build.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from grafana_foundation_sdk.builders.dashboard import Dashboard

from meshlens.dashboards.grafana import istio, meshlens
from meshlens.dashboards.grafana.builder import render

OUTPUT_DIR: Final = Path(__file__).resolve().parent

DASHBOARDS: Final[dict[str, Callable[[], Dashboard]]] = {
    "istio-mesh.json": istio.mesh_dashboard,
    "istio-service.json": istio.service_dashboard,
    "istio-workload.json": istio.workload_dashboard,
    "meshlens-traffic.json": meshlens.traffic_dashboard,
    "meshlens-canary.json": meshlens.canary_dashboard,
    "meshlens-self.json": meshlens.self_dashboard,
}


def build_all() -> dict[str, dict[str, Any]]:
    return {name: render(factory()) for name, factory in DASHBOARDS.items()}
