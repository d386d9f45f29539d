"""What the API's routes read, typed: built once from `meshlens serve`'s settings (at the
composition root, and again in each query worker from the same mapping), so no route family
probes an untyped namespace with getattr defaults."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final

from meshlens.settings import Setting, parse_duration

# The gate endpoints' settings: `meshlens serve` does not declare them as flags, so the
# MESHLENS_GATE_* environment (or the default) applies.
GATE_API: Final = (
    Setting(
        "gate_judge_config",
        "",
        "canary config the gate endpoints judge with (default: the judge's defaults)",
        str,
    ),
    Setting("gate_window", 300.0, "lookback the gate endpoints judge over", parse_duration),
)


@dataclass(frozen=True, slots=True)
class ApiSettings:
    data_dir: Path
    prometheus_url: str = ""  # graph/signals/health from Prometheus ('' = the store)
    health_config: str = ""  # health tolerances file ('' = Kiali's defaults)
    canary_prometheus_url: str = ""  # the only Prometheus POST /api/v1/canary/analyze may query
    gate_judge_config: str = ""
    gate_window: float = 300.0
    query_memory: int = 0  # a query worker's address space (0 = no limit)
    query_temp_budget: int = 0  # spill space shared by the workers (0 = DuckDB's default)
    query_workers: int = 1
    query_temp_root: str = ""  # this worker's spill directory ('' = <data>/.tmp-query)

    @classmethod
    def of(cls, settings: ApiSettings | Mapping[str, Any] | argparse.Namespace) -> ApiSettings:
        """From the serve namespace or a mapping (tests pass just {"data_dir": ...}); other
        keys are ignored."""
        if isinstance(settings, ApiSettings):
            return settings
        values = vars(settings) if isinstance(settings, argparse.Namespace) else dict(settings)
        known = {f.name for f in fields(cls)}
        given = {k: v for k, v in values.items() if k in known and v is not None}
        merged: dict[str, Any] = {s.name: s.resolve(os.environ) for s in GATE_API}
        merged.update(given)
        return cls(
            data_dir=Path(merged.get("data_dir", "meshlens-data")),
            prometheus_url=str(merged.get("prometheus_url") or ""),
            health_config=str(merged.get("health_config") or ""),
            canary_prometheus_url=str(merged.get("canary_prometheus_url") or ""),
            gate_judge_config=str(merged.get("gate_judge_config") or ""),
            gate_window=float(merged["gate_window"]),
            query_memory=int(merged.get("query_memory") or 0),
            query_temp_budget=int(merged.get("query_temp_budget") or 0),
            query_workers=max(1, int(merged.get("query_workers") or 1)),
            query_temp_root=str(merged.get("query_temp_root") or ""),
        )
