"""``edgeq.cli._options``: options shared by several commands, declared once."""

from __future__ import annotations

import importlib

import pytest
from click.testing import CliRunner

from edgeq.cli import cli
from edgeq.cli._options import image_options

CALIBRATION = ("calib_samples", "seed", "pixel_range", "mean", "std")


def _params(command: str) -> dict:
    importlib.import_module(f"edgeq.cli.{command}")
    return {p.name: p for p in cli.commands[command].params}


def test_convert_and_tune_declare_the_calibration_options_alike():
    convert, tune = _params("convert"), _params("tune")
    for name in CALIBRATION:
        a, b = convert[name], tune[name]
        assert (a.opts, a.default, type(a.type), a.show_default) == (b.opts, b.default, type(b.type), b.show_default)
    # what the held-out samples and the seed are for is each command's own
    assert "to measure fidelity" in convert["calib_samples"].help
    assert "--eval" in tune["calib_samples"].help and "search/report" in tune["seed"].help


@pytest.mark.parametrize("command", ["convert", "tune"])
def test_the_help_shows_the_calibration_options(command):
    result = CliRunner().invoke(cli, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in ("--calib-samples", "--seed", "--pixel-range", "--mean", "--std"):
        assert option in result.output, (command, option)
    assert "per-channel mean subtracted after --pixel-range" in result.output


@pytest.mark.parametrize("command", ["convert", "tune"])
def test_a_bad_mean_is_a_usage_error(command, tmp_path):
    args = [command, str(tmp_path / "m.keras"), "--calib", str(tmp_path / "c.npz"), "--mean", "0.5,x"]
    if command == "convert":
        args += ["-o", str(tmp_path / "out.tflite")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "expected comma-separated numbers, got '0.5,x'" in result.output


def test_image_options():
    options = image_options("-1,1", (0.5,), None)
    assert (options.pixel_range, options.mean, options.std) == ((-1.0, 1.0), (0.5,), None)
