"""meshlens.durable_file: the one atomic write (store files, gate state, GitOps files)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from meshlens.durable_file import TMP_MARK, make_dirs, temp_path, write_atomic


def test_bytes_text_and_a_writer_function_replace_the_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(target, b"one")
    assert target.read_bytes() == b"one"
    write_atomic(target, "two\n", fsync_parent=True)
    assert target.read_text() == "two\n"
    write_atomic(target, lambda tmp: tmp.write_bytes(b"three"))
    assert target.read_bytes() == b"three"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]  # no temporary file left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_mode_and_the_temporary_name(tmp_path: Path) -> None:
    target = tmp_path / "rollout.yaml"
    write_atomic(target, "x", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    tmp = temp_path(target)
    # Hidden, next to the target, and named so retention's sweep recognizes a crash's leftover.
    assert tmp.parent == tmp_path and tmp.name.startswith(".") and TMP_MARK in tmp.name


def test_make_dirs_creates_every_missing_parent(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    make_dirs(deep)
    assert deep.is_dir()
    make_dirs(deep)  # idempotent
