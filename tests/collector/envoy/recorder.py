"""A minimal gRPC server that records what Envoy sends (ALS streams, OTLP exports), raw."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc

from collector.decode.envoy_als import als_message_info

ALS_METHOD = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@dataclass
class Recorded:
    # (payload, identifier-of-its-stream) like the receiver's WAL records
    als: list[tuple[bytes, bytes]] = field(default_factory=list)
    otlp: dict[str, list[bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, rec: Recorded) -> None:
        self.rec = rec

    def service(self, details: Any) -> grpc.RpcMethodHandler | None:
        method = details.method
        if method == ALS_METHOD:

            def stream(it: Any, ctx: Any) -> bytes:
                ident = b""
                for raw in it:
                    found, _ = als_message_info(raw)
                    if found is not None and not ident:
                        ident = found
                    with self.rec.lock:
                        self.rec.als.append((raw, ident))
                return b""

            return grpc.stream_unary_rpc_method_handler(stream)

        def unary(raw: bytes, ctx: Any) -> bytes:
            with self.rec.lock:
                self.rec.otlp.setdefault(method, []).append(raw)
            return b""  # an empty Export*ServiceResponse

        return grpc.unary_unary_rpc_method_handler(unary)


class Recorder:
    def __init__(self) -> None:
        self.rec = Recorded()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.add_generic_rpc_handlers([_Handler(self.rec)])

    def start(self) -> Recorder:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=0)

    def wait(self, cond: Callable[[], bool], timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.05)
        return cond()
