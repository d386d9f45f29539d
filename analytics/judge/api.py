"""HTTP API of the judge: POST /api/v1/canary/analyze (the same JSON as the CLI's --format json).

Request body:
    {"service": "reviews", "baseline": "v1", "canary": "v2",
     "since": "10m" | "from": ISO, "to": ISO,          # the window (default: last 15m)
     "selector": "version",                            # version|subset|workload|revision
     "config": {... YAML-equivalent mapping or a Kayenta canary config ...},  # optional
     "mode": "sequential",                             # optional override of config.mode
     "expected_share": 0.1}                            # optional, for request_share metrics
Answers 200 with the verdict JSON, 400 on bad input or config, 502 when the Prometheus failed.
A request never makes the collector contact a URL of its choosing: a URL-like field of `config`
(prometheus_url) must be the operator's --canary-prometheus-url, which is used when it is left
out; a Prometheus failure is answered without connection details (they are logged).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshlens.analytics.api_settings import ApiSettings
from meshlens.analytics.errors import AnalyticsError, PrometheusError
from meshlens.analytics.judge.config import default_config, parse_request_config
from meshlens.analytics.judge.model import MODES, Verdict
from meshlens.httpd import HttpError, Request, Response, Route

log = logging.getLogger(__name__)


def analyze_request(
    body: Any, data_dir: Path, *, now: datetime | None = None, prometheus_url: str = ""
) -> Verdict:
    """The analysis a JSON body asks for (raises AnalyticsError on bad input). `prometheus_url`:
    the operator's Prometheus, the only URL a request's config may use."""
    from meshlens.analytics.catalog import connect
    from meshlens.analytics.errors import JudgeInputError
    from meshlens.analytics.judge.analyze import analyze
    from meshlens.analytics.window import parse_window

    if not isinstance(body, Mapping):
        raise JudgeInputError("the body must be a JSON object")
    for key in ("service", "baseline", "canary"):
        if not isinstance(body.get(key), str) or not body.get(key):
            raise JudgeInputError(f"{key!r} is required (a string)")
    window = parse_window(
        body.get("since"), body.get("from"), body.get("to"), now=now or datetime.now(UTC)
    )
    config = (
        parse_request_config(body["config"], prometheus_url, "request.config")
        if body.get("config")
        else default_config()
    )
    mode = body.get("mode")
    if mode is not None:
        if mode not in MODES:
            raise JudgeInputError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        config = replace(config, mode=mode)
    share = body.get("expected_share")
    if share is not None and not isinstance(share, int | float):
        raise JudgeInputError("expected_share must be a number")
    conn = connect(data_dir, window)
    try:
        return analyze(
            conn,
            service=body["service"],
            baseline=body["baseline"],
            canary=body["canary"],
            window=window,
            config=config,
            selector=str(body.get("selector", "version")),
            data_dir=data_dir,
            expected_share=None if share is None else float(share),
        )
    finally:
        conn.close()


def judge_routes(settings: ApiSettings | Mapping[str, Any]) -> list[Route]:
    """Routes for the API port (see ApiSettings for what a mapping may carry)."""
    s = ApiSettings.of(settings)
    data_dir = s.data_dir
    prometheus_url = s.canary_prometheus_url

    def handle(req: Request) -> Response:
        try:
            verdict = analyze_request(req.json(), data_dir, prometheus_url=prometheus_url)
        except PrometheusError as exc:
            if exc.url == "-":  # refused before any query (no PromQL for that metric kind)
                raise HttpError(400, str(exc)) from None
            # The operator's Prometheus failed: the details (address, connection errors) go to
            # the log, not to the caller.
            log.warning("canary analysis: %s", exc)
            raise HttpError(
                502, "the configured Prometheus failed to answer; see the collector log"
            ) from None
        except AnalyticsError as exc:
            raise HttpError(400, str(exc)) from None
        return Response.json(verdict.to_json())

    return [Route("POST", "/api/v1/canary/analyze", handle)]
