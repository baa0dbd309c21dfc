"""Devices: what every device command works on, resolved from ``--host`` or an inventory's hosts.

A device's settings come from, first match wins: the inventory / ``--host``,
then ``~/.ssh/config`` for the host name (HostName, User, Port, IdentityFile),
then the target's ``[deploy]`` table, then the defaults (local user, port 22,
``remote_dir = "edgeq"``). Inventories themselves are read by
:mod:`edgeq.inventory`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import EdgeqError

if TYPE_CHECKING:
    from .targets import Target

__all__ = [
    "EDGEQ_VARS",
    "Device",
    "HostEntry",
    "HostSpec",
    "TargetLoader",
    "host_entries_from_specs",
    "parse_host_spec",
    "resolve_devices",
]

EDGEQ_VARS = ("edgeq_target", "edgeq_python", "edgeq_remote_dir", "edgeq_keep_versions")
_CONNECTIONS = {"ssh": "ssh", "paramiko": "ssh", "smart": "ssh", "local": "local"}

_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*\$?$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9._-]*[A-Za-z0-9_])?$")
_IPV6_RE = re.compile(r"^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?$")


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
