"""The CLI layer: fast start, the one error boundary, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgeq import errors
from edgeq.cli import COMMAND_MODULES, cli


def test_importing_the_cli_does_not_import_heavy_frameworks():
    code = (
        "import sys, edgeq.cli, edgeq.__main__\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'ai_edge_litert', 'paramiko', 'matplotlib', 'PIL') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_python_dash_m_edgeq_help():
    out = subprocess.run([sys.executable, "-m", "edgeq", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "convert" in out.stdout and "Exit codes" in out.stdout


ALL_COMMANDS = [[name] for name in COMMAND_MODULES] + [
    ["targets", sub] for sub in ("list", "show", "validate", "detect")
]


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=" ".join)
def test_every_command_explains_itself(command):
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0 and "Usage: " in result.output and len(result.output) > 300


def test_command_modules_names_every_command_where_it_is_defined():
    import importlib

    for module in set(COMMAND_MODULES.values()):
        importlib.import_module(f"edgeq.cli.{module}")
    assert set(cli.commands) - {"_boom"} == set(COMMAND_MODULES)
    for name, module in COMMAND_MODULES.items():
        assert cli.commands[name].callback.__module__ == f"edgeq.cli.{module}", name


def test_a_command_imports_only_its_own_module():
    code = (
        "import sys\nfrom edgeq.cli import cli\n"
        "try:\n    cli(['deploy', '--help'], prog_name='edgeq')\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('edgeq.cli.')), file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = out.stderr.strip()
    assert "edgeq.cli.deploy" in loaded
    assert "edgeq.cli.convert" not in loaded and "edgeq.cli.probe" not in loaded


def _boom_group(exc: BaseException):
    @cli.command("_boom", hidden=True)
    def _boom():
        raise exc

    return "_boom"


@pytest.fixture()
def boom():
    made = []

    def make(exc):
        made.append(_boom_group(exc))
        return made[-1]

    yield make
    for name in made:
        cli.commands.pop(name, None)


def test_user_errors_are_one_line_with_hint_and_their_exit_code(boom):
    name = boom(errors.HostKeyError("unknown host key for pi-1", hint="use --trust-new-hosts"))
    result = CliRunner().invoke(cli, [name])
    assert result.exit_code == errors.HostKeyError.exit_code == 9
    assert result.stderr == "Error: unknown host key for pi-1\nHint: use --trust-new-hosts\n"


def test_debug_shows_the_traceback_of_user_errors(boom):
    name = boom(errors.ModelError("bad model"))
    result = CliRunner().invoke(cli, ["--debug", name])
    assert isinstance(result.exception, errors.ModelError)


def test_bugs_are_not_swallowed(boom):
    name = boom(errors.InternalError("invariant broken"))
    result = CliRunner().invoke(cli, [name])
    assert isinstance(result.exception, errors.InternalError) and result.exit_code == 1


def test_exit_codes_are_distinct_and_documented():
    codes = {cls.exit_code for cls in errors.EdgeqError.__subclasses__()}
    assert len(codes) == len(errors.EdgeqError.__subclasses__())
    assert 2 not in codes  # click's usage errors
    for cls in errors.EdgeqError.__subclasses__():
        assert f"exit {cls.exit_code}" in errors.__doc__
