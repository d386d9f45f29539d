"""The judge as the gate sees it: a window in, a Judgement out.

`Judge` is a Protocol so the state machine and the runner can be driven by anything that
answers; `StoreJudge` is the real one: it opens the catalog over the store for the window and
calls analytics.judge.analyze. A judge that raises is an inconclusive analysis, never a pass or
a fail: the gate must not move traffic on an error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from meshlens.analytics.gate.model import Judgement
from meshlens.analytics.judge.model import CanaryConfig
from meshlens.analytics.window import TimeWindow

log = logging.getLogger(__name__)


class Judge(Protocol):
    def __call__(self, window: TimeWindow, canary_weight: int | None = None) -> Judgement: ...


def load_canary_config(path: str = "") -> CanaryConfig:
    """The judge's CanaryConfig: from `path`, else the judge's defaults."""
    from meshlens.analytics.judge.config import default_config, load_config

    return load_config(path) if path else default_config()


class StoreJudge:
    """analytics.judge.analyze over the store's Parquet files, one connection per analysis."""

    def __init__(
        self,
        data_dir: Path,
        *,
        service: str,
        baseline: str,
        canary: str,
        selector: str = "version",
        config: Any = None,
        config_path: str = "",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.service, self.baseline, self.canary = service, baseline, canary
        self.selector = selector
        self.config = config if config is not None else load_canary_config(config_path)

    def __call__(self, window: TimeWindow, canary_weight: int | None = None) -> Judgement:
        from meshlens.analytics.catalog import connect
        from meshlens.analytics.judge.analyze import analyze

        try:
            conn = connect(self.data_dir, window)
            try:
                verdict = analyze(
                    conn,
                    service=self.service,
                    baseline=self.baseline,
                    canary=self.canary,
                    window=window,
                    config=self.config,
                    selector=self.selector,
                    data_dir=self.data_dir,
                    # request_share metrics check the canary gets the weight the gate set
                    expected_share=None if canary_weight is None else canary_weight / 100.0,
                )
            finally:
                conn.close()
        except Exception as exc:
            log.exception("judge failed for %s", self.service)
            return Judgement(
                "inconclusive",
                None,
                f"judge failed: {type(exc).__name__}: {exc}",
                {"error": str(exc)},
            )
        return Judgement.from_verdict_json(verdict.to_json())
