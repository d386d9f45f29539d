"""API query workers: the API's heavy routes run in pre-started worker processes, off the
ingest path.

Why processes: DuckDB, the Arrow -> Python -> JSON conversion of results and the graph/judge
code hold the GIL and the collector's memory; in the collector process three large queries took
it from 0.2 to 4.1 GB and stalled gRPC acknowledgements for 9-11 s. A worker has

- a wall-clock deadline per request (result conversion included): past it the parent kills the
  worker, answers 408 and starts a replacement;
- an address-space limit (RLIMIT_AS): a query that needs more fails inside the worker
  (MemoryError, DuckDB's own limit below it, or the worker dies), never the collector;
- a response size cap: the JSON body is built in the worker and refused there if too large.

At most `size` requests run at once (one per worker); up to `max_waiting` more wait at most
`queue_wait_s` for a free worker, others get 503 with Retry-After.

Workers are spawned from one long-lived supervisor thread: PR_SET_PDEATHSIG (child_process)
fires when the *thread* that forked the child exits, and HTTP handler threads exit after each
request.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

from meshlens.child_process import init_child
from meshlens.collector.errors import ConfigError
from meshlens.httpd import HttpOptions, Request, Response, Route, dispatch, error_response

log = logging.getLogger(__name__)

MIN_MEMORY: Final = 1 << 30  # Python + polars + DuckDB + pyarrow map ~0.8 GiB before any query
START_TIMEOUT_S: Final = 120.0
RETRY_AFTER_S: Final = "2"
# Below the collector's priority: on a 2-core machine a busy worker would otherwise compete
# with the receive -> WAL -> ack path for CPU on equal terms.
WORKER_NICE: Final = 10
OOM_SCORE_ADJ: Final = "500"


@dataclass(frozen=True, slots=True)
class PoolOptions:
    size: int
    memory: int  # bytes of address space per worker
    timeout_s: float  # wall-clock per request, conversion included
    queue_wait_s: float
    max_waiting: int
    max_response: int  # bytes of response body
    temp_root: Path  # per-worker spill directories live below it

    def check(self) -> PoolOptions:
        if self.size < 0:
            raise ConfigError("--query-workers", str(self.size), "must be >= 0")
        if self.memory and self.memory < MIN_MEMORY:
            raise ConfigError(
                "--query-memory",
                str(self.memory),
                f"a query worker needs at least {MIN_MEMORY} bytes (1GiB) of address space",
            )
        if not self.timeout_s > 0:
            raise ConfigError("--query-timeout", str(self.timeout_s), "must be > 0")
        return self


# ---- the worker process -----------------------------------------------------------------------


def worker_temp_dir(temp_root: Path, pid: int) -> Path:
    return temp_root / f"w{pid}"


def _limit_memory(limit: int) -> None:
    if limit <= 0:
        return
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


# Builds the route table from a settings mapping; a module-level function, so the spawned
# worker receives it by reference (pickle) and imports its module itself.
RouteFactory = Callable[[Mapping[str, Any]], Sequence[Route]]


def worker_main(
    conn: Connection,
    parent_pid: int,
    factory: RouteFactory,
    settings: Mapping[str, Any],
    memory: int,
    max_response: int,
    temp_root: Path,
) -> None:
    """Build the route table, then answer forwarded requests until told to stop (None)."""
    init_child(parent_pid)
    try:
        os.nice(WORKER_NICE)
    except OSError:  # not permitted (some sandboxes): run at the same priority
        pass
    try:  # when the container's memory runs out, the kernel kills a query, not the collector
        Path("/proc/self/oom_score_adj").write_text(OOM_SCORE_ADJ)
    except OSError:
        pass
    # Its own spill directory: the parent deletes it when it kills this worker.
    own = {**settings, "query_temp_root": str(worker_temp_dir(temp_root, os.getpid()))}
    try:
        routes = list(factory(own))
        _limit_memory(memory)  # after the imports, whose transient peaks are no query's
    except BaseException as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    options = HttpOptions(name="query-worker")  # auth was checked by the API port
    while True:
        try:
            req = conn.recv()
        except (EOFError, OSError):
            return
        if req is None:
            return
        recycle = False
        try:
            resp = dispatch(routes, options, req)
        except MemoryError:  # dispatch maps other exceptions; this one may hit it too
            resp, recycle = _out_of_memory(memory), True
        if resp.status == 500 and b"MemoryError" in resp.body:
            resp, recycle = _out_of_memory(memory), True
        if len(resp.body) > max_response:
            resp = error_response(
                413,
                f"the response of {req.method} {req.path} is {len(resp.body)} bytes, over the "
                f"{max_response}-byte cap (--query-max-response); ask for fewer rows or columns",
            )
        try:
            conn.send((resp, recycle))
        except MemoryError:
            conn.send((_out_of_memory(memory), True))
        if recycle:  # a MemoryError can leave any library half-updated: start afresh
            return


def _out_of_memory(memory: int) -> Response:
    return error_response(
        507,
        f"the query needed more than the {memory}-byte memory budget of a query worker "
        "(--query-memory); narrow the time window, the columns or max_rows",
    )


# ---- the parent side --------------------------------------------------------------------------


@dataclass
class _Worker:
    proc: Any  # multiprocessing.process.BaseProcess
    conn: Connection
    pid: int


class QueryPool:
    """`factory`: a module-level function returning the route table from a settings mapping;
    every worker builds its own from `settings` (a picklable mapping)."""

    def __init__(
        self, factory: RouteFactory, settings: Mapping[str, Any], options: PoolOptions
    ) -> None:
        self.factory = factory
        self.settings = dict(settings)
        self.options = options.check()
        self._ctx = mp.get_context("spawn")
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._spawn: queue.Queue[int | None] = queue.Queue()
        self._workers: dict[int, _Worker] = {}
        self._lock = threading.Lock()
        self._waiting = 0
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.replaced = 0  # workers killed or lost and started again

    # -- lifecycle --

    def start(self) -> None:
        """Clean the spill directory and start the workers (asynchronously: requests wait for
        the first ready worker as they would for a busy one)."""
        shutil.rmtree(self.options.temp_root, ignore_errors=True)
        self.options.temp_root.mkdir(parents=True, exist_ok=True)
        self._supervisor = threading.Thread(target=self._supervise, name="query-pool", daemon=True)
        self._supervisor.start()
        for _ in range(self.options.size):
            self._spawn.put(1)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        self._spawn.put(None)
        if self._supervisor is not None:
            self._supervisor.join(START_TIMEOUT_S)
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        deadline = time.monotonic() + timeout_s
        for w in workers:
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        for w in workers:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(5)
            w.conn.close()
        shutil.rmtree(self.options.temp_root, ignore_errors=True)

    def pids(self) -> list[int]:
        with self._lock:
            return sorted(self._workers)

    def _supervise(self) -> None:
        while True:
            item = self._spawn.get()
            if item is None or self._stopping.is_set():
                return
            try:
                worker = self._start_worker()
            except Exception as exc:
                log.error("query worker failed to start: %s; retrying in 1s", exc)
                if self._stopping.wait(1.0):
                    return
                self._spawn.put(1)
                continue
            with self._lock:
                if self._stopping.is_set():
                    worker.proc.kill()
                    worker.proc.join(5)
                    return
                self._workers[worker.pid] = worker
            self._idle.put(worker)

    def _start_worker(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=worker_main,
            args=(
                child,
                os.getpid(),
                self.factory,
                self.settings,
                self.options.memory,
                self.options.max_response,
                self.options.temp_root,
            ),
            name="meshlens-query",
            daemon=True,
        )
        proc.start()
        child.close()
        try:
            if not parent.poll(START_TIMEOUT_S):
                raise RuntimeError(f"not ready after {START_TIMEOUT_S:g}s")
            kind, detail = parent.recv()
        except (EOFError, OSError, RuntimeError) as exc:
            proc.kill()
            proc.join(5)
            parent.close()
            raise RuntimeError(f"query worker exited during start ({exc})") from None
        if kind != "ready":
            proc.join(5)
            parent.close()
            raise RuntimeError(f"query worker cannot build its routes: {detail}")
        return _Worker(proc, parent, int(detail))

    def _retire(self, w: _Worker) -> None:
        """Kill `w`, drop its spill files, start a replacement."""
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(5)
        w.conn.close()
        shutil.rmtree(worker_temp_dir(self.options.temp_root, w.pid), ignore_errors=True)
        with self._lock:
            self._workers.pop(w.pid, None)
        self.replaced += 1
        if not self._stopping.is_set():
            self._spawn.put(1)

    # -- requests --

    def _acquire(self) -> _Worker | Response:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._waiting >= self.options.max_waiting:
                return self._busy(
                    f"{self._waiting} API queries already wait for a worker (--query-queue)"
                )
            self._waiting += 1
        try:
            return self._idle.get(timeout=self.options.queue_wait_s)
        except queue.Empty:
            return self._busy(f"no query worker became free within {self.options.queue_wait_s:g}s")
        finally:
            with self._lock:
                self._waiting -= 1

    def _busy(self, why: str) -> Response:
        return error_response(
            503,
            f"{why}: all {self.options.size} query workers are busy (--query-workers); "
            f"retry after {RETRY_AFTER_S}s",
            (("Retry-After", RETRY_AFTER_S),),
        )

    def handle(self, req: Request, deadline_s: float | None = None) -> Response:
        """Run `req` in a worker within `deadline_s` (default: the pool's timeout)."""
        if self._stopping.is_set():
            return self._busy("the collector is stopping")
        got = self._acquire()
        if isinstance(got, Response):
            return got
        w = got
        limit = min(deadline_s or self.options.timeout_s, self.options.timeout_s)
        try:
            w.conn.send(req)
            if not w.conn.poll(limit):
                self._retire(w)
                return error_response(
                    408,
                    f"{req.method} {req.path} did not finish within {limit:g}s (result "
                    "conversion included); its query worker was stopped",
                )
            resp, recycle = w.conn.recv()
        except (EOFError, OSError, ValueError) as exc:
            code = w.proc.exitcode
            self._retire(w)
            log.warning("query worker %d died serving %s %s: %s", w.pid, req.method, req.path, exc)
            return error_response(
                503,
                f"the query worker serving {req.method} {req.path} died (exit code {code}), "
                "most likely over its memory budget (--query-memory); it has been replaced",
                (("Retry-After", RETRY_AFTER_S),),
            )
        if recycle:
            self._retire(w)
        else:
            self._idle.put(w)
        return resp


def forwarding_routes(
    routes: Sequence[Route],
    pool: QueryPool,
    keep: frozenset[tuple[str, str]],
    deadline: Any = None,
) -> list[Route]:
    """`routes` with every handler but those whose (method, path) is in `keep` replaced by
    forwarding to `pool`. `deadline(req) -> float | None` may shorten a request's limit."""

    def forward(req: Request) -> Response:
        return pool.handle(req, deadline(req) if deadline is not None else None)

    return [r if (r.method, r.path) in keep else Route(r.method, r.path, forward) for r in routes]
