"""A store for the Canary page tests, shaped like what `meshlens demo`'s gate writes: verdict
rows whose service is the FULL hostname, details in the gate's form (reason, judge_reason,
window, metrics with their interval, tolerance and sample sizes), inconclusive analyses
scored 0.0, command rows without a verdict, and gate state files.

Rollouts:
  reviews-fqdn    progressing; pass, fail, then inconclusive analyses (the last one
                  inconclusive: error rate not settled, an ETA can be estimated)
  ratings-paused  paused by a command: its latest row has no metrics
  details-done    succeeded
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from meshlens.collector.store.parquet_write import write_table
from meshlens.collector.store.schema import VERDICTS
from meshlens.synth import synthetic_requests

REVIEWS_FQDN = "reviews.bookinfo.svc.cluster.local"
N_REQUESTS = 20_000
WINDOW_S = 600.0


def _error_metric(
    outcome: str, effect: float | None, ci: list[float | None] | None
) -> dict[str, Any]:
    classification = {"fail": "high"}.get(outcome, outcome)
    return {
        "name": "error-rate",
        "kind": "error_rate",
        "classification": classification,
        "baseline": 0.001,
        "canary": None if effect is None else 0.001 + effect,
        "unit": "ratio",
        "effect": effect,
        "effect_unit": "canary error rate - baseline error rate (absolute)",
        "ci": ci,
        "n_baseline": 3000,
        "n_canary": 300,
        "direction": "increase",
        "critical": True,
        "muted": False,
        "reason": f"error rate {outcome}",
        "details": {"tolerance": 0.005, "block_s": 10.0, "blocks": 60},
    }


def _latency_metric(outcome: str, effect: float, ci: list[float | None]) -> dict[str, Any]:
    return {
        "name": "latency",
        "kind": "latency",
        "classification": outcome,
        "baseline": 20.0,
        "canary": 20.0 * (1 + effect),
        "unit": "ms",
        "effect": effect,
        "effect_unit": "relative change of the p99 (canary/baseline - 1)",
        "ci": ci,
        "n_baseline": 3000,
        "n_canary": 300,
        "direction": "increase",
        "critical": False,
        "muted": False,
        "reason": f"latency {outcome}",
        "details": {"tolerance": 0.1, "block_s": 10.0, "blocks": 60},
    }


def _row(
    ts: datetime,
    rollout: str,
    service: str,
    phase: str,
    weight: int,
    verdict: str | None,
    score: float | None,
    action: str,
    details: dict[str, Any],
    baseline: str = "v2",
    canary: str = "v3",
) -> dict[str, Any]:
    return {
        "ts": ts,
        "rollout": rollout,
        "service": service,
        "baseline": baseline,
        "canary": canary,
        "phase": phase,
        "canary_weight": weight,
        "verdict": verdict,
        "score": score,
        "details": json.dumps(details, sort_keys=True),
        "action": action,
        "dry_run": False,
    }


def _window(end: datetime) -> dict[str, Any]:
    return {
        "start": (end - timedelta(seconds=WINDOW_S)).isoformat(),
        "end": end.isoformat(),
        "seconds": WINDOW_S,
    }


def verdict_rows(now: datetime) -> list[dict[str, Any]]:
    rows = []
    t0 = now - timedelta(minutes=20)
    rows.append(
        _row(t0, "reviews-fqdn", REVIEWS_FQDN, "progressing", 10, None, None, "start",
             {"reason": "starting: canary weight 10%"})
    )  # fmt: skip
    analyses = [
        # (minutes after t0, weight, verdict, score, action, error metric, latency metric)
        (4, 10, "pass", 100.0, "advance", ("pass", 0.0005, [-0.002, 0.003]), ("pass", 0.01)),
        (8, 25, "fail", 0.0, "hold", ("fail", 0.02, [0.008, 0.032]), ("pass", 0.02)),
        (12, 25, "inconclusive", 0.0, "hold", ("inconclusive", 0.002, [-0.004, 0.009]),
         ("pass", 0.03)),
    ]  # fmt: skip
    for minutes, weight, verdict, score, action, err, lat in analyses:
        ts = t0 + timedelta(minutes=minutes)
        metrics = [
            _error_metric(err[0], err[1], list(err[2])),
            _latency_metric(lat[0], lat[1], [lat[1] - 0.05, lat[1] + 0.05]),
        ]
        details = {
            "reason": f"{verdict} at {weight}%",
            "judge_reason": f"judge says {verdict}",
            "mode": "sequential",
            "metrics": metrics,
            "window": _window(ts),
        }
        rows.append(
            _row(ts, "reviews-fqdn", REVIEWS_FQDN, "progressing", weight, verdict, score, action,
                 details)
        )  # fmt: skip
    # ratings-paused: an analysis, then a pause by a command (a row without metrics).
    ts = now - timedelta(minutes=6)
    rows.append(
        _row(ts, "ratings-paused", "ratings.bookinfo.svc.cluster.local", "progressing", 20,
             "pass", 100.0, "hold",
             {"reason": "pass at 20%", "metrics": [_latency_metric("pass", 0.0, [-0.05, 0.05])],
              "window": _window(ts)},
             baseline="v1", canary="v2")
    )  # fmt: skip
    rows.append(
        _row(now - timedelta(minutes=3), "ratings-paused", "ratings.bookinfo.svc.cluster.local",
             "paused", 20, None, None, "pause",
             {"reason": "pause by alice at 20%", "command": "pause"},
             baseline="v1", canary="v2")
    )  # fmt: skip
    rows.append(
        _row(now - timedelta(minutes=30), "details-done", "details.bookinfo.svc.cluster.local",
             "succeeded", 100, "pass", 100.0, "promote",
             {"reason": "last step passed: promoting to 100%", "metrics": []},
             baseline="v1", canary="v2")
    )  # fmt: skip
    return rows


def _state(rollout: str, phase: str, weight: int, service: str, **extra: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "rollout": rollout,
        "service": service,
        "phase": phase,
        "canary_weight": weight,
        "reason": f"{phase} at {weight}%",
        **extra,
    }


def seed_canary(data_dir: Path, now: datetime | None = None) -> Path:
    """Write the store under data_dir; returns it."""
    now = now or datetime.now(UTC)
    req = synthetic_requests(
        N_REQUESTS, start=now - timedelta(seconds=3510), duration_s=3480, seed=11
    )
    write_table(data_dir, "requests", req, node="test", lo=1, fsync=False)
    table = pa.Table.from_pylist(verdict_rows(now), schema=VERDICTS)
    write_table(data_dir, "verdicts", table, node="gate", lo=1, fsync=False)
    gate = data_dir / "gate"
    gate.mkdir(parents=True, exist_ok=True)
    for body in (
        _state("reviews-fqdn", "progressing", 25, REVIEWS_FQDN, failed_checks=1),
        _state("ratings-paused", "paused", 20, "ratings.bookinfo.svc.cluster.local",
               paused_from="progressing"),
        _state("details-done", "succeeded", 100, "details.bookinfo.svc.cluster.local"),
    ):  # fmt: skip
        (gate / f"{body['rollout']}.json").write_text(json.dumps(body))
    return data_dir
