"""Inventories: Ansible-style YAML inventories and ``--limit`` (devices are resolved by :mod:`edgeq.devices`).

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
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .devices import EDGEQ_VARS, HostEntry
from .errors import EdgeqError

__all__ = ["EDGEQ_VARS", "Inventory", "load_inventory"]

_GROUP_KEYS = ("hosts", "vars", "children")
_RANGE_RE = re.compile(r"\[([0-9]+|[a-z]+):([0-9]+|[a-z]+)(?::([0-9]+))?\]")


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
