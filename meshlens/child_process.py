"""What every helper process of `meshlens serve` does first (decode workers, API query workers).

- It dies with its parent: after `kill -9` of the collector nothing keeps running, holding
  hundreds of MB (Linux `PR_SET_PDEATHSIG`; elsewhere a no-op, the parent's shutdown still
  stops it).
- It ignores the stop signals its parent handles (SIGINT, SIGTERM): Ctrl-C, `docker stop` or
  systemd's `KillMode=control-group` signal the whole process group, and the parent, not the
  signal, decides when its workers stop, after draining them.

Call `init_child()` as the initializer of a `ProcessPoolExecutor` or at the top of a
`multiprocessing.Process` target.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None) -> bool:
    """Ask the kernel to SIGKILL this process when its parent thread exits. True if set.

    `parent_pid`: the pid the caller expects as parent; if it has already gone (re-parented
    before the call), exit now rather than run orphaned.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc_name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        ok = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before prctl took effect
    return ok


def ignore_stop_signals() -> None:
    """SIGINT and SIGTERM are the parent's to handle; it drains and stops its workers."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def init_child(parent_pid: int | None = None) -> None:
    """Both of the above: the initializer for every worker process of the collector."""
    ignore_stop_signals()
    die_with_parent(parent_pid)
