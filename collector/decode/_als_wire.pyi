# Types of the C extension built from _als_wire.c.
from typing import Any

def decode(
    payloads: list[bytes], local_ids: list[int], default_ts: list[int]
) -> dict[str, Any] | None: ...
