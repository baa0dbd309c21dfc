"""Fleets: Ansible-style YAML inventories, ``--limit``, ``--host user@address[:port]``, ``~/.ssh/config``.

An inventory is read the way Ansible reads its YAML inventories, so an
existing one can be reused as it is::

    all:
      vars:
        ansible_user: pi
        edgeq_target: rpi4b
      children:
        kitchen:
          hosts:
            pi-[01:03]:                 # ranges expand to pi-01, pi-02, pi-03
        lab:
          vars: {edgeq_remote_dir: /opt/models}
          hosts:
            bench-pi:
              ansible_host: 10.0.0.7
              ansible_port: 2222
              ansible_ssh_private_key_file: ~/.ssh/lab_ed25519

Variables are merged like Ansible's: ``all`` first, then the groups a host is
in, parents before children (by depth, then by name), then the host's own.
edgeq reads ``ansible_host``, ``ansible_user``, ``ansible_port``,
``ansible_ssh_private_key_file``, ``ansible_connection`` (``ssh`` or
``local``), ``ansible_python_interpreter`` and its own ``edgeq_target``,
``edgeq_python``, ``edgeq_remote_dir``, ``edgeq_keep_versions``; other
``ansible_*`` variables are ignored, a misspelt ``edgeq_*`` one is an error.

A device's settings come from, first match wins: the inventory / ``--host``,
then ``~/.ssh/config`` for the host name (HostName, User, Port, IdentityFile),
then the target's ``[deploy]`` table, then the defaults (local user, port 22,
``remote_dir = "edgeq"``).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import EdgeqError

if TYPE_CHECKING:
    from .targets import Target

__all__ = [
    "EDGEQ_VARS",
    "Device",
    "HostEntry",
    "HostSpec",
    "Inventory",
    "host_entries_from_specs",
    "load_inventory",
    "parse_host_spec",
    "resolve_devices",
]

EDGEQ_VARS = ("edgeq_target", "edgeq_python", "edgeq_remote_dir", "edgeq_keep_versions")
_CONNECTIONS = {"ssh": "ssh", "paramiko": "ssh", "smart": "ssh", "local": "local"}
_GROUP_KEYS = ("hosts", "vars", "children")

_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*\$?$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9._-]*[A-Za-z0-9_])?$")
_IPV6_RE = re.compile(r"^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?$")
_RANGE_RE = re.compile(r"\[([0-9]+|[a-z]+):([0-9]+|[a-z]+)(?::([0-9]+))?\]")


@dataclasses.dataclass(frozen=True)
class Device:
    """One device to work on, fully resolved: how to reach it and where edgeq keeps its files there."""

    name: str  # the inventory host name, or the --host text
    address: str  # what is connected to (after ~/.ssh/config's HostName)
    user: str
    port: int = 22
    key_files: tuple[str, ...] = ()
    target: str | None = None
    python: str = "python3"
    remote_dir: str = "edgeq"  # relative: under the login user's home directory
    transport: str = "ssh"  # "ssh" | "local"
    keep_versions: int | None = None  # None: the deployer's default
    groups: tuple[str, ...] = ()

    @property
    def key_file(self) -> str | None:
        return self.key_files[0] if self.key_files else None

    @property
    def destination(self) -> str:
        """``user@address:port``, or ``local``."""
        if self.transport == "local":
            return "local"
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.user}@{host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class HostSpec:
    """``--host user@address[:port]`` taken apart."""

    text: str
    address: str
    user: str | None = None
    port: int | None = None


@dataclasses.dataclass(frozen=True)
class HostEntry:
    """A host of an inventory (or of ``--host``) with its merged variables, before resolution."""

    name: str
    vars: Mapping[str, Any]
    groups: tuple[str, ...] = ()
    source: str = "--host"


def parse_host_spec(text: str) -> HostSpec:
    """Parse ``[user@]address[:port]``; IPv6 addresses go in brackets when a port follows (``[::1]:2222``)."""
    raw = text.strip()
    if not raw:
        raise EdgeqError("empty --host", hint="write user@address[:port], e.g. pi@10.0.0.5 or pi@kitchen-pi:2222")
    user = None
    if "@" in raw:
        user, _, raw = raw.rpartition("@")
        if not _USER_RE.match(user):
            raise EdgeqError(f"--host {text!r}: {user!r} is not a valid user name")
    port: int | None = None
    if raw.startswith("["):
        address, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise EdgeqError(f"--host {text!r}: expected [ipv6-address]:port")
        port_text = rest[1:] if rest else None
    elif raw.count(":") == 1:
        address, _, port_text = raw.partition(":")
    else:
        address, port_text = raw, None
    if port_text is not None:
        port = _port(port_text, f"--host {text!r}")
    if not (_HOSTNAME_RE.match(address) or (":" in address and _IPV6_RE.match(address))):
        raise EdgeqError(
            f"--host {text!r}: {address!r} is not a host name or an IP address",
            hint="write user@address[:port], e.g. pi@10.0.0.5:22",
        )
    return HostSpec(text=text.strip(), address=address, user=user, port=port)


def host_entries_from_specs(specs: Iterable[HostSpec]) -> tuple[HostEntry, ...]:
    """``--host`` values as inventory-like entries, so both resolve the same way."""
    entries = []
    for spec in specs:
        values: dict[str, Any] = {"ansible_host": spec.address}
        if spec.user:
            values["ansible_user"] = spec.user
        if spec.port is not None:
            values["ansible_port"] = spec.port
        entries.append(HostEntry(name=spec.text, vars=values))
    return tuple(entries)


# --------------------------------------------------------------------------- the inventory


@dataclasses.dataclass
class _Group:
    name: str
    vars: dict[str, Any] = dataclasses.field(default_factory=dict)
    hosts: list[str] = dataclasses.field(default_factory=list)
    children: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Inventory:
    """An Ansible YAML inventory: hosts (in file order) with merged variables, and every group's hosts."""

    path: str
    hosts: Mapping[str, HostEntry]
    groups: Mapping[str, tuple[str, ...]]

    def select(self, limit: str | None = None) -> tuple[HostEntry, ...]:
        """The hosts ``--limit`` picks: comma-separated host or group names, ``*`` wildcards, ``!name`` to leave out, ``&name`` to intersect."""
        if not limit or not limit.strip():
            return tuple(self.hosts.values())
        chosen: set[str] = set()
        excluded: set[str] = set()
        intersect: list[set[str]] = []
        for raw in limit.split(","):
            pattern = raw.strip()
            if not pattern:
                continue
            kind = ""
            if pattern[0] in "!&":
                kind, pattern = pattern[0], pattern[1:].strip()
            names = self._match(pattern)
            if kind == "!":
                excluded |= names
            elif kind == "&":
                intersect.append(names)
            else:
                chosen |= names
        if not chosen and (excluded or intersect):
            chosen = set(self.hosts)
        for names in intersect:
            chosen &= names
        chosen -= excluded
        picked = tuple(entry for name, entry in self.hosts.items() if name in chosen)
        if not picked:
            raise EdgeqError(f"--limit {limit!r} selects no host of {self.path}")
        return picked

    def _match(self, pattern: str) -> set[str]:
        if any(ch in pattern for ch in "*?["):
            names = {h for h in self.hosts if fnmatch.fnmatchcase(h, pattern)}
            for group, members in self.groups.items():
                if fnmatch.fnmatchcase(group, pattern):
                    names |= set(members)
            if not names:
                raise EdgeqError(f"--limit pattern {pattern!r} matches no host or group of {self.path}")
            return names
        if pattern in self.groups:
            return set(self.groups[pattern])
        if pattern in self.hosts:
            return {pattern}
        known = list(self.groups) + list(self.hosts)
        close = difflib.get_close_matches(pattern, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"groups: {', '.join(sorted(self.groups))}"
        raise EdgeqError(f"--limit: no host or group named {pattern!r} in {self.path}", hint=hint)


def load_inventory(path: str | os.PathLike) -> Inventory:
    """Read an Ansible YAML inventory (``all:`` / ``hosts:`` / ``children:`` / ``vars:``); EdgeqError if it is not one."""
    import yaml

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EdgeqError(f"inventory {path}: no such file") from None
    except OSError as exc:
        raise EdgeqError(f"inventory {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise EdgeqError(f"inventory {path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        raise EdgeqError(f"inventory {path} is empty")
    if not isinstance(data, dict):
        raise EdgeqError(
            f"inventory {path}: expected Ansible's YAML layout (a mapping of groups, starting with 'all:')",
            hint="INI inventories are not read; convert with: ansible-inventory -i FILE --list --yaml > inventory.yml",
        )
    return _Parser(path).parse(data)


class _Parser:
    def __init__(self, path: Path):
        self.path = path
        self.groups: dict[str, _Group] = {}
        self.host_vars: dict[str, dict[str, Any]] = {}  # in order of first appearance

    def fail(self, message: str, hint: str | None = None) -> EdgeqError:
        return EdgeqError(f"inventory {self.path}: {message}", hint=hint)

    def parse(self, data: dict) -> Inventory:
        self.group("all", data.get("all"), "all")
        for name, body in data.items():
            if name == "all":
                continue
            self.group(str(name), body, str(name))
            if str(name) not in self.groups["all"].children:
                self.groups["all"].children.append(str(name))
        if not self.host_vars:
            raise self.fail("no hosts")
        depth = self.depths()
        members = {name: tuple(h for h in self.host_vars if h in self.members(name, set())) for name in self.groups}
        hosts: dict[str, HostEntry] = {}
        for host, own in self.host_vars.items():
            in_groups = sorted((g for g in self.groups if host in members[g]), key=lambda g: (depth[g], g))
            merged: dict[str, Any] = {}
            for group in in_groups:
                merged.update(self.groups[group].vars)
            merged.update(own)
            hosts[host] = HostEntry(
                name=host, vars=merged, groups=tuple(g for g in in_groups if g != "all"), source=str(self.path)
            )
        return Inventory(path=str(self.path), hosts=hosts, groups=members)

    def group(self, name: str, body: Any, where: str) -> None:
        group = self.groups.setdefault(name, _Group(name))
        if body is None:
            return
        if not isinstance(body, dict):
            raise self.fail(f"group {where!r} must be a mapping with hosts:, vars: or children:")
        for key in body:
            if key not in _GROUP_KEYS:
                close = difflib.get_close_matches(str(key), _GROUP_KEYS, n=1)
                raise self.fail(
                    f"unknown key {key!r} in group {where!r}",
                    hint=f"did you mean {close[0]!r}?" if close else "a group holds hosts:, vars: and children:",
                )
        group_vars = body.get("vars")
        if group_vars is not None:
            if not isinstance(group_vars, dict):
                raise self.fail(f"vars of group {where!r} must be a mapping")
            group.vars.update({str(k): v for k, v in group_vars.items()})
        hosts = body.get("hosts")
        if hosts is not None:
            if not isinstance(hosts, dict):
                raise self.fail(
                    f"hosts of group {where!r} must be a mapping of host names (write 'name:' on its own line, not '- name')"
                )
            for pattern, values in hosts.items():
                if values is not None and not isinstance(values, dict):
                    raise self.fail(f"host {pattern!r} in group {where!r}: its variables must be a mapping")
                for host in _expand_host_pattern(str(pattern)):
                    self.host_vars.setdefault(host, {}).update({str(k): v for k, v in (values or {}).items()})
                    if host not in group.hosts:
                        group.hosts.append(host)
        children = body.get("children")
        if children is not None:
            if not isinstance(children, dict):
                raise self.fail(f"children of group {where!r} must be a mapping of group names")
            for child, child_body in children.items():
                child = str(child)
                if child == "all":
                    raise self.fail(f"group {where!r} cannot have 'all' as a child")
                if child not in group.children:
                    group.children.append(child)
                self.group(child, child_body, f"{where}.{child}")

    def depths(self) -> dict[str, int]:
        depth: dict[str, int] = {}

        def visit(name: str, level: int, path: tuple[str, ...]) -> None:
            if name in path:
                raise self.fail(f"groups form a cycle: {' -> '.join(path + (name,))}")
            if depth.get(name, -1) >= level:
                return
            depth[name] = level
            for child in self.groups[name].children:
                visit(child, level + 1, path + (name,))

        visit("all", 0, ())
        for name in self.groups:
            depth.setdefault(name, 1)
        return depth

    def members(self, name: str, seen: set[str]) -> set[str]:
        if name in seen:
            return set()
        seen.add(name)
        group = self.groups[name]
        found = set(group.hosts)
        if name == "all":
            return set(self.host_vars)
        for child in group.children:
            found |= self.members(child, seen)
        return found


def _expand_host_pattern(pattern: str) -> list[str]:
    """Ansible's host ranges: ``pi-[01:16]``, ``node[a:c]``, ``x[0:10:2]``; zero padding is kept."""
    match = _RANGE_RE.search(pattern)
    if not match:
        return [pattern]
    start, end, step_text = match.groups()
    step = int(step_text) if step_text else 1
    head, tail = pattern[: match.start()], pattern[match.end() :]
    if start.isdigit() != end.isdigit() or step < 1:
        raise EdgeqError(f"inventory host range {pattern!r} is not valid")
    if start.isdigit():
        width = len(start) if start.startswith("0") and len(start) > 1 else 0
        values = [str(n).zfill(width) for n in range(int(start), int(end) + 1, step)]
    else:
        if len(start) != 1 or len(end) != 1:
            raise EdgeqError(f"inventory host range {pattern!r}: letter ranges take single letters")
        values = [chr(c) for c in range(ord(start), ord(end) + 1, step)]
    if not values:
        raise EdgeqError(f"inventory host range {pattern!r} is empty")
    return [name for value in values for name in _expand_host_pattern(head + value + tail)]


# --------------------------------------------------------------------------- resolution into devices


TargetLoader = Callable[[str], "Target"]  # name -> its target (only .name, .deploy and .python are read)


def resolve_devices(
    entries: Iterable[HostEntry],
    *,
    target: str | None = None,
    ssh_config: str | os.PathLike | None = None,
    target_loader: TargetLoader | None = None,
    local_user: str | None = None,
) -> tuple[Device, ...]:
    """Turn inventory / ``--host`` entries into devices: inventory values, then SSH config, then the target's defaults.

    ``target`` (``--target``) overrides every host's ``edgeq_target``. Raises
    EdgeqError (or TargetFileError) for anything wrong, before any connection.
    """
    from .connection import read_ssh_config

    loaded: dict[str, Target] = {}

    def load(name: str) -> Target:
        if name not in loaded:
            if target_loader is not None:
                loaded[name] = target_loader(name)
            else:
                from .targets import load_target

                loaded[name] = load_target(name)
        return loaded[name]

    devices: list[Device] = []
    for entry in entries:
        values = entry.vars
        where = f"host {entry.name!r}" + (f" of {entry.source}" if entry.source != "--host" else "")
        for key in values:
            if key.startswith("edgeq_") and key not in EDGEQ_VARS:
                close = difflib.get_close_matches(key, EDGEQ_VARS, n=1)
                raise EdgeqError(
                    f"{where}: unknown variable {key!r}",
                    hint=f"did you mean {close[0]!r}?" if close else f"edgeq reads {', '.join(EDGEQ_VARS)}",
                )
        target_name = target or _text(values, "edgeq_target", where)
        spec = load(target_name) if target_name else None
        deploy = spec.deploy if spec is not None else None

        connection = _text(values, "ansible_connection", where) or ""
        if connection and connection not in _CONNECTIONS:
            raise EdgeqError(
                f"{where}: ansible_connection {connection!r} is not supported",
                hint="edgeq connects with ssh, or local for this machine",
            )
        transport = _CONNECTIONS.get(connection) or (deploy.transport if deploy is not None else "ssh")
        if transport == "local" and entry.source == "--host" and not connection:
            raise EdgeqError(
                f"target {target_name!r} is this machine (its deploy.transport is local); it takes no --host",
                hint=f"run with --target {target_name} alone",
            )

        alias = _text(values, "ansible_host", where) or _text(values, "ansible_ssh_host", where) or entry.name
        config = read_ssh_config(alias, ssh_config) if transport == "ssh" else None
        if config is not None and config.proxy:
            # connecting straight to HostName would bypass the jump host the user relies on: refuse instead
            raise EdgeqError(
                f"{where}: ~/.ssh/config reaches {alias!r} through a proxy ({config.proxy}), which edgeq does not support",
                hint="give an address edgeq can reach directly (ansible_host / --host), or a Host entry without ProxyJump/ProxyCommand",
            )
        address = config.hostname if config else "localhost"
        user = (
            _text(values, "ansible_user", where)
            or _text(values, "ansible_ssh_user", where)
            or (config.user if config else None)
            or (deploy.user if deploy is not None else None)
            or local_user
            or _default_user()
        )
        port_value = values.get("ansible_port", values.get("ansible_ssh_port"))
        if port_value is not None:
            port = _port(port_value, where)
        elif config and config.port:
            port = config.port
        else:
            port = deploy.port if deploy is not None else 22
        key_file = _text(values, "ansible_ssh_private_key_file", where) or _text(
            values, "ansible_private_key_file", where
        )
        if key_file:
            key_files: tuple[str, ...] = (os.path.abspath(os.path.expanduser(key_file)),)
        else:
            key_files = tuple(p for p in (config.identity_files if config else ()) if os.path.isfile(p))
        python = (
            _text(values, "edgeq_python", where)
            or _text(values, "ansible_python_interpreter", where)
            or (spec.python if spec is not None else None)
            or "python3"
        )
        remote_dir = _remote_dir(
            _text(values, "edgeq_remote_dir", where) or (deploy.remote_dir if deploy is not None else None) or "edgeq",
            where,
        )
        keep_value = values.get("edgeq_keep_versions")
        keep = (
            _positive_int(keep_value, f"{where}: edgeq_keep_versions")
            if keep_value is not None
            else (deploy.keep_versions if deploy is not None else None)
        )
        devices.append(
            Device(
                name=entry.name,
                address=address,
                user=user,
                port=port,
                key_files=key_files,
                target=spec.name if spec is not None else target_name,
                python=python,
                remote_dir=remote_dir,
                transport=transport,
                keep_versions=keep,
                groups=entry.groups,
            )
        )
    _refuse_duplicates(devices)
    return tuple(devices)


def _refuse_duplicates(devices: list[Device]) -> None:
    seen: dict[tuple, str] = {}
    for device in devices:
        key = (device.transport, device.address.lower(), device.port, device.user, device.remote_dir)
        if key in seen:
            raise EdgeqError(
                f"hosts {seen[key]!r} and {device.name!r} are the same device ({device.destination}, {device.remote_dir})",
                hint="a device must be listed once: two deploys to it at the same time would race",
            )
        seen[key] = device.name


def _text(values: Mapping[str, Any], key: str, where: str) -> str | None:
    value = values.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise EdgeqError(f"{where}: {key} must be a string, got {type(value).__name__}")
    text = str(value).strip()
    if "{{" in text or "{%" in text:
        raise EdgeqError(
            f"{where}: {key} is a template ({text!r}); edgeq does not evaluate Jinja",
            hint="give the value itself in the inventory",
        )
    if "\n" in text or "\0" in text:
        raise EdgeqError(f"{where}: {key} contains a line break")
    return text or None


def _port(value: Any, where: str) -> int:
    try:
        port = int(str(value).strip())
    except ValueError:
        raise EdgeqError(f"{where}: port {value!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise EdgeqError(f"{where}: port {port} is out of range (1-65535)")
    return port


def _positive_int(value: Any, what: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise EdgeqError(f"{what} must be a whole number, got {value!r}") from None
    if number < 1:
        raise EdgeqError(f"{what} must be at least 1, got {number}")
    return number


def _remote_dir(value: str, where: str) -> str:
    text = value.strip()
    if text == "~" or text.startswith("~/"):
        text = text[2:] or "."
    text = text.rstrip("/") or "/"
    if text in ("", "/", "."):
        raise EdgeqError(
            f"{where}: remote_dir {value!r} would put models at the top of a file system or home directory",
            hint="use a folder of its own, e.g. edgeq",
        )
    if text.startswith("~"):
        raise EdgeqError(
            f"{where}: remote_dir {value!r}: '~user' paths are not supported",
            hint="use a path relative to the login user's home, or an absolute one",
        )
    return text


def _default_user() -> str:
    from .connection import local_user  # already imported by resolve_devices, the one caller

    return local_user()
