"""Inventories resolved by Ansible, compared with Ansible itself; --limit; the cache; --host parsing and device resolution.

The inventories below cover every form edgeq must read as Ansible does: YAML and
INI files, a directory of both with ``group_vars/`` and ``host_vars/``, numeric
ranges (leading zeros, steps) and letter ranges, ``host:port``, a host defined
twice, ``ansible_group_priority``, the ``ansible_ssh_*`` spellings mixed with the
plain ones across group and host levels, hosts in no group (``ungrouped``), Jinja
in ``ansible_host`` and ``edgeq_*``, and inventory plugins (``generator``,
``constructed``). For each, edgeq's hosts (order), groups and variables are
compared with ``ansible --list-hosts`` and ``ansible -m debug``, and its
connection values with the ssh command lines Ansible's connection plugin builds
(``-vvv``; ssh itself is replaced by a script that exits at once: no address is
resolved or contacted). Ansible's answers are computed once per module, several
at a time (tests/_ansible.py).
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import textwrap
import time
import types
from pathlib import Path

import _ansible
import pytest

from edgeq import inventory as inventory_module
from edgeq.devices import HostEntry, host_entries_from_specs, parse_host_spec, resolve_devices
from edgeq.errors import EdgeqError, TargetFileError
from edgeq.inventory import CONFIG_ENV_VARS, CONNECTION_VARS, Inventory, load_inventory

# --------------------------------------------------------------------------- the inventories

FLEET_YML = """
all:
  vars:
    ansible_user: pi
    ansible_connection: ssh
    edgeq_remote_dir: from-all
  hosts:
    gw-north.lan:2222:              # host:port
    127.0.0.9:
    twice:                          # defined again in lab: both definitions merge, the later wins
      ansible_host: 127.0.0.20
      ansible_port: 2001
      edgeq_target: first
  children:
    kitchen:
      vars:
        ansible_ssh_user: kuser     # beats a host's ansible_user: the ssh plugin takes the LAST set of its list
        ansible_group_priority: 10  # kitchen's variables win over lab's
        edgeq_remote_dir: from-kitchen
      hosts:
        shelf-pi-[01:10:3]:         # 01, 04, 07, 10
        aisle[A:C]-pi:              # aisleA-pi, aisleB-pi, aisleC-pi
    lab:
      vars:
        ansible_port: 2300
        ansible_ssh_port: 2400
        edgeq_remote_dir: from-lab
        edgeq_python: "/opt/{{ inventory_hostname }}/python"
      hosts:
        twice:
          ansible_host: 127.0.0.21
          ansible_ssh_host: 127.0.0.22
          edgeq_target: second
        aisleB-pi:
          ansible_user: labuser
          ansible_ssh_private_key_file: keys/lab
        templated:
          ansible_host: "127.0.0.{{ 30 + 1 }}"
          ansible_private_key_file: /first/key
          ansible_ssh_private_key_file: ~/.ssh/lab_key
      children:
        lab-deep:
          hosts:
            deep-1:
              ansible_ssh_port: 2999
              ansible_port: 3000
              ansible_python_interpreter: /usr/bin/python3.11
            deep-2:
              ansible_python_interpreter: auto_silent
"""

FLEET_INI = """
solo ansible_host=127.0.0.5
127.0.0.6:2201

[shelf]
shelf-pi-[08:12:2] ansible_ssh_user=iniuser
gw-north.lan:2222 ansible_ssh_port=2223
twice ansible_host=127.0.0.40 edgeq_target=first

[lab]
twice ansible_host=127.0.0.41 ansible_port=2500 edgeq_target=second
aisle[a:c]-pi

[shelf:vars]
ansible_user=shelfuser
ansible_group_priority=5
edgeq_remote_dir=from-shelf

[lab:vars]
ansible_user=labuser
edgeq_remote_dir=from-lab

[racks:children]
shelf
lab

[all:vars]
ansible_connection=ssh
"""

SITE = {  # a directory: YAML and INI sources, group_vars/ (file and folder forms) and host_vars/
    "10-hosts.yml": """
        edge:
          hosts:
            node-1:
              ansible_host: 127.0.1.1
            node-2:
          children:
            cameras:
              hosts:
                cam-[1:2]:
        """,
    "20-more.ini": """
        [edge]
        node-3 ansible_host=127.0.1.3
        [gateways]
        gw-[a:b].site
        """,
    "group_vars/all.yml": "ansible_connection: ssh\nansible_user: site\nedgeq_keep_versions: 4\n",
    "group_vars/edge/main.yml": "ansible_ssh_port: 2022\n",
    "group_vars/cameras.yml": "ansible_port: 2023\nedgeq_target: rpi5\n",
    "group_vars/gateways.yml": "ansible_ssh_private_key_file: /keys/gw\n",
    "host_vars/node-2.yml": "ansible_host: 127.0.1.2\nansible_ssh_user: two\n",
    "host_vars/cam-1.yml": "ansible_ssh_host: 127.0.1.11\n",
}

PLUGINS = {  # inventory plugins: hosts generated and variables composed by Ansible
    "01-static.yml": "all:\n  vars:\n    ansible_connection: ssh\n  hosts:\n    static-1:\n      ansible_host: 127.0.2.1\n",
    "02-generator.yml": """
        plugin: ansible.builtin.generator
        hosts:
          name: "{{ site }}-node"
          parents:
            - name: nodes
        layers:
          site: [east, west]
        """,
    "03-constructed.yml": """
        plugin: ansible.builtin.constructed
        strict: true
        compose:
          ansible_port: 2000 + (inventory_hostname | length)
          edgeq_remote_dir: "'/srv/' ~ inventory_hostname"
        groups:
          generated: inventory_hostname.endswith('-node')
        """,
}

INVENTORIES = ["fleet.yml", "fleet.ini", "site", "plugins"]

LIMITS = [  # on fleet.ini (no templates: each limit is one `ansible --list-hosts` for edgeq)
    "shelf",
    "shelf:lab",
    "lab,gw-north.lan",
    "shelf:&lab",
    "racks:!lab",
    "shelf[0]",
    "shelf[1:2]",
    "lab[-1]",
    "~aisle[ab]-pi",
    "shelf-pi-1*",
    "all:!racks",
    "ungrouped",
    "127.0.0.6",
    "twice:solo",
]

REFUSED_LIMITS = {  # limit -> (edgeq's message, its hint); Ansible runs on no host with them either
    "shelf-pi-1[02]": (  # Ansible reads [02] as a subscript
        "'shelf-pi-1' matches no host or group",
        "Ansible reads [02] after 'shelf-pi-1' as a subscript (which of its hosts); for a set of characters, "
        "use a regex: ~shelf-pi-1[02]$",
    ),
    "shlef": ("'shlef' matches no host or group", "did you mean 'shelf'?"),
    "shelf:&ungrouped": ("selects no host", None),
    "shelf[9]": ("No hosts matched the subscripted pattern 'shelf[9]'", None),
}
PARTIAL_LIMIT = (
    "shelf,shlef"  # Ansible warns and runs on shelf; edgeq refuses unless ANSIBLE_HOST_PATTERN_MISMATCH says
)

REFUSED = """
all:
  vars: {ansible_connection: ssh}
  hosts:
    jump: {ansible_ssh_common_args: "-o ProxyJump=bastion.example"}
    command: {ansible_ssh_extra_args: "-o 'ProxyCommand=ssh -W %h:%p gw'"}
    port: {ansible_ssh_args: "-C -p 2222"}
    inline: {ansible_ssh_private_key: "-----BEGIN OPENSSH PRIVATE KEY-----"}
    para: {ansible_connection: paramiko, ansible_paramiko_proxy_command: "nc gw 22"}
    fine: {ansible_ssh_common_args: "-o StrictHostKeyChecking=no -o ServerAliveInterval=5"}
    local: {ansible_connection: local, ansible_ssh_common_args: "-J bastion"}
"""
REFUSED_HOSTS = {
    "jump": "ansible_ssh_common_args sets ProxyJump .* edgeq does not support proxies",
    "command": "ansible_ssh_extra_args sets ProxyCommand",
    "port": "ansible_ssh_args sets Port .* ssh options that change the destination",
    "inline": "ansible_ssh_private_key gives the private key itself",
    "para": "the paramiko connection goes through a proxy command",
}

EDGEQ_NAMES = ["edgeq_target", "edgeq_remote_dir", "edgeq_python", "edgeq_keep_versions", "ansible_python_interpreter"]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory):
    """One HOME, cache and working directory for the module; no ANSIBLE_* variable of the person running the tests."""
    base = tmp_path_factory.mktemp("inventory-env")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(base / "home"))
        patch.setenv("XDG_CACHE_HOME", str(base / "cache"))
        for name in [n for n in os.environ if n.startswith("ANSIBLE_")] + ["SSH_AUTH_SOCK", "EDGEQ_SSH_PASSWORD"]:
            patch.delenv(name, raising=False)
        (base / "home").mkdir()
        (base / "work").mkdir()
        patch.chdir(base / "work")
        yield base / "home"


@pytest.fixture(scope="module")
def fleets(tmp_path_factory, home) -> Path:
    folder = tmp_path_factory.mktemp("fleets")
    _write(folder / "fleet.yml", FLEET_YML)
    _write(folder / "fleet.ini", FLEET_INI)
    _write(folder / "refused.yml", REFUSED)
    for name, text in SITE.items():
        _write(folder / "site" / name, text)
    for name, text in PLUGINS.items():
        _write(folder / "plugins" / name, text)
    return folder


@pytest.fixture(scope="module")
def reference(fleets, tmp_path_factory):
    """Ansible's answers for every inventory and limit, computed a few at a time."""
    fake = tmp_path_factory.mktemp("fake-ssh") / "ssh"
    no_ssh = {"ANSIBLE_SSH_EXECUTABLE": str(fake)}
    calls = {}
    for name in INVENTORIES:
        path = fleets / name
        calls[f"hosts {name}"] = lambda path=path: _ansible.list_hosts(path)
        calls[f"ssh {name}"] = lambda path=path, name=name: _ansible.ssh_commands(path, fake.with_name(f"ssh-{name}"))
        calls[f"vars {name}"] = lambda path=path: _ansible.debug_vars(path, [*EDGEQ_NAMES, "group_names"], env=no_ssh)
    for limit in [*LIMITS, *REFUSED_LIMITS, PARTIAL_LIMIT]:
        calls[f"limit {limit}"] = lambda limit=limit: _ansible.list_hosts(fleets / "fleet.ini", limit)
    return _ansible.in_parallel(calls)


def _outcome(path: Path, limit: str | None = None) -> Inventory | EdgeqError:
    try:
        return load_inventory(path, limit)
    except EdgeqError as exc:
        return exc


@pytest.fixture(scope="module")
def loaded(fleets) -> dict[str, Inventory]:
    return _ansible.in_parallel({name: lambda name=name: load_inventory(fleets / name) for name in INVENTORIES}, 2)


@pytest.fixture(scope="module")
def outcomes(fleets, loaded) -> dict[str, Inventory | EdgeqError]:
    """edgeq's answers for every limit and refused host (the inventories are listed and cached by ``loaded``)."""
    _outcome(fleets / "refused.yml", "fine")  # lists and caches it once
    calls = {
        f"limit {limit}": lambda limit=limit: _outcome(fleets / "fleet.ini", limit)
        for limit in [*LIMITS, *REFUSED_LIMITS]
    }
    calls |= {f"host {h}": lambda h=h: _outcome(fleets / "refused.yml", h) for h in [*REFUSED_HOSTS, "fine:local"]}
    return _ansible.in_parallel(calls, 2)


def _ssh_view(entry: HostEntry) -> _ansible.SSHCommand:
    """What edgeq's entry says ssh gets: the address, and port, user and key where Ansible sets them."""
    values = entry.vars
    port = values.get("ansible_port")
    return _ansible.SSHCommand(
        address=str(values.get("ansible_host", entry.name)),
        port=None if port is None else str(port),
        user=values.get("ansible_user"),
        key_file=values.get("ansible_ssh_private_key_file"),
    )


# --------------------------------------------------------------------------- edgeq against Ansible


@pytest.mark.parametrize("name", INVENTORIES)
def test_hosts_in_ansibles_order(name, loaded, reference):
    assert list(loaded[name].hosts) == reference[f"hosts {name}"]
    assert [e.name for e in loaded[name].select()] == reference[f"hosts {name}"]


@pytest.mark.parametrize("name", INVENTORIES)
def test_connection_values_are_what_ansible_gives_ssh(name, loaded, reference):
    ansible = reference[f"ssh {name}"]
    edgeq = {view.address: view for view in map(_ssh_view, loaded[name].hosts.values())}
    assert edgeq == ansible
    assert len(ansible) == len(loaded[name].hosts)


@pytest.mark.parametrize("name", INVENTORIES)
def test_edgeq_variables_and_groups_are_ansibles(name, loaded, reference):
    ansible = reference[f"vars {name}"]
    for host, entry in loaded[name].hosts.items():
        expected = {k: v for k, v in ansible[host].items() if k != "group_names" and v is not None}
        if str(expected.get("ansible_python_interpreter", "")).startswith("auto"):
            del expected["ansible_python_interpreter"]  # interpreter discovery: edgeq uses the target's
        found = {k: v for k, v in entry.vars.items() if k in EDGEQ_NAMES}
        assert found == expected, host
        assert list(entry.groups) == ansible[host]["group_names"], host


@pytest.mark.parametrize("limit", LIMITS)
def test_limit_selects_as_ansible_limit(limit, outcomes, reference):
    selected = outcomes[f"limit {limit}"]
    assert isinstance(selected, Inventory), selected
    assert reference[f"limit {limit}"], f"Ansible selects nothing with {limit!r}"
    assert [e.name for e in selected.select()] == reference[f"limit {limit}"]
    assert selected.limit == limit


def test_the_forms_resolve_as_documented(loaded):
    """What the comparisons above check, spelled out for the YAML fleet."""
    fleet = loaded["fleet.yml"].hosts
    assert list(fleet) == [
        *("gw-north.lan", "127.0.0.9", "twice"),  # all's own hosts first
        *("shelf-pi-01", "shelf-pi-04", "shelf-pi-07", "shelf-pi-10", "aisleA-pi", "aisleB-pi", "aisleC-pi"),
        *("templated", "deep-1", "deep-2"),
    ]
    assert fleet["gw-north.lan"].vars == {
        "ansible_connection": "ssh",
        "ansible_user": "pi",
        "ansible_port": 2222,
        "edgeq_remote_dir": "from-all",
    }
    assert fleet["gw-north.lan"].groups == ("ungrouped",)
    twice = fleet["twice"].vars
    assert (twice["ansible_host"], twice["ansible_port"], twice["edgeq_target"]) == ("127.0.0.22", 2400, "second")
    assert "ansible_ssh_host" not in twice and "ansible_ssh_port" not in twice
    aisle = fleet["aisleB-pi"]
    assert (aisle.vars["ansible_user"], aisle.vars["edgeq_remote_dir"], aisle.groups) == (
        "kuser",
        "from-kitchen",
        ("kitchen", "lab"),
    )
    assert aisle.vars["ansible_ssh_private_key_file"] == "keys/lab"  # as Ansible gives it to ssh: from the cwd
    templated = fleet["templated"].vars
    assert templated["ansible_host"] == "127.0.0.31" and templated["edgeq_python"] == "/opt/templated/python"
    assert templated["ansible_ssh_private_key_file"] == os.path.expanduser("~/.ssh/lab_key")
    assert fleet["deep-1"].vars["ansible_port"] == 2999 and fleet["deep-1"].groups == ("lab", "lab-deep")
    assert "ansible_python_interpreter" not in fleet["deep-2"].vars  # auto_silent: edgeq uses the target's Python
    assert loaded["fleet.yml"].groups["kitchen"] == (
        *("shelf-pi-01", "shelf-pi-04", "shelf-pi-07", "shelf-pi-10"),
        *("aisleA-pi", "aisleB-pi", "aisleC-pi"),
    )
    assert loaded["fleet.yml"].groups["lab"] == ("twice", "aisleB-pi", "templated", "deep-1", "deep-2")
    ini = loaded["fleet.ini"].hosts
    assert ini["twice"].vars["ansible_host"] == "127.0.0.41" and ini["twice"].vars["edgeq_target"] == "second"
    assert ini["twice"].vars["ansible_user"] == "shelfuser"  # shelf's priority 5 beats lab
    assert ini["gw-north.lan"].vars["ansible_port"] == 2223  # ansible_ssh_port beats host:port
    assert ini["127.0.0.6"].vars["ansible_port"] == 2201 and ini["127.0.0.6"].groups == ("ungrouped",)
    site = loaded["site"].hosts
    assert site["cam-2"].vars["ansible_port"] == 2022  # edge's ansible_ssh_port beats cameras' ansible_port
    assert site["node-2"].vars["ansible_user"] == "two" and site["gw-b.site"].groups == ("gateways",)
    plugins = loaded["plugins"].hosts
    assert list(plugins) == ["static-1", "east-node", "west-node"]
    assert plugins["east-node"].vars == {
        "ansible_connection": "ssh",  # all's vars (01-static.yml) apply to generated hosts too
        "ansible_port": 2009,
        "edgeq_remote_dir": "/srv/east-node",
    }
    assert plugins["west-node"].groups == ("generated", "nodes")


def test_resolved_devices_connect_where_ansible_would(loaded, reference):
    """End to end through resolve_devices (no SSH config here): address, port and user as Ansible's ssh command."""
    entries = loaded["site"].select()
    devices = resolve_devices(entries, target_loader=lambda name: _fake_target())
    ansible = reference["ssh site"]
    for device in devices:
        command = ansible[device.address]
        assert (str(device.port), device.user) == (command.port or "22", command.user), device.name


def test_alias_lists_are_ansibles():
    """edgeq's alias lists and configuration variables against ansible-doc: a future ansible-core that changes them fails here."""
    doc = _ansible.connection_doc("ssh", "paramiko_ssh")
    for plugin, options in CONNECTION_VARS.items():
        for option, names in options.items():
            listed = [v["name"] for v in doc[plugin][option].get("vars", ())]
            assert tuple(n for n in listed if n.startswith("ansible_")) == names, (plugin, option)
    read = {("ssh", o) for o in ("remote_user", "port", "private_key_file", "private_key", "ssh_args")}
    read |= {("ssh", "ssh_common_args"), ("ssh", "ssh_extra_args")}
    read |= {("paramiko_ssh", o) for o in ("remote_user", "port", "private_key_file", "proxy_command")}
    env = {e["name"] for plugin, option in read for e in doc[plugin][option].get("env", ())}
    assert env == CONFIG_ENV_VARS
    assert doc["paramiko_ssh"]["proxy_command"]["vars"][0]["name"] == inventory_module._PROXY_COMMAND_VAR


def test_ansible_cfg_connection_defaults_apply_below_inventory_values(tmp_path, monkeypatch):
    config = _write(
        tmp_path / "ansible.cfg",
        "[defaults]\nremote_user = cfguser\nremote_port = 2201\nprivate_key_file = ~/.ssh/cfg_key\n",
    )
    inventory = _write(
        tmp_path / "inv.yml",
        """
        all:
          vars: {ansible_connection: ssh}
          hosts:
            plain: {ansible_host: 127.0.5.1}
            given: {ansible_host: 127.0.5.2, ansible_ssh_user: own, ansible_port: 2300}
        """,
    )
    monkeypatch.setenv("ANSIBLE_CONFIG", str(config))
    found = load_inventory(inventory)
    ansible = _ansible.ssh_commands(inventory, tmp_path / "ssh", env={"ANSIBLE_CONFIG": str(config)})
    assert {v.address: v for v in map(_ssh_view, found.hosts.values())} == ansible
    assert found.hosts["plain"].vars["ansible_user"] == "cfguser"


# --------------------------------------------------------------------------- --limit that Ansible refuses


@pytest.mark.parametrize("limit", REFUSED_LIMITS)
def test_a_limit_ansible_would_not_run_is_refused(limit, outcomes, reference):
    error = outcomes[f"limit {limit}"]
    message, hint = REFUSED_LIMITS[limit]
    assert isinstance(error, EdgeqError) and message in error.message and error.hint == hint
    assert "\n" not in error.message
    assert reference[f"limit {limit}"] is None  # Ansible runs on no host either


def test_a_limit_part_that_matches_nothing_follows_host_pattern_mismatch(fleets, monkeypatch, reference):
    """Ansible only warns about 'shelf,shlef' and runs on shelf; edgeq refuses unless told to do as Ansible."""
    with pytest.raises(EdgeqError, match="'shlef' matches no host or group") as info:
        load_inventory(fleets / "fleet.ini", PARTIAL_LIMIT)
    assert info.value.hint == "did you mean 'shelf'?"
    monkeypatch.setenv("ANSIBLE_HOST_PATTERN_MISMATCH", "warning")
    found = load_inventory(fleets / "fleet.ini", PARTIAL_LIMIT)
    assert [e.name for e in found.select()] == reference[f"limit {PARTIAL_LIMIT}"]


def test_select_with_another_limit(loaded):
    assert [e.name for e in loaded["fleet.ini"].select("lab")] == ["twice", "aislea-pi", "aisleb-pi", "aislec-pi"]
    assert len(loaded["fleet.ini"].select(" ")) == len(loaded["fleet.ini"].hosts)


# --------------------------------------------------------------------------- what edgeq refuses


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_what_edgeq_cannot_apply_is_refused_naming_host_and_feature(host, outcomes):
    error = outcomes[f"host {host}"]
    assert isinstance(error, EdgeqError), error
    assert re.match(f"host '{host}' of .*refused.yml: {REFUSED_HOSTS[host]}", error.message), error.message


def test_harmless_ssh_options_and_local_hosts_are_accepted(outcomes):
    found = outcomes["host fine:local"]
    assert isinstance(found, Inventory), found
    assert found.hosts["local"].vars == {"ansible_connection": "local"}
    assert found.hosts["fine"].vars == {"ansible_connection": "ssh"}


def test_ssh_options_of_ansible_cfg_are_checked_too(tmp_path, monkeypatch):
    config = _write(tmp_path / "ansible.cfg", "[ssh_connection]\nssh_common_args = -J bastion\n")
    monkeypatch.setenv("ANSIBLE_CONFIG", str(config))
    with pytest.raises(EdgeqError, match="ssh_common_args in Ansible's configuration sets ProxyJump"):
        load_inventory(_write(tmp_path / "inv.ini", "pi-1 ansible_host=127.0.6.1\n"))


def test_a_template_ansible_cannot_render_is_one_line_naming_host_and_variable(tmp_path):
    path = _write(tmp_path / "inv.yml", 'all:\n  hosts:\n    pi-1:\n      ansible_host: "{{ nosuchvar }}.lan"\n')
    with pytest.raises(EdgeqError) as info:
        load_inventory(path)
    message = info.value.message
    assert "\n" not in message and "Traceback" not in message
    assert "could not render ansible_host of host 'pi-1'" in message
    assert "'nosuchvar' is undefined" in message and f"{path}:4:" in message


# --------------------------------------------------------------------------- vault

VAULT_PASSWORD = "edgeq-test-vault"
VAULTED_HOST = """
all:
  hosts:
    vaulted:
      ansible_host: !vault |
          $ANSIBLE_VAULT;1.1;AES256
          66643734356631373961323333613337646633383966633238316434373130653137353537356466
          6266643739623462383232346637623031653933343830620a623637393836356236376431663236
          65333339373064663933303131653363396430343435656363636533303661653535306635386538
          3562633639393865350a646533636462363663623565636639343562336462333033626635623234
          6433
"""


def test_vault_values_are_decrypted_by_ansible_and_never_cached(tmp_path, monkeypatch):
    counter = _counting_ansible(tmp_path, monkeypatch)
    path = _write(tmp_path / "vault.yml", VAULTED_HOST)
    with pytest.raises(EdgeqError, match="could not render ansible_host of host 'vaulted'.*no vault secrets"):
        load_inventory(path)
    password = _write(tmp_path / "password", VAULT_PASSWORD + "\n")
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(password))
    assert load_inventory(path).hosts["vaulted"].vars == {"ansible_host": "127.0.0.50"}
    assert _cached(tmp_path) == []
    assert _runs(counter).count("ansible-inventory") == 2


# --------------------------------------------------------------------------- the cache


def _counting_ansible(tmp_path: Path, monkeypatch) -> Path:
    """Ansible's programs first on PATH, through wrappers that count their runs in the returned file."""
    counter = tmp_path / "runs"
    counter.write_text("")
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    for name in ("ansible-inventory", "ansible", "ansible-config"):
        wrapper = wrappers / name
        wrapper.write_text(f'#!/bin/sh\necho {name} >> "{counter}"\nexec "{_ansible.bin_dir() / name}" "$@"\n')
        wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrappers}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return counter


def _cached(tmp_path: Path) -> list[str]:
    folder = tmp_path / "cache" / "edgeq" / "inventory"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _runs(counter: Path) -> list[str]:
    runs = counter.read_text().split()
    counter.write_text("")
    return sorted(runs)


def test_the_second_load_does_not_run_ansible_and_a_change_invalidates(tmp_path, monkeypatch):
    counter = _counting_ansible(tmp_path, monkeypatch)
    folder = tmp_path / "fleet"
    path = _write(folder / "hosts.ini", "[kitchen]\npi-[1:3] ansible_host=127.0.7.1\n[lab]\nlab-1\n")
    vars_file = _write(folder / "group_vars" / "kitchen.yml", "edgeq_target: rpi4b\n")
    first = load_inventory(path)
    assert _runs(counter) == ["ansible", "ansible-inventory"]
    started = time.monotonic()
    assert load_inventory(path) == first
    assert _runs(counter) == [] and time.monotonic() - started < 0.5
    assert [e.name for e in load_inventory(path, "kitchen[0]").select()] == ["pi-1"]
    assert _runs(counter) == ["ansible"]  # another limit: only the selection is Ansible's to say
    assert [e.name for e in load_inventory(path, "kitchen[0]").select()] == ["pi-1"]
    assert _runs(counter) == []

    stamp = os.stat(vars_file).st_mtime_ns + 10**9
    vars_file.write_text("edgeq_target: rpi5\n")
    os.utime(vars_file, ns=(stamp, stamp))
    assert load_inventory(path).hosts["pi-1"].vars["edgeq_target"] == "rpi5"
    assert _runs(counter) == ["ansible", "ansible-inventory"]
    path.touch()
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    load_inventory(path)
    assert _runs(counter) == ["ansible", "ansible-inventory"]
    monkeypatch.setenv("ANSIBLE_INVENTORY_IGNORE", ".bak")  # Ansible's configuration is part of the key
    load_inventory(path)
    assert _runs(counter) == ["ansible", "ansible-inventory"]

    cache = tmp_path / "cache" / "edgeq" / "inventory"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    files = list(cache.iterdir())
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert all(not f.name.startswith(".") for f in files)  # no temporary file left behind


def test_plugins_and_scripts_are_never_cached_templates_are_rendered_each_time(tmp_path, monkeypatch, fleets):
    counter = _counting_ansible(tmp_path, monkeypatch)
    script = _write(
        tmp_path / "inventory.sh", '#!/bin/sh\necho \'{"lab": {"hosts": ["s-1"]}, "_meta": {"hostvars": {}}}\'\n'
    )
    script.chmod(0o755)
    found = _ansible.in_parallel(
        {"plugins": lambda: load_inventory(fleets / "plugins"), "script": lambda: load_inventory(script)}, 2
    )
    assert list(found["script"].hosts) == ["s-1"] and len(found["plugins"].hosts) == 3
    assert _cached(tmp_path) == []
    _runs(counter)
    templated = _write(tmp_path / "t.yml", 'all:\n  hosts:\n    t-1:\n      ansible_host: "127.0.8.{{ 1 + 1 }}"\n')
    for _ in range(2):
        assert load_inventory(templated).hosts["t-1"].vars["ansible_host"] == "127.0.8.2"
    assert _runs(counter) == ["ansible"] * 3 + ["ansible-inventory"]  # listed once; rendered every time
    assert len(_cached(tmp_path)) == 2  # the listing and the selection, as written


def test_a_broken_cache_file_is_a_miss(tmp_path, monkeypatch):
    counter = _counting_ansible(tmp_path, monkeypatch)
    path = _write(tmp_path / "inv.ini", "pi-1\n")
    load_inventory(path)
    for cached in (tmp_path / "cache" / "edgeq" / "inventory").iterdir():
        cached.write_text("{not json")
    _runs(counter)
    assert list(load_inventory(path).hosts) == ["pi-1"]
    assert _runs(counter) == ["ansible", "ansible-inventory"]


# --------------------------------------------------------------------------- errors and warnings


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"inv.yml": "all:\n  hosts: {a: \n"}, r"inventory .*inv.yml: Ansible cannot parse it: YAML parsing failed.*inv.yml:3:1, yaml plugin"),
        ({"inv.ini": "[g\nfoo\n"}, r"Ansible cannot parse it: .*\(ini plugin\)"),
        ({"dir/ok.ini": "[g]\nh1\n", "dir/bad.yml": "all: {hosts: [\n"}, r"Ansible cannot parse .*dir/bad.yml: YAML parsing failed"),
        ({"inv.yml": "all:\n  childern:\n    g:\n      hosts: {a: }\n"}, r"Ansible would skip part of it: Skipping unexpected key \(childern\)"),
        ({"inv.yml": "all:\n  vars: {x: 1}\n"}, r"inventory .*inv.yml has no hosts"),
    ],
)  # fmt: skip
def test_an_inventory_ansible_cannot_read_is_one_line(files, message, tmp_path):
    for name, text in files.items():
        _write(tmp_path / name, text)
    with pytest.raises(EdgeqError, match=message) as info:
        load_inventory(tmp_path / next(iter(files)).split("/")[0])
    assert "\n" not in info.value.message and "Traceback" not in info.value.message
    if "childern" in message:
        assert info.value.hint == "did you mean 'children'?"


def test_a_missing_inventory_is_refused_before_running_ansible(tmp_path, monkeypatch):
    counter = _counting_ansible(tmp_path, monkeypatch)
    with pytest.raises(EdgeqError, match="nope.yml: no such file or directory"):
        load_inventory(tmp_path / "nope.yml")
    assert _runs(counter) == []


def test_without_ansible_one_line_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(EdgeqError, match="ansible-inventory was found neither on PATH nor beside") as info:
        load_inventory(_write(tmp_path / "inv.ini", "pi-1\n"))
    assert "ansible-core" in (info.value.hint or "")


def test_ansible_warnings_go_to_the_debug_log_only(tmp_path, capfd, caplog):
    path = _write(tmp_path / "inv.ini", "[pi]\npi ansible_host=127.0.9.1\n")  # a host named as its group: Ansible warns
    with caplog.at_level("DEBUG", logger="edgeq.inventory"):
        found = load_inventory(path)
    assert list(found.hosts) == ["pi"]
    assert capfd.readouterr().err == ""
    assert "Found both group and host with same name: pi" in caplog.text


def test_the_cli_says_it_in_one_line_with_a_nonzero_exit(tmp_path):
    from click.testing import CliRunner

    from edgeq.cli import cli

    path = _write(tmp_path / "inv.yml", "all:\n  hosts: {a: \n")
    result = CliRunner().invoke(cli, ["status", "--name", "m", "-i", str(path)])
    assert result.exit_code == 1
    assert [line for line in result.stderr.splitlines() if line.startswith("Error: ")] == [
        f"Error: inventory {path}: Ansible cannot parse it: YAML parsing failed: While parsing a flow node did not "
        f"find expected node content. ({path}:3:1, yaml plugin)"
    ]
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- --host


def _fake_target(**deploy):
    values = dict(transport="ssh", user=None, port=22, remote_dir="edgeq", keep_versions=3, prometheus_dir=None)
    values.update(deploy)
    return types.SimpleNamespace(name="fake", python="python3", deploy=types.SimpleNamespace(**values))


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
    (device,) = resolve_devices(host_entries_from_specs([parse_host_spec("pi@10.0.0.5:2222")]))
    assert (device.name, device.address, device.user, device.port) == ("pi@10.0.0.5:2222", "10.0.0.5", "pi", 2222)
    assert device.destination == "pi@10.0.0.5:2222"


# --------------------------------------------------------------------------- resolution into devices


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


def test_target_defaults_come_after_inventory_and_ssh_config():
    loader = lambda name: _fake_target(user="tuser", port=2022, remote_dir="models-here", keep_versions=5)  # noqa: E731
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
        return _fake_target()

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
            target_loader=lambda n: _fake_target(transport="local"),
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


def test_a_misspelt_edgeq_variable_in_an_inventory_names_the_closest(tmp_path):
    path = _write(tmp_path / "inv.yml", "all:\n  hosts:\n    h:\n      edgeq_pyhton: python3\n")
    with pytest.raises(EdgeqError, match="host 'h' of .*inv.yml: unknown variable 'edgeq_pyhton'") as info:
        resolve_devices(load_inventory(path).select())
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
    path = _write(tmp_path / "inventory.yml", "all:\n  children:\n    lab:\n      hosts:\n        lab-pi:\n")
    (found,) = resolve_devices(load_inventory(path, "lab").select(), ssh_config=config)
    assert (found.address, found.port, found.user, found.key_file) == (
        device.host,
        device.port,
        device.user,
        str(device.key_path),
    )
    with open_connection(found, options(device)) as conn:
        assert conn.run("whoami").stdout.strip() == device.user


def test_inventory_results_serialise(loaded):
    """Entries carry plain values only (they are what the cache holds, JSON)."""
    for found in loaded.values():
        json.dumps({name: dict(entry.vars) for name, entry in found.hosts.items()})
