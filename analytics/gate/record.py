"""Every gate decision becomes a row of the `verdicts` table and, optionally, a chat message.

Rows: `write_table(data_dir, "verdicts", t, node="gate", lo=<µs>)`, one small Parquet file per
decision or webhook call; the collector's compaction merges them (`layout.GATE_NODE` is a
time-numbered writer, see collector/store/compaction.py).
Notifications: POST {"text": ...} (Slack incoming-webhook compatible) with a short timeout; a
failed notification is logged and never blocks the rollout.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import requests

from meshlens.analytics.gate.model import Decision
from meshlens.analytics.gate.state import GateState
from meshlens.collector.store.layout import GATE_NODE
from meshlens.collector.store.parquet_write import write_table
from meshlens.collector.store.schema import VERDICTS

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_LAST_LO = [0]


def _next_lo() -> int:
    """A time-based, strictly increasing segment number (two decisions in one µs differ)."""
    with _LOCK:
        lo = max(time.time_ns() // 1000, _LAST_LO[0] + 1)
        _LAST_LO[0] = lo
        return lo


def verdict_row(
    state: GateState,
    decision: Decision,
    *,
    baseline: str,
    canary: str,
    now: float,
    weight_before: int,
    applied: bool | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One `verdicts` row. `canary_weight` is the weight in effect after the decision."""
    j = decision.judgement
    details: dict[str, Any] = {
        "reason": decision.reason,
        "weight_before": weight_before,
        "target_weight": decision.target_weight,
        "applied": applied,
        "failed_checks": state.failed_checks,
        "consecutive_failures": state.consecutive_failures,
        "inconclusive_streak": state.inconclusive_streak,
        "step_index": state.step_index,
    }
    if decision.command:
        details["command"] = decision.command
    if j is not None:
        details["judge_reason"] = j.reason
        details["metrics"] = j.details.get("metrics", [])
        for key in ("mode", "window", "warnings", "group_scores"):
            if key in j.details:
                details[key] = j.details[key]
    if extra:
        details.update(extra)
    return {
        "ts": datetime.fromtimestamp(now, tz=UTC),
        "rollout": state.rollout,
        "service": state.service,
        "baseline": baseline,
        "canary": canary,
        "phase": state.phase,
        "canary_weight": state.canary_weight,
        "verdict": j.verdict if j else None,
        "score": j.score if j else None,
        "details": json.dumps(details, default=str, sort_keys=True),
        "action": decision.action,
        "dry_run": state.dry_run,
    }


def record_rows(data_dir: Path, rows: list[dict[str, Any]]) -> list[Path]:
    if not rows:
        return []
    table = pa.Table.from_pylist(rows, schema=VERDICTS)
    return write_table(Path(data_dir), "verdicts", table, node=GATE_NODE, lo=_next_lo())


def notification_text(row: dict[str, Any]) -> str:
    verdict = row.get("verdict") or "-"
    score = row.get("score")
    score_text = f" score {score:.1f}" if isinstance(score, float) else ""
    reason = json.loads(row["details"]).get("reason", "")
    dry = " [dry-run]" if row.get("dry_run") else ""
    return (
        f"meshlens gate{dry}: rollout *{row['rollout']}* ({row['service']} "
        f"{row['baseline']} -> {row['canary']}): {row['action']}, canary at "
        f"{row['canary_weight']}%, phase {row['phase']}, verdict {verdict}{score_text}. "
        f"{reason}"
    )


def notify(url: str, row: dict[str, Any], timeout_s: float = 5.0) -> bool:
    """POST the decision as {"text": ...}; True when the receiver answered 2xx."""
    if not url:
        return False
    try:
        resp = requests.post(url, json={"text": notification_text(row)}, timeout=timeout_s)
    except requests.RequestException as exc:
        log.warning("gate notification to %s failed: %s", url, exc)
        return False
    if not 200 <= resp.status_code < 300:
        log.warning("gate notification to %s -> HTTP %d", url, resp.status_code)
        return False
    return True
