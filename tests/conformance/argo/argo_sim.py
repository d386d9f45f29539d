"""What Argo Rollouts does with an AnalysisTemplate's Web metric, reproduced in Python from its
source (cited, with commit and line ranges, in SOURCES.md and test_argo_sim.py), so that tests
can send meshlens the exact request Argo sends and judge our answer the way Argo does:

  rollout_args     utils/analysis/factory.go BuildArgumentsForRolloutAnalysisRun (value,
                   valueFrom.podTemplateHashValue Stable|Latest, valueFrom.fieldRef metadata.*)
  merge_args       utils/analysis/helpers.go MergeArgs + ResolveArgs
  resolve_metric   utils/analysis/factory.go ResolveMetricArgs: the metric marshalled to JSON,
                   {{args.x}} substituted (utils/template/template.go ResolveQuotedArgs,
                   fasttemplate, tags trimmed) and unmarshalled
  web_request      metricproviders/webmetric/webmetric.go Run: method (GET by default), body /
                   jsonBody rules, headers (Set, so canonical names), Content-Type for jsonBody,
                   timeout (NewWebMetricHttpClient: 10 s unless timeoutSeconds > 0)
  send             Go's net/http client on HTTP/1.1: Host, User-Agent Go-http-client/1.1,
                   Content-Length with a body, the metric's headers, Accept-Encoding gzip
  measure          Run + parseResponse: non-2xx -> Error; JSON -> jsonPath (k8s.io/client-go
                   jsonpath, default {$}) -> first result -> EvaluateResult; not JSON -> the body
                   string is the result
  evaluate_result  utils/evaluate/evaluate.go EvaluateResult / EvalCondition over an expr-lang
                   subset: literals, result/member/index access, == != < <= > >=, && || !,
                   and/or/not, asInt asFloat isNil default isNaN isInf. Anything else raises
                   Unsupported so that a template using it cannot be silently misjudged.
"""

from __future__ import annotations

import gzip
import http.client
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

SUCCESSFUL = "Successful"
FAILED = "Failed"
INCONCLUSIVE = "Inconclusive"
ERROR = "Error"

POD_TEMPLATE_HASH_LABEL = "rollouts-pod-template-hash"  # v1alpha1.DefaultRolloutUniqueLabelKey


class ArgoError(Exception):
    """What Argo would record as an Error measurement (or a failed AnalysisRun creation)."""


class Unsupported(Exception):
    """A construct this reproduction does not implement."""


# --- args ------------------------------------------------------------------------------------


def _field_path(obj: dict[str, Any], path: str) -> str:
    """k8s.io/kubernetes/pkg/fieldpath.ExtractFieldPathAsString for metadata.* paths."""
    meta = obj.get("metadata") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {"metadata.name": "name", "metadata.namespace": "namespace", "metadata.uid": "uid"}
    if path in simple:
        return str(meta.get(simple[path], ""))
    raise Unsupported(f"fieldRef {path!r}")


def rollout_args(
    args: list[dict[str, Any]], rollout: dict[str, Any], *, stable_hash: str, latest_hash: str
) -> list[dict[str, Any]]:
    """BuildArgumentsForRolloutAnalysisRun: the Rollout's analysis args, resolved."""
    out = []
    for arg in args:
        value = arg.get("value")
        value_from = arg.get("valueFrom")
        if value_from:
            which = value_from.get("podTemplateHashValue")
            if which is not None:
                value = {"Latest": latest_hash, "Stable": stable_hash}.get(which, value)
            elif "fieldRef" in value_from:
                value = _field_path(rollout, value_from["fieldRef"]["fieldPath"])
        out.append({"name": arg["name"], "value": "" if value is None else str(value)})
    return out


def merge_args(
    incoming: list[dict[str, Any]], template_args: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """MergeArgs: the template's args, with the incoming values for the names it declares."""
    merged = [dict(a) for a in template_args]
    for arg in incoming:
        for m in merged:
            if m["name"] == arg["name"]:
                if arg.get("value") is not None:
                    m["value"] = arg["value"]
                elif arg.get("valueFrom") is not None:
                    m["valueFrom"] = arg["valueFrom"]
    for m in merged:
        if m.get("value") is None and m.get("valueFrom") is None:
            raise ArgoError(f"args.{m['name']} was not resolved")
    return merged


_TAG = re.compile(r"\{\{(.*?)\}\}", re.S)


def resolve_metric(metric: dict[str, Any], args: list[dict[str, Any]]) -> dict[str, Any]:
    """ResolveMetricArgs: JSON round trip with {{args.x}} replaced by the JSON-escaped value."""
    values: dict[str, str] = {}
    for arg in args:
        if arg.get("value") is None:
            raise ArgoError(f'argument "{arg["name"]}" was not supplied')
        values[f"args.{arg['name']}"] = json.dumps(str(arg["value"]))[1:-1]  # strconv.Quote
    unresolved: list[str] = []

    def sub(m: re.Match[str]) -> str:
        tag = m.group(1).strip()
        if tag in values:
            return values[tag]
        unresolved.append(m.group(1))
        return ""

    text = _TAG.sub(sub, json.dumps(metric))
    if unresolved:
        raise ArgoError(f"failed to resolve {{{{{unresolved[-1]}}}}}")
    resolved: dict[str, Any] = json.loads(text)
    return resolved


# --- the request -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WebRequest:
    method: str
    url: str
    headers: list[tuple[str, str]]  # on the wire, in order
    body: bytes | None
    timeout_s: float


def _canonical(key: str) -> str:
    """textproto.CanonicalMIMEHeaderKey (for token keys)."""
    return "-".join(p[:1].upper() + p[1:].lower() for p in key.split("-"))


def web_request(metric: dict[str, Any]) -> WebRequest:
    web = metric["provider"]["web"]
    method = web.get("method") or "GET"
    body_text = web.get("body") or ""
    json_body = web.get("jsonBody")
    if body_text and json_body is not None:
        raise ArgoError("use either Body or JSONBody; both cannot exists for WebMetric payload")
    if (body_text or json_body is not None) and method == "GET":
        raise ArgoError("Body/JSONBody can only be used with POST or PUT WebMetric Method types")
    body: bytes | None = None
    if body_text:
        body = body_text.encode()
    elif json_body is not None:
        body = json.dumps(json_body, separators=(",", ":"), sort_keys=True).encode()
    user: dict[str, str] = {}
    for h in web.get("headers") or []:
        user[_canonical(h["key"])] = h["value"]
    if json_body is not None:
        user["Content-Type"] = "application/json"
    parts = urlsplit(web["url"])
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ArgoError(f"unsupported URL {web['url']!r}")
    headers = [("Host", user.pop("Host", parts.netloc)), ("User-Agent", "Go-http-client/1.1")]
    if body is not None:
        headers.append(("Content-Length", str(len(body))))
    headers += sorted(user.items())  # http.Header.Write sorts the keys
    headers.append(("Accept-Encoding", "gzip"))
    timeout = web.get("timeoutSeconds") or 0
    return WebRequest(method, web["url"], headers, body, float(timeout if timeout > 0 else 10))


@dataclass
class Sent:
    status: int
    body: bytes
    request_line: str
    headers: list[tuple[str, str]] = field(default_factory=list)


def send(req: WebRequest, connect_to: tuple[str, int]) -> Sent:
    """Send `req` as Go's client would, over a TCP connection to `connect_to` (the URL's host
    is kept in the Host header, so a test server can stand in for meshlens.meshlens:8080)."""
    parts = urlsplit(req.url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = http.client.HTTPConnection(*connect_to, timeout=req.timeout_s)
    try:
        conn.putrequest(req.method, target, skip_host=True, skip_accept_encoding=True)
        for k, v in req.headers:
            conn.putheader(k, v)
        conn.endheaders(req.body)
        resp = conn.getresponse()
        data = resp.read()
        if (resp.getheader("Content-Encoding") or "").lower() == "gzip":
            data = gzip.decompress(data)  # Go decompresses when it asked for gzip itself
        return Sent(resp.status, data, f"{req.method} {target} HTTP/1.1", req.headers)
    finally:
        conn.close()


# --- jsonPath --------------------------------------------------------------------------------

_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\['([^']*)'\]")


def jsonpath_find(template: str, data: Any) -> list[Any]:
    """k8s.io/client-go/util/jsonpath FindResults for one {...} of $ / .field / [n] / ['key']
    steps; a missing key is an error (allowMissingKeys is off in Argo)."""
    m = re.fullmatch(r"\{(.*)\}", template.strip(), re.S)
    if not m:
        raise Unsupported(f"jsonPath {template!r}")
    expr = m.group(1).strip()
    if expr.startswith("$"):
        expr = expr[1:]
    pos, node = 0, data
    while pos < len(expr):
        step = _STEP.match(expr, pos)
        if not step:
            raise Unsupported(f"jsonPath {template!r} at {expr[pos:]!r}")
        name, index, quoted = step.groups()
        if index is not None:
            if not isinstance(node, list) or int(index) >= len(node):
                raise ArgoError(f"array index out of bounds: index {index}")
            node = node[int(index)]
        else:
            key = name if name is not None else quoted
            if not isinstance(node, dict) or key not in node:
                raise ArgoError(f"Could not find JSONPath in body: {key} is not found")
            node = node[key]
        pos = step.end()
    return [node]


def go_marshal(value: Any) -> str:
    """encoding/json.Marshal of a decoded value: compact, sorted keys, HTML-safe escapes."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(ch, esc)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


# --- expr ------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.\d*|\d+)|(?P<str>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')"
    r"|(?P<op>&&|\|\||==|!=|<=|>=|[-<>!().,\[\]])|(?P<name>[A-Za-z_][A-Za-z0-9_]*))"
)


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise Unsupported(f"expr token at {text[pos:]!r}")
        pos = m.end()
        if m.group("num"):
            s = m.group("num")
            out.append(("lit", float(s) if "." in s else int(s)))
        elif m.group("str"):
            s = m.group("str")
            body = s[1:-1]
            if s[0] == "'":
                body = body.replace('\\"', '"').replace("\\'", "'").replace('"', '\\"')
            out.append(("lit", json.loads(f'"{body}"')))
        elif m.group("op"):
            out.append(("op", m.group("op")))
        else:
            name = m.group("name")
            words = {"true": ("lit", True), "false": ("lit", False), "nil": ("lit", None)}
            ops = {"and": ("op", "&&"), "or": ("op", "||"), "not": ("op", "!")}
            out.append(words.get(name) or ops.get(name) or ("name", name))
    return out


def _type(v: Any) -> str:
    return "<nil>" if v is None else type(v).__name__


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _equal(a: Any, b: Any) -> bool:
    if _is_num(a) and _is_num(b):
        return bool(a == b)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return type(a) is type(b) and bool(a == b)


def _compare(op: str, a: Any, b: Any) -> bool:
    if not ((_is_num(a) and _is_num(b)) or (isinstance(a, str) and isinstance(b, str))):
        raise ArgoError(f"invalid operation: {_type(a)} {op} {_type(b)}")
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def _as_number(v: Any, conv: type) -> Any:
    if _is_num(v):
        return conv(v)
    if isinstance(v, str):
        try:
            return conv(v) if conv is float else int(v, 10)
        except ValueError:
            raise ArgoError(f"cannot parse {v!r}") from None
    raise ArgoError(f"{'asInt' if conv is int else 'asFloat'}() not supported on {_type(v)}")


class _Expr:
    """A recursive-descent evaluator (evaluation while parsing, no short-circuit: a condition
    over `result` has no side effects)."""

    def __init__(self, text: str, result: Any) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.result = result

    def peek(self) -> tuple[str, Any] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, op: str | None = None) -> tuple[str, Any]:
        tok = self.peek()
        if tok is None or (op is not None and tok != ("op", op)):
            raise Unsupported(f"expected {op or 'a token'} at token {self.i}")
        self.i += 1
        return tok

    def run(self) -> Any:
        v = self.or_()
        if self.peek() is not None:
            raise Unsupported(f"unexpected {self.peek()}")
        return v

    def _bool(self, v: Any, op: str) -> bool:
        if not isinstance(v, bool):
            raise ArgoError(f"invalid operation: {op} on {_type(v)}")
        return v

    def or_(self) -> Any:
        v = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            rhs = self.and_()
            v = self._bool(v, "||") or self._bool(rhs, "||")
        return v

    def and_(self) -> Any:
        v = self.not_()
        while self.peek() == ("op", "&&"):
            self.take()
            rhs = self.not_()
            v = self._bool(v, "&&") and self._bool(rhs, "&&")
        return v

    def not_(self) -> Any:
        if self.peek() == ("op", "!"):
            self.take()
            return not self._bool(self.not_(), "!")
        return self.cmp()

    def cmp(self) -> Any:
        a = self.unary()
        tok = self.peek()
        if tok and tok[0] == "op" and tok[1] in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            b = self.unary()
            if tok[1] in ("==", "!="):
                return _equal(a, b) == (tok[1] == "==")
            return _compare(tok[1], a, b)
        return a

    def unary(self) -> Any:
        if self.peek() == ("op", "-"):  # negation; binary arithmetic is not reproduced
            self.take()
            v = self.unary()
            if not _is_num(v):
                raise ArgoError(f"invalid operation: - on {_type(v)}")
            return -v
        return self.postfix()

    def postfix(self) -> Any:
        v = self.primary()
        while True:
            tok = self.peek()
            if tok == ("op", "."):
                self.take()
                kind, name = self.take()
                if kind != "name":
                    raise Unsupported("member access needs a name")
                v = self.member(v, name)
            elif tok == ("op", "["):
                self.take()
                key = self.or_()
                self.take("]")
                v = self.member(v, key)
            else:
                return v

    @staticmethod
    def member(v: Any, key: Any) -> Any:
        if isinstance(v, dict):
            return v.get(key)  # a missing key of a map is nil in expr
        if isinstance(v, list) and _is_num(key):
            if not 0 <= int(key) < len(v):
                raise ArgoError(f"index out of range: {key}")
            return v[int(key)]
        raise ArgoError(f"cannot fetch {key} from {_type(v)}")

    def primary(self) -> Any:
        kind, val = self.take()
        if kind == "lit":
            return val
        if (kind, val) == ("op", "("):
            v = self.or_()
            self.take(")")
            return v
        if kind == "name":
            if self.peek() == ("op", "("):
                return self.call(val)
            if val == "result":
                return self.result
            raise ArgoError(f"unknown name {val}")
        raise Unsupported(f"unexpected {val!r}")

    def call(self, name: str) -> Any:
        self.take("(")
        args: list[Any] = []
        while self.peek() != ("op", ")"):
            args.append(self.or_())
            if self.peek() == ("op", ","):
                self.take()
        self.take(")")
        if name == "asInt" and len(args) == 1:
            return _as_number(args[0], int)
        if name == "asFloat" and len(args) == 1:
            return _as_number(args[0], float)
        if name == "isNil" and len(args) == 1:
            return self.result is None  # Argo's isNil looks at the result, not its argument
        if name == "default" and len(args) == 2:
            return args[1] if self.result is None else self.result
        if name == "isNaN" and len(args) == 1:
            return math.isnan(float(args[0]))
        if name == "isInf" and len(args) == 1:
            return math.isinf(float(args[0]))
        raise Unsupported(f"function {name}")


def eval_condition(result: Any, condition: str) -> bool:
    out = _Expr(condition, result).run()
    if not isinstance(out, bool):
        raise ArgoError(f"expected bool, but got {_type(out)}")
    return out


def evaluate_result(result: Any, metric: dict[str, Any]) -> str:
    """EvaluateResult: the phase of one measurement whose value is `result`."""
    success_cond = metric.get("successCondition") or ""
    failure_cond = metric.get("failureCondition") or ""
    success = failure = False
    if success_cond:
        try:
            success = eval_condition(result, success_cond)
        except ArgoError:
            return ERROR
    if failure_cond:
        try:
            failure = eval_condition(result, failure_cond)
        except ArgoError:
            return ERROR
    if not success_cond and not failure_cond:
        return SUCCESSFUL
    if success_cond and not failure_cond:
        failure = not success
    elif failure_cond and not success_cond:
        success = not failure
    if failure:
        return FAILED
    if not success:
        return INCONCLUSIVE
    return SUCCESSFUL


# --- one measurement -------------------------------------------------------------------------


@dataclass
class Measurement:
    phase: str
    value: str = ""
    message: str = ""
    result: Any = None
    sent: Sent | None = None


def parse_response(metric: dict[str, Any], body: bytes) -> Measurement:
    """parseResponse: JSON -> jsonPath -> the first result; otherwise the body text."""
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except ValueError:  # not JSON (Go's json.Unmarshal fails): the text is the result
        text = body.decode("utf-8", "replace")
        return Measurement(evaluate_result(text, metric), text, result=text)
    try:
        found = jsonpath_find(metric["provider"]["web"].get("jsonPath") or "{$}", data)
    except ArgoError as exc:
        return Measurement(ERROR, message=str(exc))
    if not found:
        return Measurement(ERROR, message="result of web metric produced no value")
    value = found[0]
    return Measurement(evaluate_result(value, metric), go_marshal(value), result=value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"Go's encoding/json rejects {name}")


def measure(metric: dict[str, Any], connect_to: tuple[str, int]) -> Measurement:
    """Run: one measurement of a resolved Web metric against a server at `connect_to`."""
    try:
        req = web_request(metric)
    except ArgoError as exc:
        return Measurement(ERROR, message=str(exc))
    sent = send(req, connect_to)
    if not 200 <= sent.status < 300:
        return Measurement(
            ERROR, message=f"received non 2xx response code: {sent.status}", sent=sent
        )
    m = parse_response(metric, sent.body)
    m.sent = sent
    return m


# --- Istio subset routing (rollout/trafficrouting/istio/istio.go UpdateHash) ------------------


def update_hash(
    destination_rule: dict[str, Any],
    *,
    stable_subset: str,
    canary_subset: str,
    stable_hash: str,
    canary_hash: str,
) -> dict[str, Any]:
    """The DestinationRule after Argo's UpdateHash: the hash label merged into the stable and
    canary subsets' labels, any other subset dropped."""
    out = json.loads(json.dumps(destination_rule))
    kept = []
    for subset in out["spec"].get("subsets") or []:
        if subset["name"] == canary_subset:
            subset.setdefault("labels", {})[POD_TEMPLATE_HASH_LABEL] = canary_hash
        elif subset["name"] == stable_subset:
            subset.setdefault("labels", {})[POD_TEMPLATE_HASH_LABEL] = stable_hash
        else:
            continue
        kept.append(subset)
    out["spec"]["subsets"] = kept
    return out
