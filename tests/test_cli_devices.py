"""``edgeq devices`` and ``-k/--identity``: devices listed as the device commands resolve them; deploys through aliases.

The JSON of ``edgeq devices`` is compared with ``ssh -G`` run here; the end-to-end
tests deploy to real sshd's on loopback (tests/sshd.py) through ssh-config aliases.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_sshconfig import needs_ssh, openssh, touch_keys, write

from edgeq.cli import cli
from edgeq.devices import HostEntry

pytestmark = pytest.mark.usefixtures("isolated_home")

FIELDS = [
    "name",
    "address",
    "port",
    "user",
    "identity_files",
    "transport",
    "target",
    "python",
    "remote_dir",
    "proxy_jump",
]


def run(*args, env=None):
    result = CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def inventory(tmp_path: Path, hosts: dict[str, dict]) -> Path:
    path = tmp_path / "inventory.yml"
    path.write_text(json.dumps({"all": {"hosts": hosts}}, indent=2))  # JSON is YAML
    return path


# --------------------------------------------------------------------------- edgeq devices


@needs_ssh
def test_devices_json_is_what_ssh_g_says_in_inventory_order(tmp_path):
    config = write(
        tmp_path,
        "Include {t}/conf.d/*.conf\n"
        "Host *.lab\n  User labuser\n  IdentityFile {t}/keys/%h-%r\n"
        "Match user deploy\n  Port 2400\n"
        "Host *\n  IdentityFile {t}/keys/all\n",
    )
    write(tmp_path, "Host kitchen\n  HostName 10.0.0.5\n  Port 2222\n", "conf.d/kitchen.conf")
    hosts: dict[str, dict[str, Any]] = {
        "kitchen": {},
        "bench.lab": {"ansible_port": 2022},
        "pi-3": {"ansible_host": "pi-3.lab", "ansible_user": "deploy", "edgeq_target": "rpi4b"},
    }
    path = inventory(tmp_path, hosts)
    entries = [HostEntry(name, values) for name, values in hosts.items()]
    touch_keys(config, entries)
    key = write(tmp_path, "key\n", "keys/given")
    result = run("devices", "-i", path, "--ssh-config", config, "-k", key, "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["devices"]
    assert [list(d) for d in found] == [FIELDS] * 3 and [d["name"] for d in found] == list(hosts)
    for device, (name, values) in zip(found, hosts.items()):
        want = openssh(
            config,
            values.get("ansible_host", name),
            user=values.get("ansible_user"),
            port=values.get("ansible_port"),
            keys=(key,),
        )
        got = (device["address"], device["user"], device["port"], tuple(device["identity_files"]), device["proxy_jump"])
        assert got == want, name
    assert found[2]["port"] == 2400 and found[2]["target"] == "rpi4b" and found[2]["transport"] == "ssh"
    assert found[0]["identity_files"] == [str(key), str(tmp_path / "keys/all")]
    table = run("devices", "-i", path, "--ssh-config", config, "--limit", "kitchen")
    assert table.exit_code == 0 and "kitchen" in table.stdout and "10.0.0.5:2222" in table.stdout
    assert "1 device" in table.stdout and "pi-3" not in table.stdout


@needs_ssh
def test_devices_refuses_as_every_device_command_does(tmp_path):
    config = write(tmp_path, "Host hidden\n  HostName 10.2.2.2\n  ProxyCommand nc %h %p\n")
    listed = run("devices", "--host", "pi@hidden", "--ssh-config", config)
    status = run("status", "--name", "m", "--host", "pi@hidden", "--ssh-config", config)
    assert listed.exit_code == status.exit_code == 1 and listed.stdout == status.stdout == ""
    assert listed.stderr == status.stderr
    assert listed.stderr.startswith("Error: host 'pi@hidden': the SSH config sets ProxyCommand nc %h %p:")
    assert len(listed.stderr.splitlines()) == 2  # Error: and Hint:
    missing = run("devices", "--host", "a", "--ssh-config", tmp_path / "nope")
    assert missing.exit_code == 1
    assert missing.stderr.splitlines()[0] == (
        f"Error: host 'a': ssh -G a: Can't open user config file {tmp_path / 'nope'}: No such file or directory"
    )


def test_without_an_ssh_client_include_is_refused_with_the_same_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no ssh on the PATH: paramiko reads the config
    assert shutil.which("ssh") is None
    config = write(tmp_path, "Include other.conf\nHost a\n  HostName 10.0.0.1\n")
    listed = run("devices", "--host", "a", "--ssh-config", config)
    status = run("status", "--name", "m", "--host", "a", "--ssh-config", config)
    assert listed.exit_code == status.exit_code == 1 and listed.stderr == status.stderr
    assert listed.stderr.splitlines() == [
        f"Error: {config} line 1: Include is not supported without OpenSSH's client "
        "(paramiko would ignore or misread it, and edgeq could reach another host or user)",
        "Hint: install the OpenSSH client (ssh): edgeq then reads SSH configs with `ssh -G`, exactly as ssh does",
    ]
    plain = write(tmp_path, "Host a\n  HostName 10.0.0.1  # a comment\n  Port 2022\n", "plain")
    found = json.loads(run("devices", "--host", "me@a", "--ssh-config", plain, "--json").stdout)["devices"]
    assert (found[0]["address"], found[0]["user"], found[0]["port"]) == ("10.0.0.1", "me", 2022)


def test_identity_option_is_on_every_device_command_and_says_why_not_i():
    for command in (["devices"], ["deploy"], ["status"], ["rollback"], ["remove"], ["probe"], ["bench"]):
        shown = run(*command, "--help").output
        assert "-k, --identity FILE" in shown and "-i is --inventory" in " ".join(shown.split()), command
    assert "-k, --identity FILE" in run("targets", "detect", "--help").output


def test_a_missing_identity_file_is_a_usage_error(tmp_path):
    result = run("devices", "--host", "a", "-k", tmp_path / "nope")
    assert result.exit_code == 2 and "does not exist" in result.output


# --------------------------------------------------------------------------- through real sshd's


def _model(tmp_path):
    from _remote import write_model

    return write_model(tmp_path / "digits.tflite", 20_000)


@needs_ssh
def test_deploy_through_an_ssh_config_alias_with_its_identity_file(start_device, tmp_path):
    device = start_device()
    config = write(
        tmp_path,
        f"Host lab-pi\n  HostName {device.host}\n  User {device.user}\n  Port {device.port}\n"
        f"  IdentityFile {device.key_path}  # the device's key\n",
    )
    listed = json.loads(run("devices", "--host", "lab-pi", "--ssh-config", config, "--json").stdout)["devices"][0]
    assert (listed["address"], listed["port"], listed["user"]) == (device.host, device.port, device.user)
    assert listed["identity_files"] == [str(device.key_path)]
    common = ["--host", "lab-pi", "--ssh-config", config, "--known-hosts", device.known_hosts, "--retries", 0]
    deployed = run("deploy", _model(tmp_path), "--name", "digits", *common)
    assert deployed.exit_code == 0, deployed.output
    status = run("status", "--name", "digits", "--json", *common)
    assert status.exit_code == 0 and json.loads(status.stdout)["results"][0]["status"] == "ok"


@needs_ssh
def test_deploy_with_k_and_match_user_and_the_configs_known_hosts(start_device, tmp_path):
    device = start_device()
    # no IdentityFile, no Port for the alias: Match user (the user of --host) gives the port, -k the key;
    # host keys come from the config's UserKnownHostsFile (no --known-hosts)
    config = write(
        tmp_path,
        f"Host lab-pi\n  HostName {device.host}\n  UserKnownHostsFile {device.known_hosts}\n"
        f"  GlobalKnownHostsFile none\n  IdentityFile {tmp_path}/missing-key\n"
        f"Match user {device.user}\n  Port {device.port}\n",
    )
    common = ["--host", f"{device.user}@lab-pi", "--ssh-config", config, "--retries", 0]
    without = run("deploy", _model(tmp_path), "--name", "digits", *common)
    assert without.exit_code == 8, without.output  # no key offered: authentication fails
    deployed = run("deploy", _model(tmp_path), "--name", "digits", *common, "-k", device.key_path)
    assert deployed.exit_code == 0, deployed.output
    assert "1 device: 1 ok" in deployed.stdout


@needs_ssh
def test_deploy_through_a_proxy_jump_alias_of_the_ssh_config(start_device, known_hosts_for, tmp_path):
    """ProxyJump through the real path: ssh -G resolves the device and its hop, each with its own key."""
    jump, device = start_device("jump"), start_device("behind")
    config = write(
        tmp_path,
        f"Host behind\n  HostName {device.host}\n  Port {device.port}\n  User {device.user}\n"
        f"  IdentityFile {device.key_path}\n  ProxyJump hop\n"
        f"Host hop\n  HostName {jump.host}\n  Port {jump.port}\n  User {jump.user}\n  IdentityFile {jump.key_path}\n",
    )
    listed = json.loads(run("devices", "--host", "behind", "--ssh-config", config, "--json").stdout)["devices"][0]
    assert listed["proxy_jump"] == "hop" and listed["address"] == device.host
    known = known_hosts_for(jump, device)
    common = ["--host", "behind", "--ssh-config", config, "--known-hosts", known, "--retries", 0]
    before = jump.server.log.read_text(errors="replace").count(f"Accepted publickey for {jump.user}")
    deployed = run("deploy", _model(tmp_path), "--name", "digits", *common)
    assert deployed.exit_code == 0, deployed.output
    # the hop was used: its sshd accepted one more login, the jump user (test_connection_jump proves the path)
    assert jump.server.log.read_text(errors="replace").count(f"Accepted publickey for {jump.user}") == before + 1
    status = run("status", "--name", "digits", "--json", *common)
    assert status.exit_code == 0 and json.loads(status.stdout)["results"][0]["status"] == "ok"
    # the jump host's key unknown: refused, naming the jump host
    refused = run("status", "--name", "digits", *common[:4], "--known-hosts", known_hosts_for(device), "--retries", 0)
    assert refused.exit_code == 9 and "jump host" in refused.output, refused.output
