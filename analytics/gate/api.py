"""HTTP endpoints for when another controller drives the rollout (on the API port).

    POST /gate/flagger/<hook>   Flagger webhooks. Body {name, namespace, phase, checksum,
                                metadata}; HTTP <= 202 = pass, anything else = failed check.
                                rollout | pre-rollout     fail -> 412 (a failed check); pass or
                                                          inconclusive -> 200 (metadata
                                                          inconclusive: "fail" makes it 412)
                                confirm-traffic-increase  pass -> 200, else 403 (hold the weight)
                                confirm-promotion         pass -> 200, else 403 (WaitingPromotion)
                                confirm-rollout           403 while `meshlens gate pause` is in
                                                          effect for the rollout, else 200
                                rollback                  200 = roll back: after
                                                          `meshlens gate abort`, or on a fail
                                                          verdict with metadata rollbackOnFail
                                                          "true"; else 403
                                post-rollout | event      200 (recorded)
    GET|POST|PUT /gate/argo/verdict
                                Argo Rollouts Web metric: 200 + {"verdict", "score", "reason",
                                "metrics", ..., "requests", "summary"}; use jsonPath
                                {$.summary} (or {$}), successCondition result.verdict == "pass"
                                and failureCondition result.verdict == "fail". A side without
                                requests gets a `hint`: what the telemetry carries instead
                                (Argo's pod-template hashes never reach it: judge Argo canaries
                                by DestinationRule subset, selector=subset).
    POST /judge                 Kayenta RemoteJudge: {canaryConfig, metricSetPairList,
                                scoreThresholds} -> CanaryJudgeResult (the judge's
                                analytics.judge.kayenta: NetflixACAJudge port).
    GET /gate/rollouts[/<name>] the persisted gate states.

What is judged: metadata / query / body keys `service` (FQDN), `baseline`, `canary`, `selector`
(version | workload | ...), `window` (a duration, default --gate-window). Flagger defaults follow
its naming: service <name>.<namespace>.svc.cluster.local, baseline workload <name>-primary,
canary workload <name>, selector workload.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from meshlens.analytics.api_settings import ApiSettings
from meshlens.analytics.gate.judging import Judge, StoreJudge, load_canary_config
from meshlens.analytics.gate.model import Decision, Judgement
from meshlens.analytics.gate.record import record_rows, verdict_row
from meshlens.analytics.gate.state import (
    GateState,
    consume,
    list_states,
    load_state,
    pending_commands,
    rollout_name_problem,
)
from meshlens.analytics.window import TimeWindow
from meshlens.httpd import HttpError, Request, Response, Route
from meshlens.settings import parse_duration

log = logging.getLogger(__name__)

FLAGGER_HOOKS: Final = (
    "rollout",
    "pre-rollout",
    "confirm-rollout",
    "confirm-traffic-increase",
    "confirm-promotion",
    "rollback",
    "post-rollout",
    "event",
)
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
# A rollouts-pod-template-hash: rand.SafeEncodeString of a decimal uint32 (argo-rollouts
# utils/hash/hash.go), so only the characters the digits 0-9 map to.
_ARGO_HASH: Final = re.compile(r"^[4-9bcdf]{6,10}$")

JudgeFactory = Callable[[str, str, str, str], Judge]


def _clean(value: Any, what: str) -> str:
    text = str(value or "").strip()
    if not _NAME.match(text):
        raise HttpError(400, f"{what} must be a name like 'reviews' or 'v2', got {text!r}")
    return text


def _rollout(value: Any, what: str) -> str:
    """A rollout name from a request: it names files under <data_dir>/gate/."""
    text = str(value or "").strip()
    problem = rollout_name_problem(text)
    if problem:
        raise HttpError(400, f"{what}: {problem}")
    return text


def _side_counts(details: Mapping[str, Any]) -> dict[str, int | None]:
    """Requests judged per side (the most any metric saw); None when the judge reported none."""
    counts: dict[str, int | None] = {"baseline": None, "canary": None}
    for metric in details.get("metrics") or ():
        if not isinstance(metric, Mapping):
            continue
        for side in counts:
            n = metric.get(f"n_{side}")
            if isinstance(n, int):
                counts[side] = max(n, counts[side] or 0)
    return counts


def _strict_json(obj: Any) -> Any:
    """`obj` with non-finite floats as null (JSON as Go's encoding/json accepts it)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strict_json(v) for v in obj]
    return obj


class GateApi:
    """The handlers, with their collaborators injected (tests pass a clock and a data dir)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        judge_factory: JudgeFactory | None = None,
        window_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.window_s = window_s
        self.clock = clock
        self._judge_factory = judge_factory

    def judge(
        self, service: str, baseline: str, canary: str, selector: str, window_s: float
    ) -> Judgement:
        if self._judge_factory is not None:
            judge = self._judge_factory(service, baseline, canary, selector)
        else:
            judge = StoreJudge(
                self.data_dir, service=service, baseline=baseline, canary=canary, selector=selector
            )
        end = datetime.fromtimestamp(self.clock(), tz=UTC)
        return judge(TimeWindow(end - timedelta(seconds=window_s), end))

    def _window(self, raw: Any) -> float:
        if raw in (None, ""):
            return self.window_s
        try:
            seconds = parse_duration(str(raw))
        except ValueError as exc:
            raise HttpError(400, f"window: {exc}") from None
        if not 0 < seconds <= 7 * 86400:
            raise HttpError(400, "window must be between 0 and 7d")
        return seconds

    def _record(
        self,
        rollout: str,
        service: str,
        baseline: str,
        canary: str,
        phase: str,
        action: str,
        reason: str,
        j: Judgement | None,
        extra: dict[str, Any],
    ) -> None:
        state = GateState(rollout=rollout, service=service, phase=phase, canary_weight=-1)
        row = verdict_row(
            state,
            Decision(action, None, reason, j),
            baseline=baseline,
            canary=canary,
            now=self.clock(),
            weight_before=-1,
            applied=None,
            extra=extra,
        )
        row["canary_weight"] = extra.get("canary_weight")  # unknown unless the caller says
        try:
            record_rows(self.data_dir, [row])
        except OSError as exc:
            log.error("cannot record the gate answer: %s", exc)

    # --- Flagger ---------------------------------------------------------------------------

    def _held(self, rollout: str) -> bool:
        """A `meshlens gate pause` not yet followed by a resume."""
        held = False
        for _path, body in pending_commands(self.data_dir, rollout):
            if body.get("command") == "pause":
                held = True
            elif body.get("command") == "resume":
                held = False
        return held

    def _take_abort(self, rollout: str) -> bool:
        for path, body in pending_commands(self.data_dir, rollout):
            if body.get("command") == "abort":
                consume(path)
                return True
        st = load_state(self.data_dir, rollout)
        return st is not None and st.phase == "failed"

    def flagger(self, req: Request) -> Response:
        hook = req.path.rstrip("/").rsplit("/", 1)[-1]
        if hook not in FLAGGER_HOOKS:
            raise HttpError(
                404, f"unknown Flagger hook {hook!r}; use one of {', '.join(FLAGGER_HOOKS)}"
            )
        body = req.json()
        if not isinstance(body, Mapping):
            raise HttpError(400, "the body must be Flagger's webhook payload (a JSON object)")
        name = _clean(body.get("name"), "name")
        namespace = _clean(body.get("namespace") or "default", "namespace")
        phase = str(body.get("phase") or "")
        md = body.get("metadata") or {}
        if not isinstance(md, Mapping):
            raise HttpError(400, "metadata must be an object of strings")
        rollout = _rollout(md.get("rollout") or name, "metadata.rollout")
        service = str(md.get("service") or f"{name}.{namespace}.svc.cluster.local")
        baseline = _clean(md.get("baseline") or f"{name}-primary", "metadata.baseline")
        canary = _clean(md.get("canary") or name, "metadata.canary")
        selector = _clean(md.get("selector") or "workload", "metadata.selector")
        window_s = self._window(md.get("window"))
        extra = {
            "hook": hook,
            "flagger_phase": phase,
            "checksum": body.get("checksum", ""),
            "namespace": namespace,
        }

        def answer(status: int, action: str, reason: str, j: Judgement | None = None) -> Response:
            self._record(
                rollout,
                service,
                baseline,
                canary,
                phase.lower() or "flagger",
                f"flagger:{hook}:{status}",
                reason,
                j,
                extra,
            )
            out: dict[str, Any] = {"hook": hook, "action": action, "reason": reason}
            if j is not None:
                out.update(verdict=j.verdict, score=j.score)
            return Response.json(out, status)

        if hook in ("post-rollout", "event"):
            return answer(200, "none", f"{hook} received ({phase})")
        if hook == "confirm-rollout":
            if self._held(rollout):
                return answer(403, "hold", f"paused by meshlens gate pause --rollout {rollout}")
            return answer(200, "advance", "not paused")
        if hook == "rollback":
            if self._take_abort(rollout):
                return answer(200, "rollback", f"aborted (meshlens gate abort --rollout {rollout})")
            if str(md.get("rollbackOnFail", "")).lower() == "true":
                j = self.judge(service, baseline, canary, selector, window_s)
                if j.verdict == "fail":
                    return answer(200, "rollback", f"canary failed: {j.reason}", j)
                return answer(403, "none", f"no rollback: verdict {j.verdict}", j)
            return answer(403, "none", "no rollback requested")
        j = self.judge(service, baseline, canary, selector, window_s)
        if hook in ("rollout", "pre-rollout"):
            fail = j.verdict == "fail" or (
                j.verdict == "inconclusive" and str(md.get("inconclusive", "")) == "fail"
            )
            if fail:
                return answer(412, "fail", f"canary check failed: {j.verdict}: {j.reason}", j)
            return answer(200, "pass", f"{j.verdict}: {j.reason}", j)
        # confirm-traffic-increase / confirm-promotion: only a pass moves traffic.
        if self._held(rollout):
            return answer(403, "hold", f"paused by meshlens gate pause --rollout {rollout}", j)
        if j.verdict == "pass":
            return answer(
                200,
                "advance" if hook == "confirm-traffic-increase" else "promote",
                f"pass: {j.reason}",
                j,
            )
        return answer(403, "hold", f"{j.verdict}: {j.reason}", j)

    # --- Argo Rollouts ---------------------------------------------------------------------

    def argo(self, req: Request) -> Response:
        """Argo Rollouts' Web metric provider (metricproviders/webmetric/webmetric.go): a GET
        with the AnalysisTemplate's args templated into the query, or a POST/PUT with a JSON
        body. Always 200 with the verdict (a non-2xx is an Error measurement for Argo, never a
        pass); the AnalysisTemplate's conditions turn it into Successful/Failed/Inconclusive."""
        params: dict[str, Any] = {k: v[-1] for k, v in req.query.items() if v}
        if req.method in ("POST", "PUT") and req.body:
            body = req.json()
            if not isinstance(body, Mapping):
                raise HttpError(400, "the body must be a JSON object")
            params.update({k: v for k, v in body.items() if v is not None})
        service = str(params.get("service") or "").strip()
        if not service:
            raise HttpError(400, "service is required (e.g. reviews.default.svc.cluster.local)")
        baseline = _clean(params.get("baseline"), "baseline")
        canary = _clean(params.get("canary"), "canary")
        selector = _clean(params.get("selector") or "version", "selector")
        window_s = self._window(params.get("window"))
        rollout = _rollout(params.get("rollout") or service.split(".")[0], "rollout")
        j = self.judge(service, baseline, canary, selector, window_s)
        counts = _side_counts(j.details)
        sides = {"baseline": baseline, "canary": canary}
        empty = {side: value for side, value in sides.items() if counts[side] == 0}
        hint = self._argo_hint(service, selector, empty, window_s) if empty else ""
        extra: dict[str, Any] = {"caller": "argo", "requests": counts}
        if hint:
            extra["hint"] = hint
        self._record(
            rollout, service, baseline, canary, "argo", f"argo:{j.verdict}", j.reason, j, extra
        )
        score = j.score if j.score is not None and math.isfinite(j.score) else None
        # `summary`: what an AnalysisTemplate should point its jsonPath at ({$.summary}); Argo
        # stores the jsonPath result as the measurement's value, so it stays small and says why.
        summary: dict[str, Any] = {
            "verdict": j.verdict,
            "score": score,
            "reason": j.reason,
            "baseline": baseline,
            "canary": canary,
            "selector": selector,
            "requests": counts,
        }
        if hint:
            summary["hint"] = hint
        out = {
            **j.details,
            "verdict": j.verdict,
            "score": score,
            "reason": j.reason,
            "requests": counts,
            **({"hint": hint} if hint else {}),
            "summary": summary,
        }
        # Argo decodes the body with Go's encoding/json, which rejects NaN/Infinity: the body
        # would then be treated as plain text and every condition would fail to evaluate.
        return Response.json(_strict_json(out))

    def _argo_hint(
        self, service: str, selector: str, empty: Mapping[str, str], window_s: float
    ) -> str:
        """Why a side has no requests: the values the telemetry does carry for `service` in the
        window, per selector, and whether the asked value is an Argo pod-template hash."""
        parts = [
            f"no requests for {side} {value!r} with selector={selector}"
            for side, value in empty.items()
        ]
        hashes = [v for v in empty.values() if _ARGO_HASH.match(v)]
        if hashes and selector != "subset":
            what = (
                "looks like an Argo Rollouts pod-template hash, which never reaches"
                if len(hashes) == 1
                else "look like Argo Rollouts pod-template hashes, which never reach"
            )
            parts.append(
                f"{', '.join(repr(h) for h in hashes)} {what} telemetry (Istio drops the "
                "rollouts-pod-template-hash from the workload name and takes the version from "
                "the pod's labels): split traffic with DestinationRule subsets and ask with "
                "selector=subset, baseline=<stableSubsetName>, canary=<canarySubsetName>"
            )
        try:
            seen = self._seen_values(service, window_s)
        except Exception as exc:  # the hint is best effort; the verdict stands without it
            log.warning("cannot list the telemetry values of %s: %s", service, exc)
            seen = {}
        if any(seen.values()):
            listed = "; ".join(
                f"{sel}: {', '.join(f'{v} ({n})' for v, n in vals)}"
                for sel, vals in seen.items()
                if vals
            )
            parts.append(f"the telemetry of {service} in the window carries {listed}")
        else:
            parts.append(f"no requests to {service} at all in the window")
        return "; ".join(parts)

    def _seen_values(self, service: str, window_s: float) -> dict[str, list[tuple[str, int]]]:
        """The most frequent values per selector for `service` in the window (requests): the
        subsets of client-side reports, and destination_version / destination_workload."""
        from meshlens.analytics.catalog import connect

        end = datetime.fromtimestamp(self.clock(), tz=UTC)
        window = TimeWindow(end - timedelta(seconds=window_s), end)
        params = {"service": service, "start": window.start, "end": window.end}
        where = (
            "protocol <> 'tcp' AND (destination_service_name = $service OR "
            "destination_canonical_service = $service OR destination_service = $service) "
            "AND ts >= $start AND ts < $end"
        )
        queries = {
            "subset": "SELECT split_part(upstream_cluster, '|', 3) AS v, count(*) AS n "
            f"FROM requests WHERE reporter = 'source' AND {where} GROUP BY v",
            "version": f"SELECT destination_version AS v, count(*) AS n FROM traffic "
            f"WHERE {where} GROUP BY v",
            "workload": f"SELECT destination_workload AS v, count(*) AS n FROM traffic "
            f"WHERE {where} GROUP BY v",
        }
        out: dict[str, list[tuple[str, int]]] = {}
        conn = connect(self.data_dir, window)
        try:
            for selector, sql in queries.items():
                rows = conn.sql(
                    f"SELECT v, n FROM ({sql}) WHERE coalesce(v, '') NOT IN ('', 'unknown') "
                    "ORDER BY n DESC, v LIMIT 5",
                    params=params,
                ).fetchall()
                out[selector] = [(str(v), int(n)) for v, n in rows]
        finally:
            conn.close()
        return out

    # --- Kayenta ---------------------------------------------------------------------------

    def kayenta(self, req: Request) -> Response:
        from meshlens.analytics.judge.kayenta import remote_judge

        body = req.json()
        if not isinstance(body, Mapping):
            raise HttpError(400, "the body must be a RemoteJudgeRequest JSON object")
        try:
            return Response.json(remote_judge(body))
        except (KeyError, TypeError, ValueError) as exc:
            raise HttpError(400, f"bad RemoteJudgeRequest: {exc}") from None

    # --- state -----------------------------------------------------------------------------

    def rollouts(self, req: Request) -> Response:
        name = req.path[len("/gate/rollouts") :].strip("/")
        if not name:
            return Response.json({"rollouts": [s.to_json() for s in list_states(self.data_dir)]})
        st = load_state(self.data_dir, _rollout(name, "rollout"))
        if st is None:
            raise HttpError(404, f"no rollout {name!r}")
        return Response.json(st.to_json())

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/gate/flagger/*", self.flagger),
            Route("GET", "/gate/argo/verdict", self.argo),
            Route("POST", "/gate/argo/verdict", self.argo),
            Route("PUT", "/gate/argo/verdict", self.argo),
            Route("POST", "/judge", self.kayenta),
            Route("GET", "/gate/rollouts", self.rollouts),
            Route("GET", "/gate/rollouts/*", self.rollouts),
        ]


def gate_routes(settings: ApiSettings | Mapping[str, Any]) -> list[Route]:
    """Routes for the API port (see ApiSettings for what a mapping may carry)."""
    s = ApiSettings.of(settings)
    data_dir = s.data_dir
    config_path = s.gate_judge_config
    window_s = s.gate_window
    cached: list[Any] = []

    def factory(service: str, baseline: str, canary: str, selector: str) -> Judge:
        if not cached:
            cached.append(load_canary_config(config_path))
        return StoreJudge(
            data_dir,
            service=service,
            baseline=baseline,
            canary=canary,
            selector=selector,
            config=cached[0],
        )

    return GateApi(data_dir, judge_factory=factory, window_s=window_s).routes()
