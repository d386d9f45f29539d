"""`POST /api/v1/check/{routing,authz,mtls}`: the checks over HTTP.

Body: {"config": "<YAML text of Istio resources>", "since": "1h"} (or "from"/"to"). The answer is
the same JSON as `meshlens check --format json`; an invalid resource is a 400 naming the field.
The YAML may be at most 1 MiB, and aliases may not expand it beyond analytics.yaml_input's
API_LIMITS (a 400 says which limit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from meshlens.analytics.api_settings import ApiSettings
from meshlens.analytics.errors import AnalyticsError
from meshlens.analytics.istio.checks import CHECKS, run_check
from meshlens.analytics.istio.resources import parse_documents
from meshlens.analytics.window import parse_window
from meshlens.analytics.yaml_input import API_LIMITS
from meshlens.httpd import HttpError, Request, Response, Route

# YAML text in a request: aliases are budgeted (API_LIMITS) and the text itself is capped.
MAX_CONFIG_BYTES: Final = 1024 * 1024


def _handler(check: str, data_dir: Path) -> Callable[[Request], Response]:
    def handle(req: Request) -> Response:
        body = req.json()
        if not isinstance(body, dict) or not isinstance(body.get("config"), str):
            raise HttpError(400, "body must be JSON with 'config': YAML text of Istio resources")
        size = len(body["config"].encode())
        if size > MAX_CONFIG_BYTES:
            raise HttpError(
                400,
                f"request.config is {size} bytes, more than the {MAX_CONFIG_BYTES} byte limit "
                "(check a smaller set of resources, or use `meshlens check -f` on files)",
            )
        try:
            config = parse_documents(body["config"], "request.config", limits=API_LIMITS)
            window = parse_window(
                body.get("since"), body.get("from"), body.get("to"), now=datetime.now(UTC)
            )
            report = run_check(check, data_dir, window, config)
        except AnalyticsError as exc:
            raise HttpError(400, str(exc)) from None
        return Response.json(report.to_json())

    return handle


def istio_routes(settings: ApiSettings | Mapping[str, Any]) -> list[Route]:
    data_dir = ApiSettings.of(settings).data_dir
    return [Route("POST", f"/api/v1/check/{c}", _handler(c, data_dir)) for c in CHECKS]
