"""Ansible's own answers, the reference tests/test_inventory.py compares edgeq with.

* :func:`list_hosts` - ``ansible all -i INV --list-hosts [--limit P]``: which hosts, in which order;
* :func:`ssh_commands` - what Ansible's ssh connection plugin would run for each host
  (``ansible all -m ansible.builtin.ping -vvv``, parsed from its ``SSH: EXEC`` lines):
  the address, ``-o Port=``, ``-o User=`` and ``-o IdentityFile=``. No network is
  used: ``ANSIBLE_SSH_EXECUTABLE`` is a script that exits 255 at once, so nothing is
  resolved nor contacted, whatever the addresses (the tests use 127.x addresses and
  names that are never resolved), and every ``EXEC`` line is checked to be that script's;
* :func:`debug_vars` - variables as Ansible renders them for a task on each host
  (``ansible all -m ansible.builtin.debug``, on this machine);
* :func:`in_parallel` - run several of them at once (Ansible starts in ~1 s, most of it CPU).

The Python side does not import edgeq.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")


def bin_dir() -> Path:
    """The folder of the Ansible programs edgeq would run when none is on PATH: beside this Python."""
    found = shutil.which("ansible-inventory")
    return Path(found).parent if found else Path(sys.executable).parent


def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ANSIBLE_FORCE_COLOR", None)
    env["ANSIBLE_NOCOLOR"] = "1"
    env.update(extra or {})
    return env


def run(program: str, *args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir() / program), *args],
        capture_output=True,
        text=True,
        env=_env(env),
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def list_hosts(inventory: str | os.PathLike, limit: str | None = None) -> list[str] | None:
    """The hosts ``ansible --limit`` selects, in Ansible's order; None when Ansible refuses the limit."""
    args = ["all", "-i", str(inventory), "--list-hosts"] + ([f"--limit={limit}"] if limit else [])
    result = run("ansible", *args)
    if result.returncode != 0:
        return None
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if re.fullmatch(r"\s*hosts \(\d+\):", line))
    count = int(re.findall(r"\d+", lines[start])[0])
    return [line.strip() for line in lines[start + 1 : start + 1 + count]]


@dataclasses.dataclass(frozen=True)
class SSHCommand:
    """What Ansible gives ssh for one host: None where it leaves the choice to ssh."""

    address: str
    port: str | None
    user: str | None
    key_file: str | None


def ssh_commands(
    inventory: str | os.PathLike, fake_ssh: Path, env: Mapping[str, str] | None = None
) -> dict[str, SSHCommand]:
    """address -> the ssh command line Ansible builds for it (addresses must be unique in the inventory).

    ``fake_ssh``: where to write the stand-in for ssh (it exits 255 without doing anything).
    """
    fake_ssh.write_text("#!/bin/sh\nexit 255\n")
    fake_ssh.chmod(0o755)
    extra = {"ANSIBLE_SSH_EXECUTABLE": str(fake_ssh), "ANSIBLE_TRANSPORT": "ssh", "ANSIBLE_SSH_RETRIES": "0"}
    result = run(
        "ansible",
        "all",
        "-i",
        str(inventory),
        "-m",
        "ansible.builtin.ping",
        "-vvv",
        "-T",
        "1",
        "-f",
        "8",
        env={**extra, **(env or {})},
    )
    commands: dict[str, SSHCommand] = {}
    for match in re.finditer(r"^<(?P<address>[^>]*)> SSH: EXEC (?P<command>.*)$", result.stdout, re.M):
        argv = shlex.split(match.group("command"))
        assert argv[0] == str(fake_ssh), f"Ansible ran {argv[0]}, not the stand-in for ssh"
        options: dict[str, str] = {}
        for i, word in enumerate(argv[:-2]):
            if word == "-o":
                key, _, value = argv[i + 1].partition("=")
                options[key] = value.strip('"')
        address = argv[-2]
        assert address not in commands, f"two hosts at {address}: the reference needs unique addresses"
        commands[address] = SSHCommand(address, options.get("Port"), options.get("User"), options.get("IdentityFile"))
    unreachable = len(re.findall(r"^\S+ \| UNREACHABLE!", result.stdout, re.M))
    assert unreachable == len(commands), result.stdout + result.stderr
    return commands


def debug_vars(
    inventory: str | os.PathLike, names: list[str], env: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """host -> {name: value as Ansible renders it for that host (None when undefined)}."""
    expression = "{{ {" + ", ".join(f"{json.dumps(n)}: {n} | default(None)" for n in names) + "} }}"
    result = run(
        "ansible", "all", "-i", str(inventory), "-m", "ansible.builtin.debug", "-a", json.dumps({"msg": expression}),
        env={"ANSIBLE_LOAD_CALLBACK_PLUGINS": "False", **(env or {})},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    found: dict[str, dict[str, Any]] = {}
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^(\S+) \| SUCCESS => ", result.stdout, re.M):
        value, _ = decoder.raw_decode(result.stdout, match.end())
        found[match.group(1)] = value["msg"]
    return found


def connection_doc(*plugins: str) -> dict[str, Any]:
    """``ansible-doc -t connection PLUGIN... --json``: plugin -> its options."""
    result = run("ansible-doc", "-t", "connection", *plugins, "--json")
    assert result.returncode == 0, result.stderr
    return {name: body["doc"]["options"] for name, body in json.loads(result.stdout).items()}


def in_parallel(calls: Mapping[str, Callable[[], _T]], workers: int = 3) -> dict[str, _T]:
    """Run the calls at once (each starts Ansible); their results by name."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(call) for name, call in calls.items()}
        return {name: future.result() for name, future in futures.items()}
