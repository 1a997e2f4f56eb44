"""``bridge config check`` run in-process on a YAML file written for the test, as the config-check tests of
several areas (secrets, preflight, remote models) drive it. Use it with the ``no_bridge_environment`` fixture
(tests/conftest.py): a ``BRIDGE_*`` variable of the shell running the tests would otherwise override the YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import main


def config_check(tmp_path: Path, yaml_text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The exit status, stdout and stderr of ``config check`` on ``yaml_text``."""
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml_text)
    status = main(["config", "check", "--config", str(config)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def model_config_check(
    tmp_path: Path, model_yaml: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """:func:`config_check` on a config holding one model, ``m``, given as a YAML flow mapping."""
    return config_check(tmp_path, f"models: {{m: {model_yaml}}}\n", capsys)
