"""`meshlens serve` with test-only store knobs, run as `python -m tests.reliability.serve_child`.

The serve command has no flag for how often maintenance (compaction, retention) runs (30 s) or
how long compacted inputs are kept (60 s); crash tests need both short so that compaction is
running when the kill comes. This wraps the real command and only overrides those two
`StoreOptions` fields from environment variables:

    RELIABILITY_MAINTENANCE_S   maintenance_interval
    RELIABILITY_COMPACT_GRACE_S compact_grace
    RELIABILITY_ENOSPC_FILE     while this file exists, every WAL write fails with ENOSPC
                                (the disk-full fallback when tmpfs cannot be mounted)
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any

from meshlens.cli import main
from meshlens.collector.store import wal
from meshlens.collector.store.store import StoreOptions


def _patch() -> None:
    overrides: dict[str, float] = {}
    if "RELIABILITY_MAINTENANCE_S" in os.environ:
        overrides["maintenance_interval"] = float(os.environ["RELIABILITY_MAINTENANCE_S"])
    if "RELIABILITY_COMPACT_GRACE_S" in os.environ:
        overrides["compact_grace"] = float(os.environ["RELIABILITY_COMPACT_GRACE_S"])
    if overrides:
        original = StoreOptions.from_settings.__func__  # type: ignore[attr-defined]

        def from_settings(cls: type[StoreOptions], ns: Any, **kw: Any) -> StoreOptions:
            options: StoreOptions = original(cls, ns, **{**overrides, **kw})
            return options

        setattr(StoreOptions, "from_settings", classmethod(from_settings))  # noqa: B010
    flag = os.environ.get("RELIABILITY_ENOSPC_FILE")
    if flag:
        real_write = wal.WalFile._write

        def write(self: wal.WalFile, parts: list[memoryview]) -> int:
            if Path(flag).exists():
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(self, parts)

        wal.WalFile._write = write  # type: ignore[method-assign]


if __name__ == "__main__":
    _patch()
    sys.exit(main(sys.argv[1:]))
