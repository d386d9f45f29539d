"""Shared helpers: the artifacts, the window of the generated traffic, one check run."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Final

from meshlens.analytics.istio.checks import run_check
from meshlens.analytics.istio.report import CheckReport
from meshlens.analytics.istio.resources import IstioConfig, load_config, merge
from meshlens.analytics.window import TimeWindow
from tests.conformance.istio_policies.mesh import T0, Call, write_traffic

ART: Final = Path(__file__).parent / "artifacts"
WINDOW: Final = TimeWindow(T0, T0 + timedelta(hours=1))


def config(*names: str, namespace: str | None = None) -> IstioConfig:
    """Artifacts by path under artifacts/, applied as `kubectl apply [-n namespace] -f`."""
    return merge(load_config([ART / n], namespace=namespace) for n in names)


def check(
    check_name: str, tmp: Path, calls: list[Call], flavour: str, cfg: IstioConfig
) -> CheckReport:
    data = tmp / f"data-{flavour}"
    if not data.exists():
        data.mkdir(parents=True)
        write_traffic(data, calls, flavour)
    return run_check(check_name, data, WINDOW, cfg)
