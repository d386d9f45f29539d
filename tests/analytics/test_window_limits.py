"""Issue 18 item 17: windows whose bounds fall outside datetime's years 1..9999 are a 400
naming the argument, not a 500 (OverflowError)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from meshlens.analytics.api import api_routes
from meshlens.analytics.errors import WindowError
from meshlens.analytics.window import parse_window
from meshlens.httpd import HttpOptions, Request, dispatch

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"since": "99999999d"}, r"--since '99999999d' reaches outside years 1 to 9999"),
        ({"since": "9" * 400 + "d"}, r"--since '9+d' is too long"),
        ({"since": "15m", "from_": "9999-12-31T23:55:00Z"}, r"--since '15m' reaches outside"),
        ({"to": "0001-01-01T00:05:00Z"}, r"the default window 15m reaches outside"),
        ({"from_": "1e20"}, r"time '1e20' is out of range \(years 1 to 9999\)"),
        ({"from_": "-inf"}, r"time '-inf' is out of range"),
    ],
)
def test_out_of_range_windows_are_window_errors(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(WindowError, match=message):
        parse_window(now=NOW, **kwargs)  # type: ignore[arg-type]


def test_the_api_answers_a_huge_since_with_a_400(tmp_path: Path) -> None:
    routes = api_routes({"data_dir": str(tmp_path)})
    for path in ("/api/v1/graph", "/api/v1/signals", "/api/v1/health"):
        req = Request("GET", path, {"since": ["99999999d"]}, {}, b"")
        resp = dispatch(routes, HttpOptions(), req)
        assert resp.status == 400, (path, resp.body)
        assert (
            "--since '99999999d' reaches outside years 1 to 9999" in json.loads(resp.body)["error"]
        )


@pytest.mark.parametrize("step", ["99999999999999d", "3661d", "0"])
def test_the_api_answers_a_step_out_of_range_with_a_400(tmp_path: Path, step: str) -> None:
    routes = api_routes({"data_dir": str(tmp_path)})
    req = Request("GET", "/api/v1/signals", {"since": ["1h"], "step": [step]}, {}, b"")
    resp = dispatch(routes, HttpOptions(), req)
    assert resp.status == 400, resp.body
    assert "step" in json.loads(resp.body)["error"]
