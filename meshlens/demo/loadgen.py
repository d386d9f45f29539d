"""Load for the demo: Poisson arrivals at a target rate through the ingress sidecar, bounded
by `stop()` (and by `max_requests` when given), with a mix of browser and mobile user agents."""

from __future__ import annotations

import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Final

USER_AGENTS: Final = (
    "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5) Mobile/15E148 Safari/604.1",
    "curl/8.5.0",
)


class LoadGenerator:
    def __init__(
        self,
        base_url: str,
        *,
        rps: float = 20.0,
        host: str = "productpage:9080",
        path: str = "/productpage",
        max_requests: int = 0,
        seed: int = 7,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.rps = rps
        self.host = host
        self.path = path
        self.max_requests = max_requests
        self.codes: Counter[int] = Counter()
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loadgen", daemon=True)
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="loadgen")
        self._lock = threading.Lock()

    def _one(self, ua: str) -> None:
        req = urllib.request.Request(
            self.base_url + self.path, headers={"Host": self.host, "User-Agent": ua}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                code = resp.status
                resp.read()
        except urllib.error.HTTPError as exc:
            code = exc.code
        except OSError:
            code = 0
        with self._lock:
            self.codes[code] += 1

    def _run(self) -> None:
        sent = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            if self.max_requests and sent >= self.max_requests:
                break
            next_at += self._rng.expovariate(self.rps)
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            ua = USER_AGENTS[0 if self._rng.random() < 0.7 else self._rng.randrange(1, 3)]
            self._pool.submit(self._one, ua)
            sent += 1

    def start(self) -> LoadGenerator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    @property
    def sent(self) -> int:
        with self._lock:
            return sum(self.codes.values())
