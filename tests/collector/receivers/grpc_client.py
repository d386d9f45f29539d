"""Raw-bytes gRPC calls against the collector, as any client (or attacker) can make them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import grpc

from meshlens.collector.receivers import otlp
from meshlens.collector.receivers.envoy_als import METHOD as ALS_METHOD

Metadata = Sequence[tuple[str, str]]


def export(
    channel: grpc.Channel, signal: otlp.Signal, raw: bytes, metadata: Metadata = ()
) -> bytes:
    call = channel.unary_unary(
        signal.grpc_method, request_serializer=None, response_deserializer=None
    )
    return call(raw, metadata=metadata, timeout=30)


def stream_als(channel: grpc.Channel, messages: Iterable[bytes], metadata: Metadata = ()) -> bytes:
    call = channel.stream_unary(ALS_METHOD, request_serializer=None, response_deserializer=None)
    return call(iter(messages), metadata=metadata, timeout=30)
