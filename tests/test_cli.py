"""The CLI layer: fast start, the one error boundary, exit codes."""

from __future__ import annotations

import json
import signal
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


def test_command_modules_import_no_other_command_module():
    """Shared options live in cli/_options.py: no command module imports another (cli/targets.py and
    cli/detect.py used to import each other); `targets detect` is loaded when it is asked for."""
    code = (
        "import importlib, sys\n"
        "module = importlib.import_module('edgeq.cli.' + sys.argv[1])\n"
        "print(sorted(m for m in sys.modules if m.startswith('edgeq.cli.') and not m.startswith('edgeq.cli._')))"
    )
    for module in ("targets", "detect", "probe", "tune", "convert", "deploy"):
        out = subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True, check=True)
        loaded = out.stdout.strip()
        expected = ["edgeq.cli.detect", "edgeq.cli.targets"] if module == "detect" else [f"edgeq.cli.{module}"]
        assert loaded == str(expected), (module, loaded)


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


# --------------------------------------------------------------------------- exit codes of device commands, through real sshd devices


def _hosts_inventory(path, hosts: dict[str, dict]) -> str:
    path.write_text(json.dumps({"all": {"hosts": hosts}}, indent=2))  # JSON is YAML
    return str(path)


def _ssh_vars(device, **extra) -> dict:
    return {
        "ansible_host": device.host,
        "ansible_port": device.port,
        "ansible_user": device.user,
        "ansible_ssh_private_key_file": str(device.key_path),
        **extra,
    }


GARBAGE_PYTHON = """#!/bin/sh
echo "INFO: a runtime says hello"
echo "@@EDGEQ-PROBE-BEGIN@@"
echo "{this is not JSON"
echo "@@EDGEQ-PROBE-END@@"
exit 0
"""


def _failing_fleet(kind: str, count: int, start_device, tmp_path) -> tuple[list[str], dict[str, dict]]:
    """``count`` devices that all fail in the same way: (command line, inventory hosts)."""
    from _remote import write_model
    from sshd import free_address, make_key

    model = str(write_model(tmp_path / "digits.tflite", 20_000))
    known = tmp_path / "known_hosts"
    known.write_text("")
    hosts: dict[str, dict] = {}
    if kind == "unreachable":
        for i in range(count):
            host, port = free_address()
            hosts[f"down{i}"] = {"ansible_host": host, "ansible_port": port, "ansible_user": "pi"}
        return ["deploy", model, "--known-hosts", str(known)], hosts
    if kind == "authentication":
        devices = [start_device(f"locked{i}", authorized=False) for i in range(count)]
    else:
        devices = [start_device(f"{kind[:6]}{i}") for i in range(count)]
    impostor = make_key(tmp_path / "impostor")
    lines = []
    for d in devices:
        if kind == "changed-host-key":
            lines.append(d.known_hosts_line(key=impostor))
        elif kind != "unknown-host-key":
            lines.append(d.known_hosts_line())
        extra = {}
        if kind == "remote-command":
            extra["edgeq_remote_dir"] = "/proc/edgeq"  # the device cannot create it: the deploy script fails there
        if kind == "probe-output":
            garbage = d.home / "garbage-python"
            garbage.write_text(GARBAGE_PYTHON)
            garbage.chmod(0o755)
            extra["edgeq_python"] = str(garbage)
        hosts[d.name] = _ssh_vars(d, **extra)
    known.write_text("".join(line + "\n" for line in lines))
    command = ["probe", "--skip-checks"] if kind == "probe-output" else ["deploy"]
    return [*command, model, "--known-hosts", str(known)], hosts


EXIT_CODES = {
    "unreachable": 7,
    "authentication": 8,
    "unknown-host-key": 9,
    "changed-host-key": 9,
    "remote-command": 10,
    "probe-output": 11,
}


@pytest.mark.parametrize("count", [1, 2], ids=["one-device", "fleet"])
@pytest.mark.parametrize("case", list(EXIT_CODES))
def test_device_failures_exit_with_their_own_code(case, count, start_device, tmp_path, isolated_home):
    """One device, or a fleet whose devices all fail alike: the exit code is the failure's, and --json says it per device."""
    args, hosts = _failing_fleet(case, count, start_device, tmp_path)
    inventory = _hosts_inventory(tmp_path / "fleet.yml", hosts)
    result = CliRunner().invoke(cli, [*args, "-i", inventory, "--retries", "0", "--json"])
    code = EXIT_CODES[case]
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors_shown = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors_shown) == 1, result.stderr
    data = json.loads(result.stdout)
    rows = data["devices"] if args[0] == "probe" else data["results"]
    kind = {"unknown-host-key": "host-key", "changed-host-key": "host-key"}.get(case, case)
    assert [(r["device"], r["code"], r["kind"]) for r in rows] == [(name, code, kind) for name in hosts]
    if count == 1:
        assert errors_shown[0].startswith(f"Error: {next(iter(hosts))}: ")
    else:
        assert errors_shown[0].startswith(f"Error: {count} of {count} devices did not succeed")


def test_different_failures_exit_12(start_device, tmp_path, isolated_home):
    from _remote import write_model
    from sshd import free_address

    device = start_device("unknownkey")
    host, port = free_address()
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    inventory = _hosts_inventory(
        tmp_path / "fleet.yml",
        {"down": {"ansible_host": host, "ansible_port": port, "ansible_user": "pi"}, "unknownkey": _ssh_vars(device)},
    )
    model = write_model(tmp_path / "digits.tflite", 20_000)
    args = ["deploy", str(model), "-i", inventory, "--known-hosts", str(empty), "--retries", "0", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == errors.PartialFailure.exit_code == 12, result.output
    rows = json.loads(result.stdout)["results"]
    assert [(r["device"], r["status"], r["code"], r["kind"]) for r in rows] == [
        ("down", "unreachable", 7, "unreachable"),
        ("unknownkey", "failed", 9, "host-key"),
    ]
    assert "Error: 2 of 2 devices did not succeed (1 failed, 1 unreachable)" in result.stderr
    assert "Traceback" not in result.output


def test_kinds_are_stable_and_name_their_class():
    """Every error class of edgeq.errors has a kind of its own (a subclass elsewhere may only add data to its parent's)."""
    kinds = {}
    pending = [errors.EdgeqError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "kind" not in cls.__dict__:
            assert cls.__module__ != "edgeq.errors", f"{cls.__name__} has no kind of its own"
            continue
        assert cls.kind not in kinds, f"{cls.__name__} and {kinds.get(cls.kind)} share the kind {cls.kind!r}"
        kinds[cls.kind] = cls.__name__
        assert errors.error_class(cls.kind) is cls
    assert {"unreachable", "authentication", "host-key", "remote-command", "probe-output"} <= set(kinds)
    assert errors.error_class("no-such-kind") is errors.EdgeqError


# --------------------------------------------------------------------------- Ctrl-C


# Runs the real entry point (``python -m edgeq``) after arranging for a real SIGINT to arrive while
# MODULE is being imported; prints nothing itself.
_INTERRUPT_DURING_IMPORT = """
import os, runpy, signal, sys
target = sys.argv[1]
class Interrupting:
    @staticmethod
    def find_spec(name, path=None, module=None):
        if name == target:
            os.kill(os.getpid(), signal.SIGINT)  # raised as KeyboardInterrupt at the next bytecode: in this import
        return None
sys.meta_path.insert(0, Interrupting)
sys.argv = ["edgeq", *sys.argv[2:]]
runpy.run_module("edgeq", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("click", ["targets", "list"]),  # start-up: importing the CLI, before click has even been loaded
        ("edgeq.errors", ["targets", "list"]),  # start-up: the rest of edgeq.cli's imports
        ("edgeq.cli.convert", ["--help"]),  # parsing the group's options: --help imports every command module
        ("edgeq.cli.targets", ["targets", "list"]),  # resolving the subcommand
        ("edgeq.targets", ["targets", "list"]),  # inside the command
    ],
)
def test_ctrl_c_at_any_moment_is_one_line_and_exit_130(module, args, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPT_DURING_IMPORT, module, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    # 130; or killed by SIGINT, which a shell reports as 130 too (CPython re-raises the signal at exit when
    # a KeyboardInterrupt went through exec() of a string, as dataclasses do, even though edgeq handled it)
    assert done.returncode in (130, -signal.SIGINT), (done.returncode, done.stderr)
    assert done.stderr == "Aborted.\n"


def test_ctrl_c_inside_a_command_is_one_line_and_exit_130(boom):
    name = boom(KeyboardInterrupt())
    result = CliRunner().invoke(cli, [name])
    assert result.exit_code == 130 and result.stderr == "Aborted.\n"
