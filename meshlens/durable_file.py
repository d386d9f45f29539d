"""Files that survive a crash whole: the one atomic write of the product.

`write_atomic` writes a hidden temporary file next to the target (`.<name>.tmp-<pid>-<thread>`),
fsyncs it, renames it over the target and, when asked, fsyncs the directory: a reader sees the
old content or the new, never a part, and after a power loss the rename is durable too. The
store's Parquet files, WAL reservations and dead letters, the gate's state and GitOps files and
`meshlens serve`'s state file all go through it. Retention removes temporary files a crash left
behind (their names contain `.tmp-`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

TMP_MARK = ".tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, *, fsync: bool = True) -> None:
    """mkdir -p; with fsync, the entry of every directory created is fsynced in its parent, so
    a new dt=/hr= partition survives a power loss along with the file written into it."""
    if path.is_dir():
        return
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    if fsync:
        for d in reversed(missing):
            fsync_dir(d.parent)


def temp_path(path: Path) -> Path:
    """The hidden temporary sibling of `path` this process and thread write."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{threading.get_ident()}")


def write_atomic(
    path: Path,
    content: bytes | str | Callable[[Path], None],
    *,
    fsync: bool = True,
    fsync_parent: bool = False,
    mode: int | None = None,
) -> None:
    """Replace `path` with `content` (bytes, text, or a function that writes the file it is
    given, e.g. a Parquet writer). `fsync`: the data reaches the disk before the rename;
    `fsync_parent`: the rename too; `mode`: the new file's permissions."""
    tmp = temp_path(path)
    try:
        if callable(content):
            content(tmp)
        else:
            with open(tmp, "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync_parent:
        fsync_dir(path.parent)
