"""Where a store lives, as `--data-dir` names it: one type for a local directory and for
`s3://bucket/prefix` (read by the analytics, the app and `meshlens sql`; a collector's WAL
needs a local disk, so `serve` refuses it).

`StoreLocation` is os.PathLike, so `Path(location)` is the local directory; an object-store
location keeps its `s3://` (a `Path` would collapse the '//')."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_URL_RE: Final = re.compile(
    r"^s3:/+(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$"
)


@dataclass(frozen=True, slots=True)
class StoreUrl:
    """`s3://bucket/prefix`: where a store lives in object storage."""

    bucket: str
    prefix: str = ""  # without leading or trailing '/'

    @classmethod
    def parse(cls, text: str) -> StoreUrl:
        m = _URL_RE.match(str(text).strip())
        if not m:
            raise ValueError(
                f"not an object store location: {text!r} (use s3://bucket or s3://bucket/prefix)"
            )
        prefix = "/".join(p for p in (m.group("prefix") or "").split("/") if p)
        return cls(m.group("bucket"), prefix)

    @property
    def root(self) -> str:
        """The store's root as a pyarrow filesystem path (bucket/prefix)."""
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def __str__(self) -> str:
        return f"s3://{self.root}"


def store_location(data_dir: str | os.PathLike[str]) -> StoreUrl | None:
    """The object store a `--data-dir` names, or None for a local directory.

    Accepts `s3://bucket/prefix` and also `s3:/bucket/prefix`, which is what `Path` makes of it
    (it collapses '//'), so a location survives the `Path(args.data_dir)` of every command."""
    text = os.fspath(data_dir)
    if not text.startswith("s3:/"):
        return None
    return StoreUrl.parse(text)


@dataclass(frozen=True, slots=True)
class StoreLocation:
    text: str  # a local path as given, or the normalized `s3://bucket/prefix`
    remote: StoreUrl | None = None

    @classmethod
    def parse(cls, value: str | os.PathLike[str]) -> StoreLocation:
        """A location from a flag, an environment variable, a Path or a location. Raises
        ValueError for a malformed `s3://` location."""
        if isinstance(value, StoreLocation):
            return value
        remote = store_location(value)
        if remote is not None:
            return cls(str(remote), remote)
        return cls(os.fspath(value))

    @property
    def local(self) -> Path | None:
        """The local directory, or None for an object store."""
        return None if self.remote is not None else Path(self.text)

    def __fspath__(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text
