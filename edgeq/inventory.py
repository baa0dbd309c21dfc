"""Inventories: fleets as Ansible resolves them, read with Ansible's own programs (``ansible-inventory``, ``ansible``).

edgeq does not parse inventories. ``load_inventory(path, limit)`` runs, in the
user's environment and working directory (so ``ansible.cfg``, ``ANSIBLE_*``,
vault settings and inventory plugins apply), at the same time:

* ``ansible-inventory -i PATH --list``: hosts, groups and variables as Ansible
  merged them (YAML, INI, directories, ``group_vars/``, ``host_vars/``, ranges,
  ``host:port``, group priorities, plugins, scripts);
* ``ansible all -i PATH --list-hosts [--limit PATTERN]``: the hosts the limit
  selects, in Ansible's order, exactly as ``ansible --limit`` (``:``/``,``
  unions, ``&``, ``!``, ``[0]``/``[1:2]`` subscripts, ``~regex``). Ansible's
  order of groups nested two levels below ``all`` varies from run to run (a
  set); edgeq takes the order Ansible gives;
* ``ansible-config dump --only-changed -t connection``, only when an
  ``ansible.cfg`` or a connection ``ANSIBLE_*`` variable is in effect: its
  ``remote_user``, ``remote_port``, ``private_key_file`` apply below inventory
  variables, as in Ansible;

and, only when a variable edgeq reads holds Jinja (``{{``, ``{%``, ``{#``) or a
vault-encrypted value, ``ansible localhost -m ansible.builtin.debug``: Ansible
renders it through ``hostvars``, on this machine, without contacting any host.

Each host is a :class:`~edgeq.devices.HostEntry` whose ``vars`` hold what edgeq
reads, as Ansible's connection plugin would use it: of the spellings in
:data:`CONNECTION_VARS` (``ansible_host``/``ansible_ssh_host``, ``_user``,
``_port``, ``_private_key_file``, and ``ansible_paramiko_*`` for paramiko) the
LAST one set wins, kept under the names in :data:`CANONICAL_VARS` (the key
file ``~``-expanded, as the ssh plugin gives it to ssh); also
``ansible_connection`` (its short name), ``ansible_python_interpreter`` (not
``auto*``) and every ``edgeq_*`` variable (``resolve_devices`` refuses a
misspelt one). Refused, naming the host and the feature: a private key given
inline, a paramiko proxy command, and ssh options that change where or as whom
ssh connects (``ProxyJump``, ``ProxyCommand``, ``-J``, ``HostName``, ``Port``,
``User``, ``-p``, ``-l``, ``-F``) in ``ansible_ssh_*args`` or ``ansible.cfg``.
Stricter than Ansible's warnings: a source Ansible cannot parse, a part of a
YAML file it skips, and a ``--limit`` part that matches nothing (unless
``ANSIBLE_HOST_PATTERN_MISMATCH`` is set) are errors. Ansible's other warnings
go to the debug log (``edgeq --debug``).

Resolutions are cached in ``${XDG_CACHE_HOME:-~/.cache}/edgeq/inventory/``
(0600 files, 0700 folder; unused a month, removed), keyed by the size, mtime
and mode of every file Ansible reads for the inventory (the file or directory
tree, the ``group_vars/`` and ``host_vars/`` beside it), the limit, the Ansible
programs and their version, the ``ansible.cfg`` files and ``ANSIBLE_*``
variables in effect, the working and home directories. Never cached, as they
may change by themselves or hold secrets: inventories with inventory plugins
(a ``plugin:`` key), scripts (executable files) or vault-encrypted content.
Jinja is cached as written and rendered at every load (a template may read
files, the environment, commands).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .devices import EDGEQ_VARS, HostEntry
from .errors import EdgeqError
from .files import atomic_write_bytes

__all__ = [
    "CANONICAL_VARS",
    "CONFIG_ENV_VARS",
    "CONNECTION_VARS",
    "EDGEQ_VARS",
    "AnsibleTools",
    "Inventory",
    "find_ansible",
    "load_inventory",
]

log = logging.getLogger(__name__)

# The variables Ansible's connection plugins read for each option, in Ansible's order: when several are set, the
# LAST one wins (ansible.config.manager.ConfigManager._loop_entries). ``ansible-doc -t connection ssh --json``
# lists them; tests/test_inventory.py compares these lists with it.
CONNECTION_VARS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "ssh": {
        "host": ("ansible_host", "ansible_ssh_host"),
        "remote_user": ("ansible_user", "ansible_ssh_user"),
        "port": ("ansible_port", "ansible_ssh_port"),
        "private_key_file": ("ansible_private_key_file", "ansible_ssh_private_key_file"),
    },
    "paramiko_ssh": {
        "remote_addr": ("ansible_host", "ansible_ssh_host", "ansible_paramiko_host"),
        "remote_user": ("ansible_user", "ansible_ssh_user", "ansible_paramiko_user"),
        "port": ("ansible_port", "ansible_ssh_port", "ansible_paramiko_port"),
        "private_key_file": (
            "ansible_private_key_file",
            "ansible_ssh_private_key_file",
            "ansible_paramiko_private_key_file",
        ),
    },
}
# connection option -> the one name edgeq's HostEntry.vars carry it under
CANONICAL_VARS: Mapping[str, str] = {
    "host": "ansible_host",
    "remote_addr": "ansible_host",
    "remote_user": "ansible_user",
    "port": "ansible_port",
    "private_key_file": "ansible_ssh_private_key_file",
}
# options of the connection plugins that edgeq cannot apply: checked, then dropped
_SSH_ARGS_VARS = {
    "ssh_args": "ansible_ssh_args",
    "ssh_common_args": "ansible_ssh_common_args",
    "ssh_extra_args": "ansible_ssh_extra_args",
}
_INLINE_KEY_VARS = ("ansible_private_key", "ansible_ssh_private_key")
_PROXY_COMMAND_VAR = "ansible_paramiko_proxy_command"
# the environment variables of the options read from ansible-config (tests compare them with ansible-doc's)
CONFIG_ENV_VARS = frozenset(
    {
        "ANSIBLE_REMOTE_USER",
        "ANSIBLE_REMOTE_PORT",
        "ANSIBLE_PRIVATE_KEY_FILE",
        "ANSIBLE_PRIVATE_KEY",
        "ANSIBLE_SSH_ARGS",
        "ANSIBLE_SSH_COMMON_ARGS",
        "ANSIBLE_SSH_EXTRA_ARGS",
        "ANSIBLE_PARAMIKO_REMOTE_USER",
        "ANSIBLE_REMOTE_PARAMIKO_PORT",
        "ANSIBLE_PARAMIKO_PRIVATE_KEY_FILE",
        "ANSIBLE_PARAMIKO_PROXY_COMMAND",
    }
)
_CONFIG_OPTIONS = ("remote_user", "port", "private_key_file", "private_key", *_SSH_ARGS_VARS, "proxy_command")

_RELEVANT = frozenset(
    {name for options in CONNECTION_VARS.values() for names in options.values() for name in names}
    | {"ansible_connection", "ansible_python_interpreter", _PROXY_COMMAND_VAR}
    | set(_SSH_ARGS_VARS.values())
    | set(_INLINE_KEY_VARS)
)
_CONNECTION_NAMES = {
    f"{prefix}{name}": short
    for prefix in ("", "ansible.builtin.", "ansible.legacy.")
    for name, short in (("ssh", "ssh"), ("smart", "smart"), ("local", "local"), ("paramiko_ssh", "paramiko"))
} | {"paramiko": "paramiko"}
_AUTO_INTERPRETERS = frozenset({"auto", "auto_silent", "auto_legacy", "auto_legacy_silent"})
_DESTINATION_OPTIONS = {
    "proxyjump": "ProxyJump",
    "proxycommand": "ProxyCommand",
    "hostname": "HostName",
    "port": "Port",
    "user": "User",
}
_DESTINATION_FLAGS = {"-J": "ProxyJump", "-p": "Port", "-l": "User", "-F": "a config file"}

# what Ansible's programs need to run for edgeq: output edgeq can read, no prompt for passwords edgeq does not use,
# and an inventory source Ansible cannot parse is an error rather than a warning with fewer hosts
_ENV_OVERRIDES = {
    "ANSIBLE_NOCOLOR": "1",
    "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
    "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
    "ANSIBLE_ASK_PASS": "False",
    "ANSIBLE_BECOME_ASK_PASS": "False",
    "ANSIBLE_LOAD_CALLBACK_PLUGINS": "False",  # `ansible` prints with its minimal callback
    "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
}
_ENV_DEFAULTS = {"ANSIBLE_HOST_PATTERN_MISMATCH": "error"}  # a --limit part that matches nothing is an error

# Renders every (variable, hosts) of the request through hostvars, as Ansible templates a host's variables.
_RENDER_TEMPLATE = (
    "{ {% for var, hosts in __edgeq_render.items() %}{{ var | to_json }}: "
    '{{ dict(hosts | zip(hosts | map("extract", hostvars, var))) | to_json }}'
    '{{ "" if loop.last else ", " }}{% endfor %} }'
)
_CACHE_FORMAT = 1
_CACHE_MAX_AGE_S = 30 * 86400


# --------------------------------------------------------------------------- the result


@dataclasses.dataclass(frozen=True)
class Inventory:
    """The hosts an inventory and a limit select, in Ansible's order, as edgeq reads them.

    ``hosts``: name -> entry for the selected hosts (all of them without a limit); ``groups``: every group of the
    inventory (``all`` and ``ungrouped`` included) -> its selected hosts, children's included, in that order.
    """

    path: str
    hosts: Mapping[str, HostEntry]
    groups: Mapping[str, tuple[str, ...]]
    limit: str | None = None

    def select(self, limit: str | None = None) -> tuple[HostEntry, ...]:
        """The selected hosts; with another ``limit``, the hosts that limit selects from the whole inventory."""
        limit = _clean_limit(limit)
        if limit is None or limit == self.limit:
            return tuple(self.hosts.values())
        return load_inventory(self.path, limit).select()


@dataclasses.dataclass(frozen=True)
class AnsibleTools:
    """The Ansible programs edgeq runs, all from one installation."""

    inventory: str  # ansible-inventory
    adhoc: str  # ansible
    config: str  # ansible-config


def find_ansible() -> AnsibleTools:
    """Ansible's programs: the user's own ``ansible-inventory`` on PATH first, else the one installed beside edgeq."""
    found = shutil.which("ansible-inventory")
    if found is None:
        beside = Path(sys.executable).parent / "ansible-inventory"
        if beside.is_file() and os.access(beside, os.X_OK):
            found = str(beside)
    if found is None:
        raise EdgeqError(
            f"ansible-inventory was found neither on PATH nor beside {sys.executable}: edgeq reads inventories with Ansible's own programs",
            hint="install ansible-core (pip install ansible-core)",
        )
    folder = Path(found).parent

    def sibling(name: str) -> str:
        path = folder / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        other = shutil.which(name)
        if other is None:
            raise EdgeqError(f"{name} was not found beside {found} nor on PATH", hint="reinstall ansible-core")
        return other

    return AnsibleTools(inventory=found, adhoc=sibling("ansible"), config=sibling("ansible-config"))


def load_inventory(path: str | os.PathLike, limit: str | None = None) -> Inventory:
    """Resolve an inventory (file or directory) and ``--limit`` with Ansible; EdgeqError for anything wrong.

    No host is contacted. Cached as the module docstring says.
    """
    source = Path(os.path.expanduser(os.fspath(path)))
    if not source.exists():
        raise EdgeqError(f"inventory {source}: no such file or directory")
    if "," in str(source.absolute()):
        raise EdgeqError(
            f"inventory {source}: Ansible reads a path with ',' as a list of hosts", hint="rename the file or folder"
        )
    limit = _clean_limit(limit)
    tools = find_ansible()
    started = time.monotonic()
    reader = _Reader(source, limit, tools)
    inventory = reader.read()
    log.debug(
        "inventory %s (limit %s): %d hosts in %.2f s", source, limit, len(inventory.hosts), time.monotonic() - started
    )
    return inventory


def _clean_limit(limit: str | None) -> str | None:
    return limit.strip() if limit is not None and limit.strip() else None


# --------------------------------------------------------------------------- reading


class _Reader:
    def __init__(self, source: Path, limit: str | None, tools: AnsibleTools):
        self.source = source
        self.where = str(source)
        self.argument = str(source.absolute())
        self.limit = limit
        self.tools = tools
        self.env = _ansible_env()
        self.files = _Files.of(source)
        self.config_files = _config_files()
        self.needs_config = bool(self.config_files) or any(name in os.environ for name in CONFIG_ENV_VARS)
        base = [
            _CACHE_FORMAT,
            os.path.realpath(source),
            os.getcwd(),
            str(Path.home()),
            self.files.stamp(),
            [_tool_stamp(p) for p in (tools.inventory, tools.adhoc, tools.config)],
            [[str(p), _stat(p)] for p in self.config_files],
            sorted((k, v) for k, v in os.environ.items() if k.startswith("ANSIBLE_")),
        ]
        self.list_key = _digest(["list", *base])
        self.hosts_key = _digest(["hosts", limit, _limit_files(limit), *base])
        self.cache = _Cache()

    def read(self) -> Inventory:
        ident = os.path.realpath(self.source)
        listing = self.cache.get("list", ident, self.list_key)
        order = self.cache.get("hosts", f"{ident}\0{self.limit}", self.hosts_key)
        if listing is None or order is None:
            cacheable = self.files.cacheable()
            if not cacheable:
                log.debug("inventory %s is not cached: inventory plugin, script or vault", self.source)
            with tempfile.TemporaryDirectory(prefix="edgeq-inventory-") as tmp:
                runs = self.run(listing is None, order is None, Path(tmp))
                if listing is None:
                    listing = self.listing(runs, Path(tmp))
                    vault = listing.pop("vault")  # vault-encrypted values in a variable edgeq reads
                    cacheable = cacheable and not vault
                    if cacheable:
                        self.cache.put("list", ident, self.list_key, listing)
            if order is None:
                order = self.selection(runs["hosts"], listing)
                if cacheable:
                    self.cache.put("hosts", f"{ident}\0{self.limit}", self.hosts_key, order)
        return self.build(listing, order)

    def run(self, listing: bool, hosts: bool, folder: Path) -> dict[str, _Run]:
        """ansible-inventory --list (with ansible-config when a configuration is in effect), ansible --list-hosts: at once."""
        commands: dict[str, list[str]] = {}
        if listing:
            output = folder / "inventory.json"
            commands["list"] = [self.tools.inventory, f"--inventory={self.argument}", "--list", f"--output={output}"]
            if self.needs_config:
                commands["config"] = [
                    self.tools.config,
                    "dump",
                    "--only-changed",
                    "-t",
                    "connection",
                    "--format",
                    "json",
                ]
        if hosts:
            commands["hosts"] = [self.tools.adhoc, "all", f"--inventory={self.argument}", "--list-hosts"]
            if self.limit is not None:
                commands["hosts"].append(f"--limit={self.limit}")
        return _run_all(commands, self.env, folder)

    def listing(self, runs: Mapping[str, _Run], folder: Path) -> dict[str, Any]:
        run, output = runs["list"], folder / "inventory.json"
        if run.returncode != 0 or not output.is_file():
            raise EdgeqError(f"inventory {self.where}: {_parse_failure(run.text, self.argument)}")
        skipped = _SKIPPED_RE.search(run.stderr)
        if skipped:  # Ansible goes on without that part of the inventory (hosts, variables): edgeq does not
            close = difflib.get_close_matches(skipped.group("key") or "", ("hosts", "vars", "children"), n=1)
            raise EdgeqError(
                f"inventory {self.where}: Ansible would skip part of it: {skipped.group('message')}",
                hint=f"did you mean {close[0]!r}?" if close else "a group holds hosts:, vars: and children:",
            )
        listing = _listing(json.loads(output.read_text(encoding="utf-8")))
        listing["config"] = self.config_defaults(runs.get("config"))
        return listing

    def config_defaults(self, run: _Run | None) -> dict[str, dict[str, Any]]:
        if run is None:
            return {}
        if run.returncode != 0:
            raise EdgeqError(f"ansible-config: {_ansible_message(run.text)}")
        try:
            dump = json.loads(run.stdout[run.stdout.index("[") :])
        except ValueError:
            raise EdgeqError(
                f"could not read the output of {self.tools.config} dump", hint="edgeq needs ansible-core 2.12 or later"
            ) from None
        defaults: dict[str, dict[str, Any]] = {}
        for item in dump:
            for plugin, options in item.items():
                if plugin in CONNECTION_VARS:
                    defaults[plugin] = {o["name"]: o["value"] for o in options if o.get("name") in _CONFIG_OPTIONS}
        return defaults

    def selection(self, run: _Run, listing: dict) -> list[str]:
        names = set(listing["hosts"])
        if run.returncode != 0:
            message = _ansible_message(run.text)
            if self.limit is None:
                raise EdgeqError(f"inventory {self.where}: {message}")
            unmatched = re.search(r"Could not match supplied host pattern, ignoring: (.+)$", message)
            if unmatched:
                pattern = unmatched.group(1).strip()
                groups = sorted(set(listing["groups"]) - {"all", "ungrouped"})
                close = difflib.get_close_matches(pattern.lstrip("!&"), groups + sorted(names), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"groups: {', '.join(groups) or 'none'}"
                subscript = re.search(rf"(?:^|[,:])[!&]?{re.escape(pattern)}(\[[^\]]*\])", self.limit)
                if subscript:  # fnmatch's [chars] is a subscript for Ansible
                    hint = (
                        f"Ansible reads {subscript.group(1)} after {pattern!r} as a subscript (which of its hosts); "
                        f"for a set of characters, use a regex: ~{pattern.lstrip('!&')}{subscript.group(1)}$"
                    )
                raise EdgeqError(
                    f"--limit {self.limit!r}: {pattern!r} matches no host or group of {self.where}", hint=hint
                )
            if "leaves us with no hosts" in message:
                raise EdgeqError(f"--limit {self.limit!r} selects no host of {self.where}")
            raise EdgeqError(f"--limit {self.limit!r}: {message}")
        order = _parse_list_hosts(run.stdout)
        if order is None:
            raise EdgeqError(
                f"could not read the output of {self.tools.adhoc} --list-hosts",
                hint="edgeq needs ansible-core 2.12 or later",
            )
        if not order:
            raise EdgeqError(
                f"inventory {self.where} has no hosts" + (f" (--limit {self.limit!r})" if self.limit else "")
            )
        missing = [name for name in order if name not in names]
        if missing:
            raise EdgeqError(
                f"inventory {self.where} changed while Ansible read it (host {missing[0]!r})",
                hint="run the command again",
            )
        return order

    def build(self, listing: dict, order: list[str]) -> Inventory:
        hostvars: dict[str, dict[str, Any]] = {name: dict(listing["hostvars"].get(name, {})) for name in order}
        self.render(hostvars)
        groups = listing["groups"]
        parents: dict[str, list[str]] = {}
        for group, body in groups.items():
            for child in body.get("children", ()):
                parents.setdefault(child, []).append(group)
        direct: dict[str, set[str]] = {}
        for group, body in groups.items():
            for host in body.get("hosts", ()):
                direct.setdefault(host, set()).add(group)
        entries: dict[str, HostEntry] = {}
        member_of: dict[str, set[str]] = {}
        for name in order:
            found = set(direct.get(name, ())) | {"all"}
            pending = list(found)
            while pending:
                for parent in parents.get(pending.pop(), ()):
                    if parent not in found:
                        found.add(parent)
                        pending.append(parent)
            member_of[name] = found
            where = f"host {name!r} of {self.where}"
            entries[name] = HostEntry(
                name=name,
                vars=_normalize(hostvars[name], listing.get("config", {}), where),
                groups=tuple(sorted(found - {"all"})),
                source=self.where,
            )
        members = {group: tuple(h for h in order if group in member_of[h]) for group in [*groups, "all"]}
        return Inventory(path=self.where, hosts=entries, groups=members, limit=self.limit)

    def render(self, hostvars: dict[str, dict[str, Any]]) -> None:
        """Replace Jinja and vault values by what Ansible makes of them (one ``ansible`` run, on this machine)."""
        request: dict[str, list[str]] = {}
        for host, values in hostvars.items():
            for var, value in values.items():
                if _needs_rendering(value):
                    request.setdefault(var, []).append(host)
        if not request:
            return
        with tempfile.TemporaryDirectory(prefix="edgeq-inventory-") as tmp:
            extra = Path(tmp) / "request.json"
            extra.write_text(json.dumps({"__edgeq_render": request}), encoding="utf-8")
            argv = [
                self.tools.adhoc,
                "localhost",
                f"--inventory={self.argument}",
                f"--extra-vars=@{extra}",
                "--module-name=ansible.builtin.debug",
                "--args=" + json.dumps({"msg": _RENDER_TEMPLATE}),
            ]
            run = _run_all({"render": argv}, self.env, Path(tmp))["render"]
        pairs = [(var, host) for var, hosts in request.items() for host in hosts]
        what = (
            f"{pairs[0][0]} of host {pairs[0][1]!r}"
            if len(pairs) == 1
            else f"the templates of {', '.join(sorted(request))}"
        )
        if run.returncode != 0:
            raise EdgeqError(
                f"inventory {self.where}: Ansible could not render {what}: {_ansible_message(run.text)}",
                hint="edgeq has Ansible render Jinja in the variables it reads, on this machine, without facts",
            )
        rendered = _render_result(run.stdout)
        if rendered is None:
            raise EdgeqError(f"inventory {self.where}: could not read how Ansible rendered {what}")
        for var, hosts in request.items():
            for host in hosts:
                hostvars[host][var] = rendered.get(var, {}).get(host)


def _listing(data: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``ansible-inventory --list`` edgeq keeps: relevant variables, groups, and whether vault was seen."""
    meta = data.get("_meta", {})
    groups = {
        name: {key: list(body.get(key, ())) for key in ("hosts", "children") if body.get(key)}
        for name, body in data.items()
        if name != "_meta" and isinstance(body, dict)
    }
    hosts = set(meta.get("hostvars", {}))
    for body in groups.values():
        hosts.update(body.get("hosts", ()))
    hostvars: dict[str, dict[str, Any]] = {}
    vault = False
    for host, values in meta.get("hostvars", {}).items():
        kept = {k: v for k, v in values.items() if k in _RELEVANT or k.startswith("edgeq_")}
        vault = vault or any(isinstance(v, dict) and "__ansible_vault" in v for v in kept.values())
        if kept:
            hostvars[host] = kept
    return {"hosts": sorted(hosts), "groups": groups, "hostvars": hostvars, "vault": vault}


# --------------------------------------------------------------------------- normalising a host's variables


def _needs_rendering(value: Any) -> bool:
    if isinstance(value, dict):
        return "__ansible_vault" in value
    return isinstance(value, str) and any(mark in value for mark in ("{{", "{%", "{#"))


def _plain(value: Any) -> Any:
    """A value of ``ansible-inventory --list`` as Ansible uses it (``!unsafe`` values are plain text, never rendered)."""
    if isinstance(value, dict) and set(value) == {"__ansible_unsafe"}:
        return value["__ansible_unsafe"]
    return value


def _normalize(raw: Mapping[str, Any], config: Mapping[str, Mapping[str, Any]], where: str) -> dict[str, Any]:
    """The variables edgeq reads, with the value Ansible's connection plugin would use under one name each."""
    values = {key: _plain(value) for key, value in raw.items()}
    result: dict[str, Any] = {key: value for key, value in values.items() if key.startswith("edgeq_")}
    connection = values.get("ansible_connection")
    if isinstance(connection, str):
        connection = _CONNECTION_NAMES.get(connection.strip(), connection.strip())
        result["ansible_connection"] = connection
    elif connection is not None:
        result["ansible_connection"] = connection
    plugin = "paramiko_ssh" if connection == "paramiko" else "ssh"
    defaults = config.get(plugin, {})
    for option, names in CONNECTION_VARS[plugin].items():
        value = None
        for name in names:  # the last one set wins, as in Ansible
            if values.get(name) is not None:
                value = values[name]
        if value is None:
            value = defaults.get(option)
        if value is not None:
            result[CANONICAL_VARS[option]] = value
    key_file = result.get("ansible_ssh_private_key_file")
    if isinstance(key_file, str):  # as the ssh plugin gives it to ssh: ~ expanded, a relative path left to the cwd
        result["ansible_ssh_private_key_file"] = os.path.expanduser(key_file)
    interpreter = values.get("ansible_python_interpreter")
    if interpreter is not None and not (isinstance(interpreter, str) and interpreter.strip() in _AUTO_INTERPRETERS):
        result["ansible_python_interpreter"] = interpreter
    if connection != "local":
        _refuse_what_edgeq_cannot_apply(values, config, plugin, where)
    return result


def _refuse_what_edgeq_cannot_apply(
    values: Mapping[str, Any], config: Mapping[str, Mapping[str, Any]], plugin: str, where: str
) -> None:
    for name in _INLINE_KEY_VARS:
        if values.get(name) is not None:
            raise EdgeqError(
                f"{where}: {name} gives the private key itself, which edgeq does not support",
                hint="give a key file with ansible_ssh_private_key_file, or load the key into ssh-agent",
            )
    if config.get(plugin, {}).get("private_key") is not None:
        raise EdgeqError(
            f"{where}: Ansible's configuration gives a private key itself (private_key), which edgeq does not support",
            hint="give a key file with ansible_ssh_private_key_file, or load the key into ssh-agent",
        )
    for option, name in _SSH_ARGS_VARS.items():
        value = values.get(name)
        origin = name
        if value is None:
            value, origin = config.get("ssh", {}).get(option), f"{option} in Ansible's configuration"
        found = _destination_option(value) if isinstance(value, str) else None
        if found:
            feature = "proxies" if found in ("ProxyJump", "ProxyCommand") else "ssh options that change the destination"
            raise EdgeqError(
                f"{where}: {origin} sets {found} ({value!r}); edgeq does not support {feature}",
                hint="edgeq connects straight to ansible_host / ansible_port as ansible_user: give those instead",
            )
    proxy = values.get(_PROXY_COMMAND_VAR)
    if plugin == "paramiko_ssh" and (proxy or config.get(plugin, {}).get("proxy_command")):
        raise EdgeqError(
            f"{where}: the paramiko connection goes through a proxy command, which edgeq does not support",
            hint="give an address edgeq can reach directly",
        )


def _destination_option(text: str) -> str | None:
    """The ssh option in ``text`` that would change where or as whom ssh connects, if any."""
    try:
        tokens = shlex.split(text)
    except ValueError:
        tokens = text.split()
    for i, token in enumerate(tokens):
        if token in _DESTINATION_FLAGS or (token[:2] in _DESTINATION_FLAGS and len(token) > 2):
            return _DESTINATION_FLAGS[token[:2]]
        if token == "-o" and i + 1 < len(tokens):
            option = tokens[i + 1]
        elif token.startswith("-o"):
            option = token[2:]
        else:
            continue
        key, _, value = re.sub(r"\s*=\s*|\s+", "=", option.strip(), count=1).partition("=")
        if key.lower() in _DESTINATION_OPTIONS and value.strip().lower() != "none":  # ProxyJump=none: no proxy
            return _DESTINATION_OPTIONS[key.lower()]
    return None


# --------------------------------------------------------------------------- running Ansible's programs


@dataclasses.dataclass(frozen=True)
class _Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return f"{self.stdout}\n{self.stderr}"


def _ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ANSIBLE_FORCE_COLOR", None)
    env.update(_ENV_OVERRIDES)
    for key, value in _ENV_DEFAULTS.items():
        env.setdefault(key, value)
    return env


def _run_all(commands: Mapping[str, list[str]], env: Mapping[str, str], folder: Path) -> dict[str, _Run]:
    """Run the commands at the same time, in the working directory, without a terminal (a prompt fails, it never waits)."""
    processes: dict[str, subprocess.Popen[bytes]] = {}
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        outputs = {}
        try:
            for name, argv in commands.items():
                out = stack.enter_context(open(folder / f"{name}.out", "w+b"))
                err = stack.enter_context(open(folder / f"{name}.err", "w+b"))
                outputs[name] = (out, err)
                log.debug("running %s", shlex.join(argv))
                try:
                    processes[name] = subprocess.Popen(
                        argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=dict(env), start_new_session=True
                    )
                except OSError as exc:
                    raise EdgeqError(f"could not run {argv[0]}: {exc.strerror or exc}") from exc
            for process in processes.values():
                process.wait()
        finally:
            for process in processes.values():
                if process.poll() is None:  # interrupted: stop it and what it started
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        runs = {}
        for name, (out, err) in outputs.items():
            out.seek(0)
            err.seek(0)
            runs[name] = _Run(
                processes[name].returncode,
                out.read().decode("utf-8", "replace"),
                err.read().decode("utf-8", "replace"),
            )
            if runs[name].stderr.strip():
                log.debug("%s said:\n%s", Path(commands[name][0]).name, runs[name].stderr.rstrip())
    log.debug("ran %s in %.2f s", ", ".join(commands), time.monotonic() - started)
    return runs


def _parse_list_hosts(stdout: str) -> list[str] | None:
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        match = re.fullmatch(r"\s*hosts \((\d+)\):", line)
        if match:
            names = lines[i + 1 : i + 1 + int(match.group(1))]
            if len(names) != int(match.group(1)) or not all(n.startswith("    ") for n in names):
                return None
            return [n[4:] for n in names]
    return None


def _render_result(stdout: str) -> dict[str, dict[str, Any]] | None:
    match = re.search(r"^\S+ \| SUCCESS => ", stdout, re.M)  # localhost, or the inventory host that is this machine
    if match is None:
        return None
    try:
        result, _ = json.JSONDecoder().raw_decode(stdout, match.end())
        message = result["msg"]
        rendered = json.loads(message) if isinstance(message, str) else message
    except (ValueError, KeyError, TypeError):
        return None
    return rendered if isinstance(rendered, dict) else None


_MESSAGE_RE = re.compile(r"^(?:\[ERROR\]: |ERROR! )(.*)$", re.M)


def _ansible_message(text: str) -> str:
    """Ansible's error on one line: its root cause (the last 'caused by'), with the file position when it has one."""
    match = _MESSAGE_RE.search(text)
    if match is None:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else "Ansible failed without a message"
    block = text[match.start(1) :]
    end = re.search(
        r"^(?:\[(?:WARNING|ERROR|DEPRECATION WARNING)\]|\S+ \| (?:FAILED!|UNREACHABLE!|SUCCESS) =>)", block, re.M
    )
    block = block[: end.start()] if end else block
    parts = block.split("<<< caused by >>>")
    lines = [line.strip() for line in parts[-1].strip().splitlines()]
    message = lines[0] if lines else match.group(1).strip()
    origin = next((line[len("Origin: ") :] for line in lines if line.startswith("Origin: ")), "")
    if origin and not origin.startswith("<"):
        message += f" ({origin})"
    return message


# the YAML inventory plugin's warnings for parts of a file it leaves out
_SKIPPED_RE = re.compile(
    r"^\[WARNING\]: (?P<message>Skipping (?:(?:unexpected )?key \((?P<key>[^)]*)\) in group \([^)]*\)|'[^']*' as).*)$",
    re.M,
)
_FAILED_PLUGIN_RE = re.compile(
    r"Failed to parse (?:inventory with '(?P<plugin>[\w.]+)' plugin|(?P<source>\S+) with (?P<plugin_old>[\w.]+) plugin)"
    r": (?P<message>.*)$",
    re.M,
)


def _parse_failure(text: str, source: str) -> str:
    """Why Ansible could not parse an inventory source, on one line: the message of the plugin meant for that file."""
    failed = re.search(r"(?:Completely failed to parse inventory source|Unable to parse) (\S+)", text)
    failures = []
    for match in _FAILED_PLUGIN_RE.finditer(text):
        rest = text[match.end() :]
        stop = re.search(r"^\[", rest, re.M)
        found = re.search(r"^Origin: (\S+:\d+(?::\d+)?)$", rest[: stop.start()] if stop else rest, re.M)
        plugin = match.group("plugin") or match.group("plugin_old")
        failures.append((plugin.rsplit(".", 1)[-1], match.group("message").strip(), found.group(1) if found else ""))
    if not failed or not failures:
        return _ansible_message(text)
    path = failed.group(1)
    suffix = Path(path).suffix.lower()
    preferred = {".yml": ["yaml", "auto"], ".yaml": ["yaml", "auto"], ".json": ["yaml", "auto"], ".toml": ["toml"]}.get(
        suffix, ["ini", "script"]
    )
    with contextlib.suppress(OSError):
        if _PLUGIN_KEY_RE.search(Path(path).read_bytes()[:65536]):
            preferred = ["auto"]
    rank = {plugin: i for i, plugin in enumerate(preferred)}
    plugin, message, position = min(failures, key=lambda f: rank.get(f[0], len(rank)))
    if not position:  # another plugin may have said where, for the same reason
        position = next((f[2] for f in failures if f[1] == message and f[2]), "")
    what = "it" if path == source else path
    where = f"{position}, " if position else ""
    return f"Ansible cannot parse {what}: {message} ({where}{plugin} plugin)"


# --------------------------------------------------------------------------- what Ansible reads, and the cache


_PLUGIN_KEY_RE = re.compile(rb"""(?m)^["']?plugin["']?\s*:|"plugin"\s*:""")
_VAULT_MARK = b"$ANSIBLE_VAULT"


@dataclasses.dataclass(frozen=True)
class _Files:
    """The files Ansible reads for an inventory: inventory sources and group_vars/host_vars."""

    sources: tuple[Path, ...]
    variables: tuple[Path, ...]

    @classmethod
    def of(cls, source: Path) -> _Files:
        if source.is_dir():
            found = list(_walk(source))
            is_vars = lambda p: bool({"group_vars", "host_vars"} & set(p.relative_to(source).parts[:-1]))  # noqa: E731
            return cls(tuple(p for p in found if not is_vars(p)), tuple(p for p in found if is_vars(p)))
        beside = [p for d in ("group_vars", "host_vars") for p in _walk(source.parent / d)]
        return cls((source,), tuple(beside))

    def stamp(self) -> list:
        return [[str(p), _stat(p)] for p in (*self.sources, *self.variables)]

    def cacheable(self) -> bool:
        """False for scripts, inventory plugins and vault-encrypted content (their results may change or hold secrets)."""
        try:
            for path in self.sources:
                if os.stat(path).st_mode & 0o111:
                    return False
                data = path.read_bytes()
                if _VAULT_MARK in data or _PLUGIN_KEY_RE.search(data):
                    return False
            return not any(_VAULT_MARK in path.read_bytes() for path in self.variables)
        except OSError:
            return False


def _walk(folder: Path) -> Iterator[Path]:
    """Files below ``folder`` (symbolic links followed once), hidden ones left out as Ansible leaves them out."""
    if not folder.is_dir():
        return
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def _stat(path: str | os.PathLike) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_mode]


def _tool_stamp(path: str) -> list:
    """An Ansible program and, when its interpreter's prefix shows it, the installed ansible-core version."""
    real = os.path.realpath(path)
    stamp: list = [real, _stat(real)]
    try:
        with open(real, "rb") as handle:
            first = handle.readline(512)
    except OSError:
        return stamp
    words = first[2:].split() if first.startswith(b"#!") else []
    if words:
        prefix = Path(os.fsdecode(words[0])).parent.parent
        for pattern in (
            "lib/python3*/*-packages/ansible_core-*.dist-info",
            "lib/python3*/*-packages/ansible/release.py",
        ):
            stamp += [[str(p), _stat(p)] for p in sorted(prefix.glob(pattern))]
    return stamp


def _config_files() -> list[Path]:
    """The ansible.cfg files that may be in effect (Ansible uses the first of them that exists)."""
    candidates = []
    configured = os.environ.get("ANSIBLE_CONFIG")
    if configured:
        path = Path(os.path.expanduser(configured))
        candidates.append(path / "ansible.cfg" if path.is_dir() else path)
    candidates += [Path.cwd() / "ansible.cfg", Path.home() / ".ansible.cfg", Path("/etc/ansible/ansible.cfg")]
    return [p for p in candidates if p.is_file()]


def _limit_files(limit: str | None) -> list:
    """``@file`` parts of a limit (Ansible reads host names from them)."""
    if not limit:
        return []
    return [[part, _stat(part[1:])] for part in re.split(r"[,:]", limit) if part.startswith("@")]


def _digest(parts: list) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class _Cache:
    """Resolutions under ``${XDG_CACHE_HOME:-~/.cache}/edgeq/inventory/``: one file per inventory (and limit), replaced when its key changes."""

    def __init__(self) -> None:
        base = os.environ.get("XDG_CACHE_HOME", "")
        self.folder = (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "edgeq" / "inventory"

    def path(self, kind: str, ident: str) -> Path:
        return self.folder / f"{kind}-{hashlib.sha256(ident.encode()).hexdigest()[:32]}.json"

    def get(self, kind: str, ident: str, key: str) -> Any:
        try:
            stored = json.loads(self.path(kind, ident).read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(stored, dict) or stored.get("format") != _CACHE_FORMAT or stored.get("key") != key:
            return None
        log.debug("inventory %s: from the cache", kind)
        with contextlib.suppress(OSError):
            os.utime(self.path(kind, ident))  # in use: not pruned
        return stored.get("data")

    def put(self, kind: str, ident: str, key: str, data: Any) -> None:
        path = self.path(kind, ident)
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self.folder.stat().st_mode & 0o077:
                self.folder.chmod(0o700)
            atomic_write_bytes(path, json.dumps({"format": _CACHE_FORMAT, "key": key, "data": data}).encode())
            path.chmod(0o600)
        except OSError as exc:  # a cache that cannot be written only costs time
            log.debug("inventory cache %s not written: %s", path, exc)
            return
        old = time.time() - _CACHE_MAX_AGE_S  # entries of inventories (and limits) not used for a month
        for entry in self.folder.glob("*.json"):
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < old:
                    entry.unlink()
