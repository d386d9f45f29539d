"""argo_sim.py reproduces Argo Rollouts: checked against Argo's own expectations (cases of
metricproviders/webmetric/webmetric_test.go TestRunSuite, Argo's e2e Web AnalysisTemplates kept
in upstream/).

The upstream source it reproduces is cited, not copied (argoproj/argo-rollouts at commit
9f8d111d8f8e3e88b6d7f8bbdf62fd3cd863ef9d; see SOURCES.md):

- metricproviders/webmetric/webmetric.go: `Run` (L52-125: GET unless `method` is set, L60;
  `body`/`jsonBody` only with POST/PUT, L75; headers via `Header.Set`, L94-97; Content-Type
  application/json only for `jsonBody`, L100; non-2xx is an Error, L110), `parseResponse`
  (L127-153: the jsonPath result goes to `evaluate.EvaluateResult`, L138),
  `NewWebMetricHttpClient` (L187-217: 10 s unless `timeoutSeconds` > 0, L193) and
  `NewWebMetricJsonParser` (L219-227: `jsonPath` defaults to `{$}`, L223).
- utils/evaluate/evaluate.go: `EvaluateResult` (L18-58: with only a successCondition a false
  one is a failure, L40-42, and vice versa, L45; neither condition true is Inconclusive,
  L52-53) and `EvalCondition` (L116-152: the environment's `result`, L120).
- utils/template/template.go: the `{{`/`}}` tags (L16-23), `ResolveQuotedArgs` (L70-86: values
  `strconv.Quote`d, L79) and `resolve` (L88-100: tags trimmed, L91).

If Argo changes any of these, revisit argo_sim.py against the new source.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conformance.argo import argo_sim

UPSTREAM = Path(__file__).resolve().parent / "upstream"


def metric(success: str = "", failure: str = "", json_path: str = "") -> dict[str, Any]:
    web: dict[str, Any] = {"url": "http://example.invalid/"}
    if json_path:
        web["jsonPath"] = json_path
    return {
        "name": "foo",
        "successCondition": success,
        "failureCondition": failure,
        "provider": {"web": web},
    }


K = "{$.key[0].key2.value}"
# (response body, metric, expected measurement value, expected phase): from TestRunSuite
RUN_SUITE = [
    ('{"key": [{"key2": {"value": "1"}}]}', metric("asInt(result) > 0", "asInt(result) <= 0", K),
     '"1"', argo_sim.SUCCESSFUL),
    ('{"key": [{"key2": {"value": "0"}}]}', metric("asInt(result) > 0", "asInt(result) <= 0", K),
     '"0"', argo_sim.FAILED),
    ('{"key": [{"key2": {"value": "1.2"}}]}',
     metric("asFloat(result) > 1.1", "asFloat(result) <= 0", K), '"1.2"', argo_sim.SUCCESSFUL),
    ('{"key": [{"key2": {"value": "1.2"}}]}',
     metric("asFloat(result) > 1.1", "asFloat(result) < 1.3", K), '"1.2"', argo_sim.FAILED),
    ('{"key": [{"key2": {"value": 1}}]}', metric("result > 0", "result <= 0", K), "1",
     argo_sim.SUCCESSFUL),
    ('{"key": [{"key2": {"value": 0}}]}', metric("result > 0", "result <= 0", K), "0",
     argo_sim.FAILED),
    ('{"key": [{"key2": {"value": 1.1}}]}', metric("result > 0", "result <= 0", K), "1.1",
     argo_sim.SUCCESSFUL),
    ('{"key": [{"key2": {"value": -1.1}}]}', metric("result > 0", "result <= 0", K), "-1.1",
     argo_sim.FAILED),
    ('{"key": [{"key2": {"value": "true"}}]}',
     metric('result == "true"', 'result == "false"', K), '"true"', argo_sim.SUCCESSFUL),
    ('{"key": [{"key2": {"value": "true"}}]}',
     metric('result == "true"', 'result == "true"', K), '"true"', argo_sim.FAILED),
    ('{"key": [{"key2": {"value": true}}]}', metric("result == true", "result == false", K),
     "true", argo_sim.SUCCESSFUL),
    ('{"key": [{"key2": {"value": false}}]}', metric("result == true", "result == false", K),
     "false", argo_sim.FAILED),
    ('{"key":{"num":1.2, "bool":true, "mapfield":{"foo":"bar"}}}',
     metric('result.num > 1.1 && result.bool && result.mapfield.foo == "bar"', "", "{$.key}"),
     '{"bool":true,"mapfield":{"foo":"bar"},"num":1.2}', argo_sim.SUCCESSFUL),
    ('{"key":{"num":1.2, "bool":true, "mapfield":{"foo":"bar"}}}',
     metric('result.num > 1.1 && result.bool && result.mapfield.foo == "bar"',
            'result.num > 1.1 && result.bool && result.mapfield.foo == "bar"', "{$.key}"),
     '{"bool":true,"mapfield":{"foo":"bar"},"num":1.2}', argo_sim.FAILED),
    ("", metric("true", "", K), "", argo_sim.SUCCESSFUL),
    ("", metric("result == 'fail123'"), "", argo_sim.FAILED),
    ("test: notJson", metric("result == 'test: notJson'", "", K), "test: notJson",
     argo_sim.SUCCESSFUL),
    ("OK", metric("result == 'fail123'"), "OK", argo_sim.FAILED),
    ('{"key": [{"key2": {"value": "true"}}]}', metric("true", "true", "{$.key[0].key2.novalue}"),
     "", argo_sim.ERROR),
    ("{}", metric("true"), "{}", argo_sim.SUCCESSFUL),
]  # fmt: skip


@pytest.mark.parametrize(("body", "spec", "value", "phase"), RUN_SUITE)
def test_parse_response_as_argos_run_suite(
    body: str, spec: dict[str, Any], value: str, phase: str
) -> None:
    m = argo_sim.parse_response(spec, body.encode())
    assert m.phase == phase, m.message
    if phase != argo_sim.ERROR:
        assert m.value == value
    else:
        assert "Could not find JSONPath in body" in m.message


def test_conditions_like_expr() -> None:
    result = {"verdict": "inconclusive", "score": 0.0, "n": 3, "list": [1, 2]}
    assert argo_sim.eval_condition(result, 'result.verdict == "inconclusive"')
    assert not argo_sim.eval_condition(result, "result.missing == 'x'")  # missing key: nil
    assert argo_sim.eval_condition(result, "result.missing == nil")
    assert argo_sim.eval_condition(result, "result.n == 3.0 and not (result.score > 0)")
    assert argo_sim.eval_condition(result, "result.list[1] == 2 || false")
    assert argo_sim.eval_condition(result, "result.n > -1")
    assert not argo_sim.eval_condition(result, "result.n == '3'")  # no coercion
    for bad in ("result.verdict.x == 1", "result.verdict && true", "result.n"):
        with pytest.raises(argo_sim.ArgoError):
            argo_sim.eval_condition(result, bad)
    with pytest.raises(argo_sim.Unsupported):
        argo_sim.eval_condition(result, "all(result.list, {# < 5})")
    # a string result (a body that is not JSON) has no fields: Error, never a pass
    assert argo_sim.evaluate_result("pass", metric('result.verdict == "pass"')) == argo_sim.ERROR
    # Go's encoding/json rejects NaN: the body is then text, and the condition cannot hold
    m = argo_sim.parse_response(metric('result.verdict == "pass"'), b'{"verdict":"pass","x":NaN}')
    assert m.phase == argo_sim.ERROR


# --- requests ----------------------------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, list[tuple[str, str]], bytes]] = []
    status = 200

    def _answer(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        type(self).seen.append((self.requestline, list(self.headers.items()), self.rfile.read(n)))
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"major": "1", "minor": "33"}')

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, int]]:
    _Recorder.seen = []
    _Recorder.status = 200
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield ("127.0.0.1", srv.server_address[1])
    finally:
        srv.shutdown()
        srv.server_close()


def upstream_template(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((UPSTREAM / name).read_text())
    return doc


def test_argos_e2e_web_templates(recorder: tuple[str, int]) -> None:
    """Argo's e2e AnalysisTemplates: GET of the templated URL; the Kubernetes /version answer
    passes web-background; a JSON answer matching neither condition is Inconclusive."""
    tmpl = upstream_template("analysistemplate-web-background.yaml")
    (spec,) = tmpl["spec"]["metrics"]
    resolved = argo_sim.resolve_metric(spec, argo_sim.merge_args([], tmpl["spec"]["args"]))
    req = argo_sim.web_request(resolved)
    assert (req.method, req.url, req.body, req.timeout_s) == (
        "GET",
        "https://kubernetes.default.svc/version",
        None,
        10.0,  # no timeoutSeconds: Go client timeout 10 s
    )
    resolved["provider"]["web"]["url"] = "http://kubernetes.default.svc/version"
    m = argo_sim.measure(resolved, recorder)
    assert m.phase == argo_sim.SUCCESSFUL and m.value == '{"major":"1","minor":"33"}'
    ((line, headers, body),) = _Recorder.seen
    assert line == "GET /version HTTP/1.1" and body == b""
    assert headers == [
        ("Host", "kubernetes.default.svc"),
        ("User-Agent", "Go-http-client/1.1"),
        ("Accept-Encoding", "gzip"),
    ]
    tmpl = upstream_template("analysistemplate-web-background-inconclusive.yaml")
    (spec,) = tmpl["spec"]["metrics"]
    dns_answer = b'{"Status": 0, "TC": false, "Answer": [{"name": "google.com.", "type": 1}]}'
    assert argo_sim.parse_response(spec, dns_answer).phase == argo_sim.INCONCLUSIVE


def test_bodies_headers_and_status(recorder: tuple[str, int]) -> None:
    base = {
        "name": "m",
        "successCondition": 'result.major == "1"',
        "provider": {"web": {"url": "http://svc:8080/x?a={{ args.a }}"}},
    }
    args = [{"name": "a", "value": 'q"1'}]
    resolved = argo_sim.resolve_metric(base, args)
    assert resolved["provider"]["web"]["url"] == 'http://svc:8080/x?a=q"1'
    with pytest.raises(argo_sim.ArgoError, match="failed to resolve"):
        argo_sim.resolve_metric(base, [])
    with pytest.raises(argo_sim.ArgoError, match=r"args\.a was not resolved"):
        argo_sim.merge_args([], [{"name": "a"}])
    post = argo_sim.resolve_metric(base, args)
    post["provider"]["web"].update(
        method="POST", jsonBody={"b": 1, "a": "x"}, headers=[{"key": "x-token", "value": "t"}]
    )
    m = argo_sim.measure(post, recorder)
    assert m.phase == argo_sim.SUCCESSFUL
    ((_line, headers, body),) = _Recorder.seen
    assert body == b'{"a":"x","b":1}'
    assert headers == [
        ("Host", "svc:8080"),
        ("User-Agent", "Go-http-client/1.1"),
        ("Content-Length", "15"),
        ("Content-Type", "application/json"),
        ("X-Token", "t"),
        ("Accept-Encoding", "gzip"),
    ]
    get_with_body = argo_sim.resolve_metric(base, args)
    get_with_body["provider"]["web"]["body"] = "x"
    assert argo_sim.measure(get_with_body, recorder).phase == argo_sim.ERROR
    _Recorder.status = 400
    m = argo_sim.measure(argo_sim.resolve_metric(base, args), recorder)
    assert m.phase == argo_sim.ERROR and m.message == "received non 2xx response code: 400"
