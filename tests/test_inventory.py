"""Inventories (Ansible YAML layout), --limit, --host parsing, ~/.ssh/config and target defaults."""

from __future__ import annotations

import os
import textwrap
import types
from pathlib import Path

import pytest

from edgeq.devices import Device, HostEntry, host_entries_from_specs, parse_host_spec, resolve_devices
from edgeq.errors import EdgeqError, TargetFileError
from edgeq.inventory import load_inventory

pytestmark = pytest.mark.usefixtures("isolated_home")

FLEET = """
all:
  vars:
    ansible_user: pi
    edgeq_remote_dir: /opt/edgeq
    color: all
  hosts:
    gateway:
      ansible_host: 10.0.0.1
  children:
    kitchen:
      vars:
        color: kitchen
        edgeq_python: /usr/bin/python3.11
      hosts:
        pi-[01:03]:
        pi-02:
          ansible_port: 2222
      children:
        fridge:
          vars:
            color: fridge
          hosts:
            pi-03:
    lab:
      vars:
        color: lab
        ansible_user: lab
      hosts:
        bench:
          ansible_host: 10.0.9.9
          ansible_ssh_private_key_file: ~/.ssh/lab_key
          color: bench
        pi-01:
"""


def _write(tmp_path: Path, text: str, name: str = "inventory.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def fleet(tmp_path):
    return load_inventory(_write(tmp_path, FLEET))


def _target(**deploy):
    values = dict(transport="ssh", user=None, port=22, remote_dir="edgeq", keep_versions=3)
    values.update(deploy)
    return types.SimpleNamespace(name="fake", python="python3", deploy=types.SimpleNamespace(**values))


# --------------------------------------------------------------------------- --host


@pytest.mark.parametrize(
    ("text", "user", "address", "port"),
    [
        ("pi@10.0.0.5", "pi", "10.0.0.5", None),
        ("pi@10.0.0.5:2222", "pi", "10.0.0.5", 2222),
        ("10.0.0.5", None, "10.0.0.5", None),
        ("kitchen-pi", None, "kitchen-pi", None),
        ("admin@pi.local:22", "admin", "pi.local", 22),
        ("pi@[fe80::1]:2222", "pi", "fe80::1", 2222),
        ("::1", None, "::1", None),
    ],
)
def test_parse_host_spec(text, user, address, port):
    spec = parse_host_spec(text)
    assert (spec.user, spec.address, spec.port) == (user, address, port)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "pi@",
        "a b",
        "pi@host:99999",
        "pi@host:x",
        "bad;user@host",
        "pi@host;rm -rf /",
        "pi@[::1",
        "pi@-oProxyCommand=x",
    ],
)
def test_parse_host_spec_refuses(text):
    with pytest.raises(EdgeqError):
        parse_host_spec(text)


def test_host_specs_resolve_like_inventory_hosts():
    devices = resolve_devices(host_entries_from_specs([parse_host_spec("pi@10.0.0.5:2222")]))
    assert devices == (Device(name="pi@10.0.0.5:2222", address="10.0.0.5", user="pi", port=2222),)
    assert devices[0].destination == "pi@10.0.0.5:2222"


# --------------------------------------------------------------------------- reading inventories


def test_hosts_groups_and_ranges(fleet):
    assert list(fleet.hosts) == ["gateway", "pi-01", "pi-02", "pi-03", "bench"]
    assert set(fleet.groups["kitchen"]) == {"pi-01", "pi-02", "pi-03"}  # children's hosts included
    assert fleet.groups["fridge"] == ("pi-03",)
    assert set(fleet.groups["all"]) == set(fleet.hosts)


def test_variables_merge_like_ansible(fleet):
    # all < parent group < child group < host; groups of the same depth by name (kitchen < lab)
    assert fleet.hosts["gateway"].vars["color"] == "all"
    assert fleet.hosts["pi-02"].vars["color"] == "kitchen" and fleet.hosts["pi-02"].vars["ansible_port"] == 2222
    assert fleet.hosts["pi-03"].vars["color"] == "fridge"
    assert fleet.hosts["bench"].vars["color"] == "bench"
    assert fleet.hosts["pi-01"].vars["color"] == "lab" and fleet.hosts["pi-01"].vars["ansible_user"] == "lab"
    assert fleet.hosts["pi-01"].groups == ("kitchen", "lab")


def test_resolved_devices(fleet):
    devices = {d.name: d for d in resolve_devices(fleet.select())}
    assert devices["gateway"] == Device(
        name="gateway", address="10.0.0.1", user="pi", remote_dir="/opt/edgeq", groups=()
    )
    assert (devices["pi-02"].address, devices["pi-02"].port, devices["pi-02"].python) == (
        "pi-02",
        2222,
        "/usr/bin/python3.11",
    )
    assert devices["bench"].key_files == (os.path.expanduser("~/.ssh/lab_key"),) and devices["bench"].user == "lab"


def test_top_level_groups_without_all(tmp_path):
    inventory = load_inventory(_write(tmp_path, "web:\n  hosts:\n    a:\n    b:\ndb:\n  hosts:\n    c:\n"))
    assert list(inventory.hosts) == ["a", "b", "c"] and inventory.groups["db"] == ("c",)


def test_range_with_step_and_letters(tmp_path):
    inventory = load_inventory(_write(tmp_path, "all:\n  hosts:\n    n[0:4:2]:\n    x-[a:c]:\n"))
    assert list(inventory.hosts) == ["n0", "n2", "n4", "x-a", "x-b", "x-c"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("all: [a, b]\n", "must be a mapping"),
        ("- a\n- b\n", "Ansible's YAML layout"),
        ("all:\n  host:\n    a:\n", "unknown key 'host'"),
        ("all:\n  hosts:\n    - a\n", "hosts of group 'all' must be a mapping"),
        ("all:\n  hosts: {a: 3}\n", "its variables must be a mapping"),
        ("all:\n  vars: [x]\n  hosts: {a: }\n", "vars of group 'all' must be a mapping"),
        ("a:\n  children:\n    b:\nb:\n  children:\n    a:\n  hosts: {h: }\n", "cycle"),
        ("all:\n  vars: {x: 1}\n", "no hosts"),
        ("all:\n  hosts: {a: \n", "not valid YAML"),
        ("", "is empty"),
    ],
)
def test_bad_inventories(tmp_path, text, message):
    with pytest.raises(EdgeqError, match=message):
        load_inventory(_write(tmp_path, text))


def test_unknown_group_key_suggests(tmp_path):
    with pytest.raises(EdgeqError) as info:
        load_inventory(_write(tmp_path, "all:\n  childern:\n    a:\n"))
    assert info.value.hint == "did you mean 'children'?"


def test_missing_inventory(tmp_path):
    with pytest.raises(EdgeqError, match="no such file"):
        load_inventory(tmp_path / "nope.yml")


# --------------------------------------------------------------------------- --limit


@pytest.mark.parametrize(
    ("limit", "names"),
    [
        (None, ["gateway", "pi-01", "pi-02", "pi-03", "bench"]),
        ("kitchen", ["pi-01", "pi-02", "pi-03"]),
        ("fridge,gateway", ["gateway", "pi-03"]),
        ("pi-0*", ["pi-01", "pi-02", "pi-03"]),
        ("kitchen,!fridge", ["pi-01", "pi-02"]),
        ("kitchen,&lab", ["pi-01"]),
        ("!kitchen", ["gateway", "bench"]),
        (" bench , gateway ", ["gateway", "bench"]),
    ],
)
def test_limit(fleet, limit, names):
    assert [h.name for h in fleet.select(limit)] == names


def test_limit_unknown_name_suggests(fleet):
    with pytest.raises(EdgeqError, match="no host or group named 'kitchn'") as info:
        fleet.select("kitchn")
    assert info.value.hint == "did you mean 'kitchen'?"


def test_limit_selecting_nothing(fleet):
    with pytest.raises(EdgeqError, match="selects no host"):
        fleet.select("kitchen,&gateway")
    with pytest.raises(EdgeqError, match="matches no host"):
        fleet.select("zz*")


# --------------------------------------------------------------------------- resolution


def test_ssh_config_applies_to_aliases_but_explicit_values_win(tmp_path):
    config = tmp_path / "ssh_config"
    key = tmp_path / "id_kitchen"
    key.write_text("x")
    config.write_text(
        f"Host kitchen\n  HostName 10.1.1.1\n  User cfguser\n  Port 2200\n  IdentityFile {key}\n  IdentityFile {tmp_path}/missing\n"
    )
    entries = host_entries_from_specs([parse_host_spec("kitchen"), parse_host_spec("me@kitchen:22")])
    first, second = resolve_devices(entries[:1], ssh_config=config) + resolve_devices(entries[1:], ssh_config=config)
    assert (first.address, first.user, first.port, first.key_files) == ("10.1.1.1", "cfguser", 2200, (str(key),))
    assert (second.address, second.user, second.port) == ("10.1.1.1", "me", 22)


def test_a_host_behind_a_proxy_is_refused_rather_than_reached_directly(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host hidden\n  HostName 10.2.2.2\n  ProxyJump bastion\n")
    with pytest.raises(EdgeqError, match="through a proxy"):
        resolve_devices(host_entries_from_specs([parse_host_spec("pi@hidden")]), ssh_config=config)


def test_target_defaults_come_after_inventory_and_ssh_config():
    loader = lambda name: _target(user="tuser", port=2022, remote_dir="models-here", keep_versions=5)  # noqa: E731
    plain = resolve_devices([HostEntry("a", {"edgeq_target": "fake"})], target_loader=loader)[0]
    assert (plain.user, plain.port, plain.remote_dir, plain.keep_versions, plain.target) == (
        "tuser",
        2022,
        "models-here",
        5,
        "fake",
    )
    given = resolve_devices(
        [
            HostEntry(
                "a",
                {
                    "edgeq_target": "fake",
                    "ansible_user": "u",
                    "ansible_port": "23",
                    "edgeq_remote_dir": "~/mine",
                    "edgeq_keep_versions": 2,
                },
            )
        ],
        target_loader=loader,
    )[0]
    assert (given.user, given.port, given.remote_dir, given.keep_versions) == ("u", 23, "mine", 2)


def test_target_option_overrides_edgeq_target():
    seen = []

    def loader(name):
        seen.append(name)
        return _target()

    resolve_devices([HostEntry("a", {"edgeq_target": "one"})], target="two", target_loader=loader)
    assert seen == ["two"]


def test_bundled_targets_resolve():
    device = resolve_devices(host_entries_from_specs([parse_host_spec("pi@10.0.0.5")]), target="rpi4b")[0]
    assert (device.target, device.port, device.remote_dir, device.keep_versions, device.transport) == (
        "rpi4b",
        22,
        "edgeq",
        3,
        "ssh",
    )
    local = resolve_devices([HostEntry("host", {}, source="--target")], target="host")[0]
    assert local.transport == "local" and local.destination == "local"


def test_unknown_target_is_a_target_file_error():
    with pytest.raises(TargetFileError):
        resolve_devices(host_entries_from_specs([parse_host_spec("pi@10.0.0.5")]), target="rpi4")


def test_local_target_takes_no_host():
    with pytest.raises(EdgeqError, match="takes no --host"):
        resolve_devices(
            host_entries_from_specs([parse_host_spec("pi@10.0.0.5")]),
            target_loader=lambda n: _target(transport="local"),
            target="x",
        )


def test_ansible_connection_local():
    device = resolve_devices([HostEntry("me", {"ansible_connection": "local"}, source="inv")])[0]
    assert device.transport == "local"
    with pytest.raises(EdgeqError, match="not supported"):
        resolve_devices([HostEntry("w", {"ansible_connection": "winrm"}, source="inv")])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"edgeq_targt": "rpi4b"}, "unknown variable 'edgeq_targt'"),
        ({"ansible_port": 70000}, "out of range"),
        ({"ansible_port": "ssh"}, "not a number"),
        ({"ansible_user": "{{ lookup('env', 'USER') }}"}, "template"),
        ({"edgeq_remote_dir": "/"}, "top of a file system"),
        ({"edgeq_remote_dir": "~other/x"}, "not supported"),
        ({"edgeq_keep_versions": 0}, "at least 1"),
        ({"ansible_host": ["a"]}, "must be a string"),
    ],
)
def test_bad_variables(values, message):
    with pytest.raises(EdgeqError, match=message):
        resolve_devices([HostEntry("h", values, source="inv.yml")])


def test_unknown_edgeq_variable_suggests():
    with pytest.raises(EdgeqError) as info:
        resolve_devices([HostEntry("h", {"edgeq_pyhton": "python3"}, source="inv.yml")])
    assert info.value.hint == "did you mean 'edgeq_python'?"


def test_the_same_device_twice_is_refused():
    entries = [HostEntry("a", {"ansible_host": "10.0.0.5"}), HostEntry("b", {"ansible_host": "10.0.0.5"})]
    with pytest.raises(EdgeqError, match="same device"):
        resolve_devices(entries)


# --------------------------------------------------------------------------- through a real sshd


def test_an_inventory_host_reached_through_an_ssh_config_alias(device, tmp_path):
    from _remote import options

    from edgeq.connection import open_connection

    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host lab-pi\n  HostName {device.host}\n  User {device.user}\n  Port {device.port}\n  IdentityFile {device.key_path}\n"
    )
    inventory = load_inventory(_write(tmp_path, "all:\n  children:\n    lab:\n      hosts:\n        lab-pi:\n"))
    (found,) = resolve_devices(inventory.select("lab"), ssh_config=config)
    assert (found.address, found.port, found.user, found.key_files) == (
        device.host,
        device.port,
        device.user,
        (str(device.key_path),),
    )
    with open_connection(found, options(device)) as conn:
        assert conn.run("whoami").stdout.strip() == device.user
