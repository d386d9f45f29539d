"""A real S3-compatible server for tests: moto in server mode on 127.0.0.1 and a free port, in
a child process: some delta-rs calls hold the GIL while they wait for a response (seen with
`DeltaTable.is_deltatable`: a server thread in the test's own process never answered it and the
call timed out after 180 s).

with s3_server() as s3:        # s3.endpoint_url, s3.env (AWS_* + MESHLENS_S3_*), s3.fs()
    url = s3.bucket("scale-out")   # creates the bucket, returns a StoreUrl
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from meshlens.collector.store.location import S3Options, StoreUrl, s3_filesystem

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    @property
    def env(self) -> dict[str, str]:
        """What a `meshlens` subprocess needs to reach this server."""
        return {**CREDENTIALS, "MESHLENS_S3_ENDPOINT_URL": self.endpoint_url}

    @property
    def options(self) -> S3Options:
        return S3Options(self.endpoint_url, "us-east-1")

    def fs(self) -> Any:
        return s3_filesystem(self.options)

    def bucket(self, prefix: str = "meshlens") -> StoreUrl:
        """A fresh bucket (unique name) with `prefix` inside."""
        import pyarrow.fs as pafs

        name = f"test-{uuid.uuid4().hex[:12]}"
        host = self.endpoint_url.removeprefix("http://")
        admin = pafs.S3FileSystem(
            endpoint_override=host, scheme="http", region="us-east-1", allow_bucket_creation=True
        )
        admin.create_dir(name)
        return StoreUrl(name, prefix)


def _serve(conn: Any) -> None:  # the child: runs the server until the parent says stop
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    conn.send(server.get_host_and_port())
    try:
        conn.recv()  # "stop", or EOF when the parent dies
    except EOFError:
        pass
    server.stop()


@contextmanager
def s3_server() -> Iterator[S3Server]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="moto-s3")
    proc.start()
    child.close()
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)  # pyarrow and delta-rs in this process sign with these
    try:
        if not parent.poll(60):
            raise RuntimeError("moto S3 server did not start within 60 s")
        host, port = parent.recv()
        yield S3Server(f"http://{host}:{port}")
    finally:
        try:
            parent.send("stop")
        except OSError:
            pass
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
