"""collector.store.location: one type for a store's location, local or s3://."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from meshlens.collector.errors import ConfigError
from meshlens.collector.store.location import StoreLocation, StoreUrl
from meshlens.settings import COMMON, add_settings


def test_local_and_remote_locations() -> None:
    local = StoreLocation.parse("meshlens-data")
    assert local.remote is None and local.local == Path("meshlens-data")
    assert Path(local) == Path("meshlens-data")  # os.PathLike: every Path(...) consumer works
    remote = StoreLocation.parse("s3://my-bucket/some/prefix/")
    assert remote.remote == StoreUrl("my-bucket", "some/prefix") and remote.local is None
    assert str(remote) == "s3://my-bucket/some/prefix"  # the '//' survives
    # What Path() made of it before (s3:/...) still names the same store; parse is idempotent.
    assert StoreLocation.parse(Path("s3://my-bucket/some/prefix")) == remote
    assert StoreLocation.parse(remote) is remote


def test_a_malformed_object_store_location_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not an object store location: 's3://A'"):
        StoreLocation.parse("s3://A")


def test_the_data_dir_setting_keeps_s3_locations_from_flags_and_the_environment() -> None:
    parser = argparse.ArgumentParser()
    add_settings(parser, COMMON, environ={"MESHLENS_DATA_DIR": "s3://env-bucket/p"})
    assert str(parser.parse_args([]).data_dir) == "s3://env-bucket/p"
    assert str(parser.parse_args(["--data-dir", "s3://flag-bucket"]).data_dir) == (
        "s3://flag-bucket"
    )
    assert parser.parse_args(["--data-dir", "/tmp/x"]).data_dir.local == Path("/tmp/x")
    with pytest.raises(ConfigError, match=r"MESHLENS_DATA_DIR.*not an object store location"):
        add_settings(argparse.ArgumentParser(), COMMON, environ={"MESHLENS_DATA_DIR": "s3://"})


def test_serve_refuses_an_object_store_as_its_data_dir(capsys: pytest.CaptureFixture[str]) -> None:
    from meshlens.cli import main

    assert main(["serve", "--data-dir", "s3://bkt/p"]) == 2
    err = capsys.readouterr().err
    assert "invalid --data-dir 's3://bkt/p': serve needs a local directory" in err
