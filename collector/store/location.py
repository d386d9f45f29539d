"""Where a store lives, as `--data-dir` names it: one type for a local directory and for
`s3://bucket/prefix` (read by the analytics, the app and `meshlens sql`; a collector's WAL
needs a local disk, so `serve` refuses it).

`StoreLocation` is os.PathLike, so `Path(location)` is the local directory; an object-store
location keeps its `s3://` (a `Path` would collapse the '//')."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import pyarrow.fs as pafs

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


# Bucket names per S3's rules (lowercase, digits, '.', '-'; 3..63); a prefix is any key path.
DEFAULT_REGION: Final = "us-east-1"


@dataclass(frozen=True, slots=True)
class S3Options:
    """How to reach the object store. Credentials come from the standard AWS variables
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE...)."""

    endpoint_url: str = ""  # e.g. http://minio:9000 for S3-compatible stores; '' = AWS
    region: str = DEFAULT_REGION

    @classmethod
    def from_settings(cls, ns: Any) -> S3Options:
        return cls(
            getattr(ns, "s3_endpoint_url", "") or "",
            getattr(ns, "s3_region", "") or DEFAULT_REGION,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Options:
        """For readers (`meshlens sql`, the UI): MESHLENS_S3_ENDPOINT_URL, MESHLENS_S3_REGION."""
        env = os.environ if environ is None else environ
        return cls(
            env.get("MESHLENS_S3_ENDPOINT_URL", ""),
            env.get("MESHLENS_S3_REGION", "") or DEFAULT_REGION,
        )


def s3_filesystem(opts: S3Options) -> pafs.S3FileSystem:
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {"region": opts.region}
    if opts.endpoint_url:
        scheme, sep, rest = opts.endpoint_url.partition("://")
        if sep:
            kwargs["scheme"] = scheme
            kwargs["endpoint_override"] = rest.rstrip("/")
        else:
            kwargs["endpoint_override"] = opts.endpoint_url.rstrip("/")
    return pafs.S3FileSystem(**kwargs)
