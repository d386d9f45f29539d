"""OTLP over HTTP (:4318): POST /v1/traces, /v1/metrics, /v1/logs on `meshlens.httpd`.

As the OTLP spec asks: `application/x-protobuf` or `application/json` bodies (JSON is turned
into the same protobuf bytes the gRPC path stores, by collector.decode.otlp_json), gzip
(undone by httpd within the size limit), and the answer in the request's encoding: 200 with an
Export*ServiceResponse (partial_success when items were rejected); on failure a google.rpc.Status
with 400 (bad data, do not retry), 413 (too large), 415 (content type), 429 / 503 with
Retry-After (retry). A JSON body with a bad value gets a 400 whose message names the field's JSON
path and the problem, and whose details hold a google.rpc.BadRequest with that field violation
(the OTLP spec's "Bad Data"). Auth, the body-size limit and the framing are httpd's
(HttpOptions): a body arrives here whole (Content-Length or chunked) or not at all, so a client
that gave up mid-send has nothing stored or acknowledged and its retry is no duplicate.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Final

from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from meshlens.collector.errors import CollectorError, DecodeError, JsonFieldError
from meshlens.collector.receivers import otlp
from meshlens.collector.receivers.failures import classify
from meshlens.collector.receivers.ingest import Ingest
from meshlens.httpd import Request, Response, Route

RECEIVER: Final = "otlp_http"
PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"


def _status(
    code: int,
    message: str,
    http_status: int,
    as_json: bool,
    headers: Mapping[str, str] | None = None,
    details: Sequence[Message] = (),
) -> Response:
    hdrs = tuple((headers or {}).items())
    status = status_pb2.Status(code=code, message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    if as_json:
        body = json.dumps(json_format.MessageToDict(status)).encode()
        return Response(http_status, body, JSON, hdrs)
    return Response(http_status, status.SerializeToString(), PROTOBUF, hdrs)


def _bad_request(exc: DecodeError) -> tuple[Message, ...]:
    """google.rpc.BadRequest naming the field, when the error knows which one."""
    if not isinstance(exc, JsonFieldError):
        return ()
    violation = error_details_pb2.BadRequest.FieldViolation(field=exc.path, description=exc.problem)
    return (error_details_pb2.BadRequest(field_violations=[violation]),)


def _to_proto(signal: otlp.Signal, body: bytes) -> bytes:
    # Imported on first JSON request: most senders use protobuf.
    from meshlens.collector.decode.otlp_json import otlp_json_to_proto

    return otlp_json_to_proto(signal.name, body)


def handle_export(ingest: Ingest, signal: otlp.Signal, req: Request) -> Response:
    ctype = req.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    as_json = ctype == JSON
    if ctype not in (PROTOBUF, JSON):
        ingest.metrics.request(RECEIVER, signal.name, "unsupported_media_type")
        return _status(
            3,
            f"unsupported Content-Type {ctype or '(none)'!r}: use {PROTOBUF} or {JSON}",
            415,
            as_json=False,
        )
    try:
        raw = _to_proto(signal, req.body) if as_json else req.body
    except DecodeError as exc:
        ingest.metrics.request(RECEIVER, signal.name, "invalid", nbytes=len(req.body))
        return _status(3, str(exc), 400, as_json, details=_bad_request(exc))
    try:
        checked = ingest.otlp(RECEIVER, signal, raw)
    except CollectorError as exc:
        f = classify(exc)
        return _status(f.grpc_code.value[0], f.message, f.http_status, as_json, f.http_headers())
    resp = otlp.response(signal, checked)
    if as_json:
        return Response(200, json_format.MessageToJson(resp, indent=None).encode(), JSON)
    return Response(200, resp.SerializeToString(), PROTOBUF)


def otlp_http_routes(ingest: Ingest) -> list[Route]:
    return [
        Route("POST", s.http_path, functools.partial(handle_export, ingest, s))
        for s in otlp.SIGNALS
    ]
