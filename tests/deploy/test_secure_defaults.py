"""The image and every Kubernetes overlay ship with authentication on: the token comes from a
Secret (required), and the image's entrypoint refuses to serve 0.0.0.0 open unless told to."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from meshlens.container import check, is_loopback, open_problem
from tests.deploy.test_manifests import DEPLOY, KUSTOMIZATIONS, ROOT, _build


def _serving_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return [c for c in spec.get("containers", []) if (c.get("args") or [""])[0] == "serve"]


def _config_maps(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}


@pytest.mark.parametrize("kdir", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_collector_requires_the_token(kdir: Path) -> None:
    docs = _build(kdir)
    maps = _config_maps(docs)
    serving = [(d, c) for d in docs for c in _serving_containers(d)]
    for doc, container in serving:
        env = {e["name"]: e for e in container.get("env", [])}
        from_maps = {
            k: v
            for ref in container.get("envFrom", [])
            for k, v in maps.get(ref.get("configMapRef", {}).get("name", ""), {}).items()
        }
        where = f"{kdir.relative_to(DEPLOY)}: {doc['kind']}/{doc['metadata']['name']}"
        ref = env.get("MESHLENS_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
        assert ref and ref["name"] == "meshlens-auth", f"{where}: token not from the Secret"
        assert not ref.get("optional"), f"{where}: the token Secret must be required"
        assert "value" not in env["MESHLENS_AUTH_TOKEN"], f"{where}: a token in the manifest"
        assert str(from_maps.get("MESHLENS_ALLOW_OPEN", "false")).lower() != "true", where
        assert "MESHLENS_ALLOW_OPEN" not in env, where


def test_dockerfile_entrypoint_is_the_guard() -> None:
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "meshlens.container"]' in text
    assert "MESHLENS_HOST=0.0.0.0" in text  # why the guard is needed
    code = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    assert not [ln for ln in code if "MESHLENS_AUTH_TOKEN=" in ln or "ALLOW_OPEN" in ln]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("meshlens.svc", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_open_problem() -> None:
    assert open_problem("127.0.0.1", "", "") == ""
    assert open_problem("0.0.0.0", "tok", "") == ""
    assert open_problem("0.0.0.0", "", "/ca.pem") == ""
    assert "refusing to serve on 0.0.0.0 with no authentication" in open_problem("0.0.0.0", "", "")


def test_check_reads_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MESHLENS_AUTH_TOKEN", "MESHLENS_TLS_CLIENT_CA", "MESHLENS_ALLOW_OPEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MESHLENS_HOST", "0.0.0.0")
    assert "MESHLENS_AUTH_TOKEN" in check(["serve"])
    assert check(["serve", "--host", "127.0.0.1"]) == ""
    assert check(["demo"]) == "" and check(["sql", "select 1"]) == ""
    monkeypatch.setenv("MESHLENS_AUTH_TOKEN", "t0ken")
    assert check(["serve"]) == ""
    monkeypatch.delenv("MESHLENS_AUTH_TOKEN")
    monkeypatch.setenv("MESHLENS_ALLOW_OPEN", "true")
    assert check(["serve"]) == ""
    monkeypatch.setenv("MESHLENS_ALLOW_OPEN", "maybe")
    assert "MESHLENS_ALLOW_OPEN" in check(["serve"])


def test_entrypoint_refuses_open_serve(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "MESHLENS_HOST": "0.0.0.0", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshlens.container",
            "serve",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "meshlens serve: refusing to serve on 0.0.0.0 with no authentication" in out.stderr
    assert not any(tmp_path.iterdir())  # refused before anything was created
