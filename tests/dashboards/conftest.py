"""A seeded store for the dashboard tests: synthetic bookinfo requests, a few traces, verdicts of
two rollouts and one live gate state file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from meshlens.collector.store.parquet_write import write_table
from meshlens.collector.store.schema import SPANS, VERDICTS
from meshlens.synth import synthetic_requests
from tests.dashboards.browser_fixtures import browser, ui_url  # noqa: F401 (session fixtures)

N_REQUESTS = 30_000
TRACE_IDS = [f"{i:032x}" for i in range(0xABC000, 0xABC000 + 12)]


def _spans(now: datetime) -> pa.Table:
    """productpage -> reviews -> ratings traces (server/client pairs), one with an error."""
    rows: list[dict[str, object]] = []
    for t, tid in enumerate(TRACE_IDS):
        start = now - timedelta(minutes=10) + timedelta(seconds=20 * t)
        chain = [
            ("productpage", "GET /productpage", 60.0),
            ("reviews", "GET /reviews/0", 30.0),
            ("ratings", "GET /ratings/0", 8.0),
        ]
        parent = ""
        offset = 0.0
        for depth, (svc, name, dur) in enumerate(chain):
            sid = f"{t:04x}{depth:04x}00000001"
            st = start + timedelta(milliseconds=offset)
            error = t == 3 and svc == "ratings"
            rows.append(
                {
                    "trace_id": tid,
                    "span_id": sid,
                    "parent_span_id": parent,
                    "name": name,
                    "kind": "server",
                    "start_ts": st,
                    "end_ts": st + timedelta(milliseconds=dur),
                    "duration_ms": dur,
                    "service_name": svc,
                    "service_namespace": "bookinfo",
                    "service_version": "v1",
                    "status_code": "error" if error else "unset",
                    "status_message": "",
                    "http_method": "GET",
                    "http_status_code": 500 if error else 200,
                    "http_route": name.split(" ")[1],
                }
            )
            if depth < len(chain) - 1:
                cid = f"{t:04x}{depth:04x}00000002"
                cst = st + timedelta(milliseconds=2)
                cdur = chain[depth + 1][2] + 2
                rows.append(
                    {
                        "trace_id": tid,
                        "span_id": cid,
                        "parent_span_id": sid,
                        "name": f"GET {chain[depth + 1][0]}",
                        "kind": "client",
                        "start_ts": cst,
                        "end_ts": cst + timedelta(milliseconds=cdur),
                        "duration_ms": cdur,
                        "service_name": svc,
                        "service_namespace": "bookinfo",
                        "service_version": "v1",
                        "status_code": "unset",
                        "status_message": "",
                        "http_method": "GET",
                        "http_status_code": 200,
                        "http_route": "",
                        "peer_service": chain[depth + 1][0],
                    }
                )
                parent = cid
                offset += 3
    return pa.Table.from_pylist(rows, schema=SPANS)


def _verdicts(now: datetime) -> pa.Table:
    rows: list[dict[str, object]] = []
    metrics = [
        {
            "name": "error_rate",
            "classification": "pass",
            "baseline": 0.001,
            "canary": 0.002,
            "unit": "ratio",
            "effect": 0.001,
            "ci": [-0.002, 0.004],
            "n_baseline": 900,
            "n_canary": 300,
            "reason": "no evidence of more errors",
            "critical": True,
        },
        {
            "name": "latency_p99",
            "classification": "high",
            "baseline": 40.0,
            "canary": 70.0,
            "unit": "ms",
            "effect": 0.35,
            "ci": [0.2, 0.5],
            "n_baseline": 900,
            "n_canary": 300,
            "reason": "canary slower",
            "critical": False,
        },
    ]
    for i, (phase, weight, verdict, score, action) in enumerate(
        [
            ("progressing", 10, "pass", 100.0, "advance"),
            ("progressing", 25, "pass", 95.0, "advance"),
            ("progressing", 50, "inconclusive", 70.0, "hold"),
            ("progressing", 50, "fail", 40.0, "rollback"),
        ]
    ):
        rows.append(
            {
                "ts": now - timedelta(minutes=12 - 3 * i),
                "rollout": "reviews-v3",
                "service": "reviews",
                "baseline": "v2",
                "canary": "v3",
                "phase": phase,
                "canary_weight": weight,
                "verdict": verdict,
                "score": score,
                "details": json.dumps({"verdict": verdict, "score": score, "metrics": metrics}),
                "action": action,
                "dry_run": False,
            }
        )
    rows.append(
        {
            "ts": now - timedelta(hours=2),
            "rollout": "details-v2",
            "service": "details",
            "baseline": "v1",
            "canary": "v2",
            "phase": "succeeded",
            "canary_weight": 100,
            "verdict": "pass",
            "score": 100.0,
            "details": "{}",
            "action": "promote",
            "dry_run": False,
        }
    )
    return pa.Table.from_pylist(rows, schema=VERDICTS)


def seed(data_dir: Path, now: datetime, n: int = N_REQUESTS) -> None:
    # An hour of traffic ending just before `now` (synthetic rows are in time order).
    req = synthetic_requests(n, start=now - timedelta(seconds=3510), duration_s=3480, seed=7)
    # Link a few proxy reports to the traces.
    tids = np.array([""] * req.num_rows, dtype=object)
    for i, tid in enumerate(TRACE_IDS):
        tids[req.num_rows - 1 - i * 7] = tid  # the newest rows: inside the default window
    req = req.set_column(
        req.schema.get_field_index("trace_id"), "trace_id", pa.array(tids.tolist(), pa.string())
    )
    write_table(data_dir, "requests", req, node="test", lo=1, fsync=False)
    write_table(data_dir, "spans", _spans(now), node="test", lo=1, fsync=False)
    write_table(data_dir, "verdicts", _verdicts(now), node="gate", lo=1, fsync=False)
    gate = data_dir / "gate"
    gate.mkdir(parents=True, exist_ok=True)
    (gate / "reviews-v3.json").write_text(
        json.dumps(
            {
                "version": 1,
                "rollout": "reviews-v3",
                "phase": "failed",
                "canary_weight": 0,
                "last_verdict": "fail",
                "last_score": 40.0,
            }
        )
    )


@pytest.fixture(scope="session")
def seeded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("store")
    seed(d, datetime.now(UTC))
    return d


@pytest.fixture
def data_env(seeded_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MESHLENS_DATA_DIR", str(seeded_dir))
    return seeded_dir
