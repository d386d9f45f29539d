from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from meshlens.cli import COMMANDS, main
from meshlens.collector.errors import ConfigError
from meshlens.settings import (
    ALL_SETTINGS,
    Setting,
    add_settings,
    parse_bool,
    parse_duration,
    parse_size,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "seconds"), [("15m", 900.0), ("500ms", 0.5), ("7d", 604800.0), ("30", 30.0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a duration: '15 minutes'"):
        parse_duration("15 minutes")


@pytest.mark.parametrize(
    ("text", "size"), [("4MiB", 4 * 1024**2), ("4MB", 4_000_000), ("512", 512), ("1GiB", 1024**3)]
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_parse_bool() -> None:
    assert parse_bool("yes") is True
    assert parse_bool("0") is False
    with pytest.raises(ValueError, match="not a boolean"):
        parse_bool("maybe")


def test_env_overrides_default_and_flag_overrides_env() -> None:
    s = Setting("grpc_port", 4317, "port", int)
    parser = argparse.ArgumentParser()
    add_settings(parser, [s], environ={"MESHLENS_GRPC_PORT": "5000"})
    assert parser.parse_args([]).grpc_port == 5000
    assert parser.parse_args(["--grpc-port", "6000"]).grpc_port == 6000


def test_bad_env_value_names_the_variable() -> None:
    s = Setting("grpc_port", 4317, "port", int)
    with pytest.raises(ConfigError, match="invalid MESHLENS_GRPC_PORT 'x'"):
        s.resolve({"MESHLENS_GRPC_PORT": "x"})


def test_choices_are_enforced() -> None:
    s = Setting("durability", "fsync", "", str, ("fsync", "none"))
    with pytest.raises(ConfigError, match="choose one of fsync, none"):
        s.convert("sometimes")


def _declared_settings() -> list[Setting]:
    """ALL_SETTINGS plus every Setting a subcommand module (or the gate API) declares."""
    import importlib

    found = list(ALL_SETTINGS)
    modules = [m for m, _help in COMMANDS.values()] + ["meshlens.analytics.gate.api"]
    for name in modules:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, Setting):
                found.append(value)
            elif isinstance(value, tuple) and value and all(isinstance(x, Setting) for x in value):
                found.extend(value)
    return found


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = sorted({s.env for s in _declared_settings() if f"`{s.env}`" not in readme})
    assert not missing, f"settings missing from README: {missing}"


def test_every_command_module_exists() -> None:
    for name, (module, _help) in COMMANDS.items():
        path = ROOT / (module.replace(".", "/") + ".py")
        assert path.exists(), f"meshlens {name}: {path} missing"


def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(re.search(rf"\b{name}\b", out) for name in COMMANDS)


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_secret_settings_are_not_echoed_in_help(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHLENS_AUTH_TOKEN", "s3cret-value")
    from meshlens.cli import build_parser

    parser, _module = build_parser("serve")
    assert "s3cret-value" not in parser.format_help()
    assert "default set" in parser.format_help()
