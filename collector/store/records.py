"""What the write-ahead log holds: one `Record` per accepted request, exactly as received.

The receive path validates cheaply and appends; decoding to rows happens later (and again on
replay), so a record must carry everything the decoder needs: the raw payload plus a small
`context` (for Envoy ALS, the stream's node `Identifier`, which only the stream's first message
carries).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final


class RecordKind(enum.IntEnum):
    OTLP_TRACES = 1  # payload: ExportTraceServiceRequest (protobuf)
    OTLP_METRICS = 2  # payload: ExportMetricsServiceRequest
    OTLP_LOGS = 3  # payload: ExportLogsServiceRequest (Envoy OTel access logs included)
    ENVOY_ALS = 4  # payload: StreamAccessLogsMessage; context: serialized Identifier
    ACCESS_LOG_LINES = 5  # payload: UTF-8 lines of an access-log file; context: source name


# kind (u8) | received_at unix ns (u64) | context length (u32) | context | payload
_HEADER: Final = struct.Struct("<BQI")


@dataclass(frozen=True, slots=True)
class Record:
    kind: RecordKind
    received_ns: int
    payload: bytes
    context: bytes = b""

    def encode(self) -> bytes:
        return self.encode_head() + self.payload

    def encode_head(self) -> bytes:
        """The encoding up to the payload (header and context): `encode()` is this followed by
        the payload, which the WAL writes from its own buffer instead of copying it."""
        return _HEADER.pack(self.kind, self.received_ns, len(self.context)) + self.context

    @classmethod
    def decode(cls, data: bytes) -> Record:
        if len(data) < _HEADER.size:
            raise ValueError(f"record of {len(data)} bytes is shorter than its header")
        kind, received_ns, clen = _HEADER.unpack_from(data)
        start = _HEADER.size
        if start + clen > len(data):
            raise ValueError(f"record context of {clen} bytes runs past the record")
        return cls(RecordKind(kind), received_ns, data[start + clen :], data[start : start + clen])
