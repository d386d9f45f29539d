"""Free loopback ports, picked at runtime (tests and the demo never hard-code ports).

A port picked now is bound later by another process (Envoy, an app), so two things can take it
in between: our own next pick (the kernel may hand the same port 0 out again once it is
released) and any outgoing connection on the machine, whose source port comes from the kernel's
ephemeral range. So picks come from below that range, and a process never hands a port out
twice.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path
from typing import Final

_FALLBACK_EPHEMERAL_LOW: Final = 32768
_LOWEST: Final = 10000
_given: set[int] = set()
_lock = threading.Lock()


def _ephemeral_low() -> int:
    """The first port the kernel uses for outgoing connections (Linux; else the IANA default)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _FALLBACK_EPHEMERAL_LOW
    return low if low > _LOWEST + 1000 else _FALLBACK_EPHEMERAL_LOW


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, outside the ephemeral range and not handed out
    before by this process."""
    high = _ephemeral_low() - 1
    with _lock:
        for _ in range(200):  # bounded: the range has thousands of ports
            port = random.randint(_LOWEST, high)
            if port not in _given and _bindable(host, port):
                _given.add(port)
                return port
        # A crowded machine: fall back to the kernel's pick, still never twice.
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
            if port not in _given:
                _given.add(port)
                return port
    raise OSError(f"no free TCP port on {host} after 400 tries")
