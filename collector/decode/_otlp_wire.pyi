# Types of the C extension built from _otlp_wire.c.
from typing import Any

def resources(payload: bytes) -> list[tuple[int, int]] | None: ...
def decode(
    payloads: list[bytes],
    received_ns: list[int],
    count_limit: int,
    value_length: int,
    resources: list[tuple[bytes, bytes, bytes, bytes]],
) -> dict[str, Any] | None: ...
