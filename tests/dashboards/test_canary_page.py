"""The Canary page through AppTest on a store shaped like the demo's gate output
(tests/dashboards/canary_store.py): full-hostname services, inconclusive analyses scored 0,
command rows, gate states; and the gate's command queue behind the buttons."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from meshlens.analytics.gate.state import pending_commands
from tests.dashboards.canary_store import REVIEWS_FQDN, seed_canary

APP = str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py")
PAGE = "views/canary.py"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = seed_canary(tmp_path / "store")
    monkeypatch.setenv("MESHLENS_DATA_DIR", str(d))
    return d


def _page(rollout: str | None = None, user: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    if rollout:
        at.query_params["rollout"] = rollout
    if user:
        at.session_state["meshlens_user"] = user
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _frame(at: AppTest, *columns: str) -> pd.DataFrame:
    for el in at.dataframe:
        df = el.value
        if set(columns) <= set(map(str, df.columns)):
            return df
    raise AssertionError(f"no dataframe with columns {columns}")


def _has_frame(at: AppTest, *columns: str) -> bool:
    return any(set(columns) <= set(map(str, el.value.columns)) for el in at.dataframe)


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [i.value for i in at.info] + [w.value for w in at.warning]
    return "\n".join(str(p) for p in parts)


def _specs(at: AppTest) -> list[dict[str, object]]:
    return [json.loads(el.proto.spec) for el in at.get("vega_lite_chart")]


def _buttons(at: AppTest) -> dict[str, bool]:
    """Action buttons on the page: command -> disabled."""
    out = {}
    for b in at.button:
        key = str(b.key or "")
        if key.startswith("canary_act_"):
            out[key.removeprefix("canary_act_")] = bool(b.disabled)
    return out


def test_rollout_from_the_url_and_full_hostname_distributions(store: Path) -> None:
    at = _page("reviews-fqdn")
    assert at.selectbox(key="canary_rollout").value == "reviews-fqdn"
    assert REVIEWS_FQDN in _texts(at)
    # Both versions' requests were found although the verdict names the full hostname.
    ratios = _frame(at, "role", "error_ratio", "wilson_low", "wilson_high")
    assert set(ratios["role"]) == {"baseline v2", "canary v3"}
    assert (ratios["n"] > 0).all()
    assert (ratios["wilson_low"] <= ratios["error_ratio"]).all()
    assert not any("no requests to" in c.value for c in at.caption)

    # Changing the selection writes the URL back.
    at.selectbox(key="canary_rollout").set_value("details-done").run()
    assert not at.exception
    assert at.query_params["rollout"] == ["details-done"] or (
        at.query_params["rollout"] == "details-done"
    )


def test_inconclusive_is_shown_as_inconclusive_not_as_a_zero_score(store: Path) -> None:
    at = _page("reviews-fqdn")
    tiles = {m.label: m.value for m in at.metric}
    assert tiles["Last verdict"] == "inconclusive"
    assert tiles["Phase"] == "progressing"
    per_metric = _frame(at, "metric", "outcome", "ci_low", "tolerance")
    assert dict(zip(per_metric["metric"], per_metric["outcome"], strict=True)) == {
        "error-rate": "inconclusive",
        "latency": "pass",
    }
    specs = json.dumps(_specs(at))
    # The three outcomes each get their own colour and shape in the charts.
    assert '"triangle-up"' in specs and '"cross"' in specs and '"circle"' in specs
    assert '"inconclusive"' in specs
    # A chart per metric, each with the tolerance line and labelled axes.
    titles = [str(s.get("title")) for s in _specs(at)]
    assert any("error-rate: canary - baseline error rate" in t for t in titles)
    assert any("latency: canary vs baseline, % change" in t for t in titles)
    assert "percentage points" in specs and "analysis time (UTC)" in specs
    # The history shows all three verdicts as such.
    history = _frame(at, "canary_weight", "action", "verdict", "reason")
    assert {"pass", "fail", "inconclusive"} <= set(history["verdict"].dropna())
    # The wait is estimated from the judge's numbers: (0.009-0.002)/(0.005-0.002))^2 = 5.44x
    # the traffic so far over the 600 s window -> 44.4 min.
    text = _texts(at)
    assert "about 45 minutes more until every metric can settle" in text
    assert "5.44x" in text
    assert "assumes" in text


def test_buttons_disabled_when_nobody_is_signed_in(store: Path) -> None:
    at = _page("reviews-fqdn")
    buttons = _buttons(at)
    assert set(buttons) == {"pause", "promote", "abort"}  # progressing: no resume
    assert all(buttons.values())
    assert any("sign in to act" in c.value for c in at.caption)


def test_abort_with_confirmation_queues_one_command_by_the_user(store: Path) -> None:
    at = _page("reviews-fqdn", user="alice")
    buttons = _buttons(at)
    assert buttons == {"pause": False, "promote": False, "abort": False}
    at.button(key="canary_act_abort").click().run()
    assert not at.exception
    assert pending_commands(store, "reviews-fqdn") == []  # nothing before the confirmation
    at.text_input(key="canary_reason").set_value("error budget burning")
    at.button(key="canary_confirm_go").click().run()
    assert not at.exception
    queued = pending_commands(store, "reviews-fqdn")
    assert len(queued) == 1
    body = queued[0][1]
    assert body["command"] == "abort" and body["by"] == "alice"
    assert body["reason"] == "error budget burning"
    # The page shows the queued command and who queued it; the confirmation is gone.
    pending = _frame(at, "queued_at", "command", "by")
    assert list(pending["command"]) == ["abort"] and list(pending["by"]) == ["alice"]
    assert "canary_confirm_go" not in [b.key for b in at.button]
    at.run()
    assert len(pending_commands(store, "reviews-fqdn")) == 1  # a rerun queues nothing more


def test_cancel_queues_nothing(store: Path) -> None:
    at = _page("reviews-fqdn", user="alice")
    at.button(key="canary_act_pause").click().run()
    at.button(key="canary_confirm_cancel").click().run()
    assert not at.exception
    assert pending_commands(store, "reviews-fqdn") == []


def test_paused_offers_resume_and_keeps_the_per_metric_table(store: Path) -> None:
    at = _page("ratings-paused", user="alice")
    assert {m.label: m.value for m in at.metric}["Phase"] == "paused"
    assert set(_buttons(at)) == {"resume", "promote", "abort"}
    per_metric = _frame(at, "metric", "outcome")
    assert list(per_metric["metric"]) == ["latency"]


def test_finished_rollout_offers_no_action(store: Path) -> None:
    at = _page("details-done", user="alice")
    assert _buttons(at) == {}
    assert any("nothing left to do" in c.value for c in at.caption)
    assert not _has_frame(at, "queued_at", "command")


def test_unknown_rollout_in_the_url_is_said(store: Path) -> None:
    at = _page("nope")
    assert any("nope" in w.value for w in at.warning)
    assert at.selectbox(key="canary_rollout").value in ("reviews-fqdn", "ratings-paused")


def test_a_command_that_no_longer_applies_is_not_queued(store: Path) -> None:
    at = _page("reviews-fqdn", user="alice")
    at.button(key="canary_act_pause").click().run()
    # The gate finishes the rollout while the user is confirming.
    state = store / "gate" / "reviews-fqdn.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "phase": "failed"}))
    at.button(key="canary_confirm_go").click().run()
    assert not at.exception
    assert pending_commands(store, "reviews-fqdn") == []
    assert any("now failed" in e.value for e in at.error)
    assert _buttons(at) == {}
