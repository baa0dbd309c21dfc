"""Devices: what every device command works on, resolved from ``--host`` or an inventory's hosts.

A device's settings come from, first match wins: the inventory / ``--host``
(and ``-k/--identity``), then the SSH config for the host as OpenSSH's own
client resolves it (``ssh -G``: HostName, User, Port, IdentityFile,
ProxyJump, known_hosts files; see :mod:`edgeq.connection.sshconfig`), then
the target's ``[deploy]`` table, then the defaults (ssh's user, port 22,
``remote_dir = "edgeq"``). Inventories themselves are read by
:mod:`edgeq.inventory`. An SSH config option that would make edgeq connect
otherwise than ssh (ProxyCommand, ProxyJump for now, HostKeyAlias,
BindAddress...) is refused, naming it.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import EdgeqError

if TYPE_CHECKING:
    from .connection.jump import JumpResolver, JumpSpec
    from .connection.sshconfig import SSHHostConfig
    from .targets import Target
    from .targets.model import Deploy as DeployDefaults

log = logging.getLogger(__name__)

__all__ = [
    "EDGEQ_VARS",
    "PROXY_JUMP_SUPPORTED",
    "Device",
    "HostEntry",
    "HostSpec",
    "TargetLoader",
    "host_entries_from_specs",
    "jump_resolver",
    "parse_host_spec",
    "resolve_devices",
]

EDGEQ_VARS = ("edgeq_target", "edgeq_python", "edgeq_remote_dir", "edgeq_keep_versions", "edgeq_prometheus_dir")
_CONNECTIONS = {"ssh": "ssh", "paramiko": "ssh", "smart": "ssh", "local": "local"}

_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*\$?$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9._-]*[A-Za-z0-9_])?$")
_IPV6_RE = re.compile(r"^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?$")


@dataclasses.dataclass(frozen=True)
class Device:
    """One device to work on, fully resolved: how to reach it and where edgeq keeps its files there.

    ``key_files`` are the identity files offered, in OpenSSH's order: the given
    ones (``ansible_ssh_private_key_file``, ``-k``), then the SSH config's (or
    ssh's defaults ``~/.ssh/id_*``) that exist.
    """

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
    proxy_jump: str | None = None  # OpenSSH's ProxyJump for the host (ssh -G), as it prints it
    # known_hosts files of the SSH config (ssh -G); () = edgeq's (~/.ssh/known_hosts, /etc/ssh/ssh_known_hosts)
    known_hosts_files: tuple[str, ...] = ()
    global_known_hosts_files: tuple[str, ...] = ()
    default_keys: bool = True  # also try ~/.ssh/id_*: False when key_files is ssh -G's whole list (defaults included)
    use_agent: bool = True  # False: the SSH config says IdentityAgent none
    prometheus_dir: str | None = None  # the node_exporter textfile folder on the device (edgeq check --on-device)

    @property
    def identity_files(self) -> tuple[str, ...]:
        """The key files offered, in order (OpenSSH's name for them)."""
        return self.key_files

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

PROXY_JUMP_SUPPORTED = True
"""Devices behind a ProxyJump are accepted (Device.proxy_jump): edgeq.connection follows jump hosts, each
hop resolved by :func:`jump_resolver`. A ProxyCommand is always refused."""


def jump_resolver(
    ssh_config: str | os.PathLike[str] | None = None, *, find_ssh: Callable[[], str | None] | None = None
) -> JumpResolver:
    """Resolves each hop of a ProxyJump as ssh does for ``ssh -W``: the hop's own ``ssh -G`` (HostName, User, Port,
    IdentityFile), with a user or port written in the ProxyJump value winning. A hop that itself needs a ProxyJump
    or a ProxyCommand is refused (write the whole chain in the device's ProxyJump instead)."""
    from .connection.jump import JumpHost, proxy_command_error
    from .connection.sshconfig import find_ssh_client, read_ssh_config

    def resolve(spec: JumpSpec) -> JumpHost:
        where = f"jump host {spec.host!r}"
        config = read_ssh_config(
            spec.host, ssh_config, user=spec.user, port=spec.port, find_ssh=find_ssh or find_ssh_client
        )
        if config.proxy_command:
            raise proxy_command_error(config.proxy_command, where=where)
        if config.proxy_jump:
            raise EdgeqError(
                f"{where}: its own ProxyJump ({config.proxy_jump}) is not followed",
                hint="write the whole chain in the device's ProxyJump (first hop first, comma-separated)",
            )
        keys = tuple(path for path in config.identity_files if os.path.isfile(path))
        return JumpHost(host=config.hostname, port=config.port or 22, user=config.user, key_files=keys)

    return resolve


@dataclasses.dataclass(frozen=True)
class _Plan:
    """An entry's own values, checked, before the SSH config is read for it."""

    entry: HostEntry
    where: str
    spec: Target | None
    target_name: str | None
    transport: str
    alias: str
    user: str | None  # given: ansible_user / --host user@
    port: int | None  # given: ansible_port / --host :port
    keys: tuple[str, ...]  # given: ansible_ssh_private_key_file, then -k/--identity
    python: str
    remote_dir: str
    keep: int | None
    prometheus_dir: str | None = None

    @property
    def deploy(self) -> DeployDefaults | None:
        return self.spec.deploy if self.spec is not None else None


def resolve_devices(
    entries: Iterable[HostEntry],
    *,
    target: str | None = None,
    ssh_config: str | os.PathLike | None = None,
    target_loader: TargetLoader | None = None,
    local_user: str | None = None,
    identity_files: Sequence[str | os.PathLike[str]] = (),
    known_hosts: str | os.PathLike | None = None,
    find_ssh: Callable[[], str | None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[Device, ...]:
    """Turn inventory / ``--host`` entries into devices: their own values, then the SSH config, then the target's.

    The SSH config is read by OpenSSH itself (``ssh -G``, see
    :mod:`edgeq.connection.sshconfig`), called as Ansible's ssh plugin calls
    ssh: the host is ``ansible_host`` (else the entry's name); ``-l`` only for
    a given user (``ansible_user``, ``--host user@``), ``-p`` only for a given
    port, ``-i`` for each given key (the host's ``ansible_ssh_private_key_file``,
    then ``identity_files``: ``-k/--identity``), ``-F`` for ``ssh_config``.
    Where no ssh client is installed (``find_ssh()`` is None), paramiko reads
    the config, and what it reads differently from OpenSSH is refused.

    A target's ``[deploy]`` user and port apply where neither the entry nor the
    SSH config gives one (the host is then resolved again with them, so that
    ``Match user`` and ``%r`` see them). ssh reports its own defaults (the
    passwd user name, port 22) as values: a config that sets exactly those is
    taken for one that sets nothing.

    ``known_hosts`` (``--known-hosts``): given, the devices keep edgeq's
    known_hosts files (the system's, ``~/.ssh/known_hosts``, this one); else
    each device records OpenSSH's (GlobalKnownHostsFile, UserKnownHostsFile).

    ``target`` (``--target``) overrides every host's ``edgeq_target``. Raises
    EdgeqError (or TargetFileError) for anything wrong, before any connection;
    options edgeq can honour only in part are passed to ``warn`` (default: the
    ``edgeq`` logger), one line each, naming the hosts.
    """
    from .connection.sshconfig import SSHQuery, find_ssh_client, resolve_ssh_config, ssh_default_user

    loaded: dict[str, Target] = {}

    def load(name: str) -> Target:
        if name not in loaded:
            if target_loader is not None:
                loaded[name] = target_loader(name)
            else:
                from .targets import load_target

                loaded[name] = load_target(name)
        return loaded[name]

    extra_keys = tuple(os.path.abspath(os.path.expanduser(os.fspath(p))) for p in identity_files)
    plans = [_plan(entry, target, load, extra_keys) for entry in entries]
    remote = [plan for plan in plans if plan.transport == "ssh"]

    def query(plan: _Plan, user: str | None, port: int | None) -> SSHQuery:
        # ssh -i takes files that exist (it warns about others and leaves them out); a missing given key stays
        # in the device's key files, and connecting says it is missing
        return SSHQuery(plan.alias, user, port, tuple(k for k in plan.keys if os.path.isfile(k)))

    def resolve(pairs: list[tuple[_Plan, SSHQuery]]) -> tuple[SSHHostConfig, ...]:
        queries = [q for _, q in pairs]

        def where(failed: SSHQuery) -> str:  # the first host whose query failed names it in the message
            return next(plan.where for plan, q in pairs if q == failed)

        return resolve_ssh_config(queries, ssh_config, find_ssh=find_ssh or find_ssh_client, where=where)

    configs = list(resolve([(plan, query(plan, plan.user, plan.port)) for plan in remote]))
    # the target's default user / port where ssh reports its own defaults: resolve again with them
    again: dict[int, tuple[_Plan, SSHQuery]] = {}
    default_user = ssh_default_user()
    for index, (plan, config) in enumerate(zip(remote, configs)):
        deploy = plan.deploy
        if deploy is None or config.resolver != "ssh -G":
            continue
        unset_user = plan.user is None and config.user == default_user and deploy.user not in (None, default_user)
        user = deploy.user if unset_user else plan.user
        port = deploy.port if plan.port is None and deploy.port != 22 and config.port == 22 else plan.port
        if (user, port) != (plan.user, plan.port):
            again[index] = (plan, query(plan, user, port))
    if again:
        for index, config in zip(again, resolve(list(again.values()))):
            configs[index] = config
    by_plan = {id(plan): config for plan, config in zip(remote, configs)}

    notes: dict[str, list[str]] = {}
    devices = [_device(plan, by_plan.get(id(plan)), local_user, known_hosts, notes) for plan in plans]
    _refuse_duplicates(devices)
    for message, names in notes.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        (warn or log.warning)(f"{shown}: {message}")
    return tuple(devices)


def _plan(entry: HostEntry, target: str | None, load: Callable[[str], Target], extra_keys: tuple[str, ...]) -> _Plan:
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
    user = _text(values, "ansible_user", where) or _text(values, "ansible_ssh_user", where)
    port_value = values.get("ansible_port", values.get("ansible_ssh_port"))
    key_file = _text(values, "ansible_ssh_private_key_file", where) or _text(values, "ansible_private_key_file", where)
    keys = ((os.path.abspath(os.path.expanduser(key_file)),) if key_file else ()) + extra_keys
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
    return _Plan(
        entry=entry,
        where=where,
        spec=spec,
        target_name=target_name,
        transport=transport,
        alias=alias,
        user=user,
        port=_port(port_value, where) if port_value is not None else None,
        keys=tuple(dict.fromkeys(keys)),
        python=python,
        remote_dir=remote_dir,
        keep=keep,
        prometheus_dir=_text(values, "edgeq_prometheus_dir", where) or (deploy.prometheus_dir if deploy else None),
    )


def _device(
    plan: _Plan,
    config: SSHHostConfig | None,
    local_user: str | None,
    known_hosts: str | os.PathLike | None,
    notes: dict[str, list[str]],
) -> Device:
    from .connection.sshconfig import check_options, existing_files

    deploy = plan.deploy
    values: dict[str, Any] = {}
    if config is None:  # this machine
        address, user, port = "localhost", plan.user, plan.port
    else:
        for issue in check_options(config, proxy_jump_supported=PROXY_JUMP_SUPPORTED):
            if issue.refused:
                raise EdgeqError(
                    f"{plan.where}: the SSH config sets {issue.message}",
                    hint=f"edgeq refuses rather than connect otherwise than ssh would: remove {issue.option} "
                    f"for {plan.alias!r} from the SSH config, or give an address edgeq can reach directly",
                )
            notes.setdefault(issue.message, []).append(plan.entry.name)
        address, user, port = config.hostname, config.user, config.port
        values["key_files"] = tuple(dict.fromkeys((*plan.keys, *existing_files(config.identity_files))))
        values["proxy_jump"] = config.proxy_jump
        values["default_keys"] = config.resolver != "ssh -G"  # ssh -G lists ~/.ssh/id_* itself
        values["use_agent"] = (config.get("identityagent") or "").lower() != "none"
        if known_hosts is None:
            values["known_hosts_files"] = _known_hosts(config.user_known_hosts_files, "UserKnownHostsFile", plan)
            values["global_known_hosts_files"] = _known_hosts(
                config.global_known_hosts_files, "GlobalKnownHostsFile", plan
            )
    return Device(
        name=plan.entry.name,
        address=address,
        user=user or (deploy.user if deploy is not None else None) or local_user or _default_user(),
        port=port or (deploy.port if deploy is not None else 22),
        target=plan.spec.name if plan.spec is not None else plan.target_name,
        python=plan.python,
        remote_dir=plan.remote_dir,
        transport=plan.transport,
        keep_versions=plan.keep,
        prometheus_dir=plan.prometheus_dir,
        groups=plan.entry.groups,
        **values,
    )


def _known_hosts(files: tuple[str, ...], option: str, plan: _Plan) -> tuple[str, ...]:
    """OpenSSH's known_hosts files for a host, as connecting uses them: the first one ("none": /dev/null)."""
    if not files:
        return ()
    if files[0].lower() == "none":
        return (os.devnull,)
    extra = [f for f in files[1:] if os.path.exists(f)]
    if extra:
        raise EdgeqError(
            f"{plan.where}: the SSH config's {option} lists {' '.join(files)}; edgeq reads only the first, "
            f"and {extra[0]} exists",
            hint=f"merge {extra[0]} into {files[0]}, or give --known-hosts FILE",
        )
    return files[:1]


def _refuse_duplicates(devices: list[Device]) -> None:
    seen: dict[tuple, str] = {}
    for device in devices:
        # through different jump hosts, one address can be two devices (two sites' 192.168.1.10)
        key = (device.transport, device.address.lower(), device.port, device.user, device.remote_dir, device.proxy_jump)
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
