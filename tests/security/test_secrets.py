"""No secrets in logs or error messages: `meshlens serve` with a bearer token and a TLS key,
debug logging, and a round of bad requests on every port; neither the token nor any line of
the private key may appear in its output, in an error body, in /metrics or in serve.json."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc

from meshlens.collector.receivers import otlp
from tests.collector.conftest import REPO, ServeProcess, _serve_env, http_get, http_post
from tests.collector.receivers.certs import make_tls_files
from tests.collector.receivers.grpc_client import export, stream_als
from tests.collector.receivers.payloads import als_message, traces_request

TOKEN = "leak-canary-7Qv2mX9pLw4sZ"


def _key_lines(key: Path) -> list[str]:
    """The base64 lines of the PEM key (the secret part)."""
    return [ln for ln in key.read_text().splitlines() if ln and not ln.startswith("-----")]


def test_token_and_key_never_appear_in_output_or_errors(
    serve_factory: Callable[..., ServeProcess],
    tmp_path: Path,
) -> None:
    tls = make_tls_files(tmp_path / "tls")
    sp = serve_factory(
        "--tls-cert",
        str(tls.server_cert),
        "--tls-key",
        str(tls.server_key),
        "--auth-token",
        TOKEN,
        "--log-level",
        "debug",
    )
    ca = tls.ca.read_bytes()
    ctx = ssl.create_default_context(cafile=str(tls.ca))
    bodies: list[str] = []

    def keep(status_body: tuple[int, bytes, dict[str, str]]) -> None:
        bodies.append(status_body[1].decode(errors="replace"))
        bodies.append(json.dumps(status_body[2]))

    near_miss = [f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, ""]
    spans = traces_request(2).SerializeToString()
    https = sp.otlp_url("/v1/traces", "https")
    for auth in near_miss:
        h = {"Authorization": auth} if auth else {}
        keep(http_post(https, spans, {**h, "Content-Type": "application/x-protobuf"}, context=ctx))
        keep(
            http_post(
                https,
                b"\xff garbage",
                {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                context=ctx,
            )
        )
        keep(http_get(sp.api_url("/metrics"), h))
        keep(http_post(sp.api_url("/api/v1/sql"), b'{"sql": "SELEC 1"}', h))
    good = {"Authorization": f"Bearer {TOKEN}"}
    keep(http_post(sp.api_url("/api/v1/sql"), b'{"sql": "SELECT * FROM read_text(\'/x\')"}', good))
    keep(http_post(sp.api_url("/api/v1/sql"), b"not json", good))
    keep(http_get(sp.api_url("/api/v1/graph?since=banana"), good))
    keep(http_get(sp.api_url("/metrics"), good))
    with grpc.secure_channel(sp.grpc_target, grpc.ssl_channel_credentials(ca)) as ch:
        for auth in near_miss:
            md = (("authorization", auth),) if auth else ()
            for call in (
                lambda md=md: export(ch, otlp.TRACES, spans, md),
                lambda md=md: stream_als(ch, [als_message(1, first=True)], md),
                lambda: export(
                    ch, otlp.TRACES, b"\xff\xff", (("authorization", f"Bearer {TOKEN}"),)
                ),
            ):
                try:
                    call()
                except grpc.RpcError as exc:
                    bodies.append(f"{exc.code()} {exc.details()} {exc.trailing_metadata()}")
    with grpc.insecure_channel(sp.grpc_target) as ch:  # plaintext to the TLS port
        try:
            export(ch, otlp.TRACES, spans, (("authorization", f"Bearer {TOKEN}"),))
        except grpc.RpcError as exc:
            bodies.append(str(exc.details()))
    assert sp.stop() == 0
    state = (
        (sp.data_dir / "serve.json").read_text() if (sp.data_dir / "serve.json").exists() else ""
    )
    haystacks = {
        "serve output (debug log)": sp.log(),
        "serve.json": state,
        "error bodies": "\n".join(bodies),
    }
    assert "collector ready" in sp.log() or "ready" in sp.log()
    for where, text in haystacks.items():
        assert TOKEN not in text, f"the token appears in {where}"
        assert TOKEN[:12] not in text, f"a prefix of the token appears in {where}"
        for line in _key_lines(tls.server_key):
            assert line not in text, f"private key material appears in {where}"


def test_a_bad_key_file_is_reported_without_its_content(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    bad = tmp_path / "bad.key"
    secret_lines = _key_lines(tls.server_key)
    # a real key with one line damaged: the error must name the file, not print it
    lines = tls.server_key.read_text().splitlines()
    lines[1] = lines[1][:-4] + "AAAA"
    bad.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshlens",
            "serve",
            "--data-dir",
            str(tmp_path / "d"),
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--api-port",
            "0",
            "--log-level",
            "debug",
            "--tls-cert",
            str(tls.server_cert),
            "--tls-key",
            str(bad),
            "--auth-token",
            TOKEN,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_serve_env(None),
        timeout=60,
    )
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "Traceback" not in text, text[-2000:]
    assert TOKEN not in text
    for line in secret_lines[1:]:
        assert line not in text, "private key material in the startup error"
