"""Connections to devices: the ``Connection`` protocol, SSH (paramiko) and local implementations.

This is the only module that imports paramiko. Everything paramiko or the
socket layer raises is translated into an edgeq error by ONE function,
:func:`map_ssh_error`, applied at the boundary by :meth:`SSHConnection._boundary`.

Design, after fabric/paramiko and httpx:

* ``SSHConnection(host, ...)`` opens lazily on first use and closes as a
  context manager; one transport is reused for every command and transfer on
  that device.
* Every remote command runs under the wrapper script ``edgeq/remote/wrapper.sh``
  (kept on the device once per version, see :mod:`edgeq.remote`) that puts it
  in its own session / process group and kills that group when the command
  overruns its timeout, so a timed-out command ends on the device, not only on
  our side. The client also keeps its own deadline (timeout + a grace period)
  and closes the channel after it. A command has a short label ("deploy",
  "probe", ...) that its error messages name; it may need device files
  (scripts, the probe program): the wrapper checks for them and the
  connection uploads the missing ones and runs the command again.
* stdout and stderr are drained while a command runs and before its exit
  status is awaited (``recv_exit_status`` can block forever otherwise).
* Host keys are verified, OpenSSH-style, against the system and user
  known_hosts files and ``--known-hosts``: an unknown host is refused with its
  SHA256 fingerprint (or, with ``trust_new_hosts``, appended to known_hosts
  like OpenSSH's ``accept-new``); a changed or revoked key is always refused.
* Transfers stream the file over an exec channel into ``cat``, chosen by
  measurement (``scripts/bench_deploy.py``, 14 MB on loopback): about 40 ms
  against about 75 ms for paramiko's SFTP ``put`` (which opens the SFTP
  subsystem and waits for its acknowledgements), with AES-GCM preferred (about
  20% faster than paramiko's default aes128-ctr + HMAC, one C call per packet)
  and TCP_NODELAY on the socket: without it Nagle's algorithm adds ~40 ms to
  every exchange of small messages (opening a channel, its exit status), which
  made each command cost 45 ms instead of 3 ms.
* A password is only taken from ``EDGEQ_SSH_PASSWORD`` or an interactive
  prompt callback, and never logged nor placed in an exception message.

``LocalConnection`` runs the same wrapper with :mod:`subprocess` in a home
directory of its own (the ``host`` target, whose transport is ``local``), with
the same device files under its edgeq folder.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import importlib
import importlib.util
import logging
import math
import os
import posixpath
import secrets
import selectors
import shlex
import socket
import subprocess
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable


class _DeferredInvoke(types.ModuleType):
    """Stands in for ``invoke`` until something uses it; then the real module is imported.

    paramiko.config imports invoke at start-up only to run ``Match exec``
    lines of an ssh config; importing it costs ~45 ms (it pulls in asyncio,
    unittest.mock and a YAML parser), a tenth of a whole ``edgeq deploy`` on
    a LAN. importlib.util.LazyLoader cannot do this on Python 3.11 (the
    import statement reads ``__spec__`` and so loads the module).
    """

    _lock = threading.Lock()

    def __getattr__(self, name: str):
        with self._lock:
            if sys.modules.get("invoke") is self:
                del sys.modules["invoke"]
            real = importlib.import_module("invoke")
        return getattr(real, name)


def _defer_invoke() -> None:
    if "invoke" not in sys.modules and "paramiko.config" not in sys.modules and importlib.util.find_spec("invoke"):
        sys.modules["invoke"] = _DeferredInvoke("invoke")


_defer_invoke()

import paramiko  # noqa: E402 - after _defer_invoke

from . import remote  # noqa: E402
from .errors import (  # noqa: E402
    CommandTimeoutError,
    DeviceAuthError,
    DeviceUnreachableError,
    EdgeqError,
    HostKeyError,
    RemoteCommandError,
)

__all__ = [
    "PASSWORD_ENV",
    "TIMEOUT_MARKER",
    "CommandResult",
    "ConnectOptions",
    "Connection",
    "DeviceFilesMissing",
    "Endpoint",
    "LocalConnection",
    "ProgressCallback",
    "RemoteProcess",
    "SSHConnection",
    "SSHHostConfig",
    "fingerprint_sha256",
    "known_hosts_token",
    "map_ssh_error",
    "open_connection",
    "read_ssh_config",
]

# paramiko logs failed connections (with tracebacks) at ERROR level; with no
# handler configured Python would print them on stderr as a "last resort".
# A NullHandler keeps them out of the CLI unless logging is set up (--debug).
logging.getLogger("paramiko").addHandler(logging.NullHandler())
log = logging.getLogger(__name__)

PASSWORD_ENV = "EDGEQ_SSH_PASSWORD"
TIMEOUT_MARKER = remote.TIMEOUT_MARKER  # on stderr: the wrapper's watchdog stopped the command

ProgressCallback = Callable[[int, int], None]
"""``progress(bytes_done, bytes_total)``, called from the thread doing the transfer."""

_T = TypeVar("_T")

_GRACE_S = 5.0  # the client waits this long past a command's timeout for the watchdog to act
_CHUNK_BYTES = 256 * 1024
_POLL_S = 0.05

# Cipher order: AES-GCM first (one C call per packet instead of cipher + HMAC:
# uploads 20-35% faster than with paramiko's default aes128-ctr on loopback),
# then CTR. CBC and 3DES are left out, as OpenSSH's client does.
_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr")
_MACS = (
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-sha1",
)

_KNOWN_HOSTS_WRITE_LOCK = threading.Lock()
_PROMPT_LOCK = threading.Lock()


# --------------------------------------------------------------------------- results and options


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """What one remote command did."""

    command: str
    exit_status: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@dataclasses.dataclass(frozen=True)
class ConnectOptions:
    """How to connect: timeouts, host-key policy, authentication sources.

    ``known_hosts`` is ``--known-hosts``: read in addition to the system and
    user files, and the file new keys are written to with ``trust_new_hosts``
    (else the user file). ``user_known_hosts`` defaults to
    ``~/.ssh/known_hosts``, resolved when used. (``~/.ssh/config`` is applied
    before a connection is made: see :func:`read_ssh_config` and
    ``edgeq.inventory.resolve_devices``.)

    Timeouts: ``connect_timeout_s`` bounds each step of connecting (TCP, the
    SSH greeting, the handshake, authentication); ``command_timeout_s`` a
    remote command; ``transfer_timeout_s`` one upload.
    """

    connect_timeout_s: float = 10.0
    command_timeout_s: float = 60.0
    transfer_timeout_s: float = 600.0
    known_hosts: Path | None = None
    trust_new_hosts: bool = False
    system_known_hosts: Path | None = Path("/etc/ssh/ssh_known_hosts")
    user_known_hosts: Path | None = None
    allow_agent: bool = True
    look_for_keys: bool = True
    password_env: str = PASSWORD_ENV
    # password_prompt("user@host") -> password, or None to give up; called at most once per connection
    password_prompt: Callable[[str], str | None] | None = None
    # host_key_added(host, "ssh-ed25519 SHA256:...", path): so that trusting a new key is never silent
    host_key_added: Callable[[str, str, str], None] | None = None
    # OpenSSH's ServerAliveInterval / ServerAliveCountMax: after keepalive_s seconds without sending, ask the
    # server for an answer; after keepalive_count_max unanswered in a row the link is dead and is closed
    keepalive_s: int = 15
    keepalive_count_max: int = 3

    def known_hosts_files(self) -> tuple[Path, ...]:
        files = [self.system_known_hosts, self.user_known_hosts_path(), self.known_hosts]
        return tuple(dict.fromkeys(Path(f).expanduser() for f in files if f is not None))

    def user_known_hosts_path(self) -> Path:
        return Path(self.user_known_hosts or "~/.ssh/known_hosts").expanduser()

    def known_hosts_write_path(self) -> Path:
        return Path(self.known_hosts).expanduser() if self.known_hosts else self.user_known_hosts_path()


@dataclasses.dataclass(frozen=True)
class SSHHostConfig:
    """What ``~/.ssh/config`` says about one host name (only what edgeq uses)."""

    alias: str
    hostname: str
    user: str | None = None
    port: int | None = None
    identity_files: tuple[str, ...] = ()
    proxy: str | None = None  # ProxyJump / ProxyCommand, which edgeq does not follow (yet)


# --------------------------------------------------------------------------- protocols


@runtime_checkable
class RemoteProcess(Protocol):
    """A command started on a device: write to its stdin, read its stdout, wait for its end."""

    def write(self, data: bytes) -> None: ...

    def send_file(self, path: str | os.PathLike, progress: ProgressCallback | None = None) -> int: ...

    def close_stdin(self) -> None: ...

    def readline(self) -> str | None: ...

    def read_exact(self, size: int) -> bytes: ...

    def wait(self, check: bool = True) -> CommandResult: ...

    def close(self) -> None: ...


@runtime_checkable
class Connection(Protocol):
    """A device edgeq can run commands on and copy files to (SSH or this machine).

    ``label`` names a command in error messages (default: its first words);
    ``requires`` are device files it needs (:class:`edgeq.remote.DeviceFile`),
    uploaded first when the device lacks them. ``run`` and ``put`` take care
    of that themselves; a process from ``start`` raises
    :class:`DeviceFilesMissing` instead, unless ``await_output`` (for commands
    that speak first) lets ``start`` wait for the first output and do it.
    """

    label: str  # the device's name, for messages
    options: ConnectOptions  # timeouts and the rest
    edgeq_dir: str  # edgeq's folder on the device (relative: under the home); scripts are kept in it

    def run(
        self,
        command: str,
        timeout_s: float | None = None,
        *,
        stdin: bytes | None = None,
        check: bool = True,
        label: str | None = None,
        requires: Sequence[remote.DeviceFile] = (),
    ) -> CommandResult: ...

    def start(
        self,
        command: str,
        timeout_s: float | None = None,
        *,
        label: str | None = None,
        requires: Sequence[remote.DeviceFile] = (),
        await_output: bool = False,
    ) -> RemoteProcess: ...

    def put(self, local: str | os.PathLike, remote: str, progress: ProgressCallback | None = None) -> int: ...

    def close(self) -> None: ...

    def __enter__(self) -> Connection: ...

    def __exit__(self, *exc) -> None: ...


class Endpoint(Protocol):
    """What :func:`open_connection` needs of a device record (``edgeq.inventory.Device`` is one)."""

    name: str
    address: str
    port: int
    user: str
    key_files: tuple[str, ...]
    transport: str
    remote_dir: str


def open_connection(
    endpoint: Endpoint, options: ConnectOptions | None = None, *, local_home: str | os.PathLike | None = None
) -> Connection:
    """An unopened connection to ``endpoint``: SSH, or this machine when its transport is ``local``."""
    options = options or ConnectOptions()
    if endpoint.transport == "local":
        return LocalConnection(home=local_home, options=options, name=endpoint.name, edgeq_dir=endpoint.remote_dir)
    return SSHConnection(
        endpoint.address,
        port=endpoint.port,
        user=endpoint.user,
        key_files=endpoint.key_files,
        edgeq_dir=endpoint.remote_dir,
        options=options,
        name=endpoint.name,
    )


def _whole_seconds(timeout_s: float) -> int:
    return max(1, math.ceil(timeout_s))


# --------------------------------------------------------------------------- ssh config and host keys


def read_ssh_config(alias: str, path: str | os.PathLike | None = None) -> SSHHostConfig:
    """What the SSH config (default ``~/.ssh/config``) says about ``alias``: HostName, User, Port, IdentityFile."""
    config_path = Path(path or "~/.ssh/config").expanduser()
    if not config_path.is_file():
        return SSHHostConfig(alias=alias, hostname=alias)
    try:
        config = paramiko.SSHConfig.from_path(str(config_path))
        found = config.lookup(alias)
    except (OSError, paramiko.SSHException, ValueError, KeyError) as exc:
        raise EdgeqError(f"cannot read SSH config {config_path}: {exc}") from exc
    port = found.get("port")
    try:
        port_number = int(port) if port is not None else None
    except ValueError:
        raise EdgeqError(f"{config_path}: Port {port!r} for host {alias!r} is not a number") from None
    identity = tuple(os.path.expanduser(p) for p in found.get("identityfile", []) or [])
    proxy = found.get("proxyjump") or found.get("proxycommand")
    return SSHHostConfig(
        alias=alias,
        hostname=found.get("hostname", alias),
        user=found.get("user"),
        port=port_number,
        identity_files=identity,
        proxy=None if proxy in (None, "none") else str(proxy),
    )


def fingerprint_sha256(key: paramiko.PKey) -> str:
    """OpenSSH's fingerprint of a public key: ``SHA256:`` and unpadded base64 of its blob's sha256."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def known_hosts_token(host: str, port: int) -> str:
    """How known_hosts names a server: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


@dataclasses.dataclass(frozen=True)
class _KnownKey:
    path: str
    lineno: int
    key_type: str
    blob: bytes
    revoked: bool

    @property
    def where(self) -> str:
        return f"{self.path}:{self.lineno}"

    @property
    def fingerprint(self) -> str:
        return "SHA256:" + base64.b64encode(hashlib.sha256(self.blob).digest()).decode("ascii").rstrip("=")


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("|1|"):
        try:
            return paramiko.HostKeys.hash_host(name, pattern) == pattern
        except Exception:  # a malformed hashed entry matches nothing, as in OpenSSH
            return False
    if "*" not in pattern and "?" not in pattern:
        return pattern.lower() == name.lower()
    import re

    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern.lower())
    return re.fullmatch(regex, name.lower()) is not None


def _host_field_matches(field: str, name: str) -> bool:
    matched = False
    for pattern in field.split(","):
        negated = pattern.startswith("!")
        if _pattern_matches(pattern[1:] if negated else pattern, name):
            if negated:
                return False
            matched = True
    return matched


def _known_keys(token: str, files: tuple[Path, ...]) -> list[_KnownKey]:
    """Every known_hosts entry for ``token`` in ``files`` (``@cert-authority`` lines are not used)."""
    found: list[_KnownKey] = []
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise HostKeyError(f"cannot read known hosts file {path}: {exc.strerror or exc}") from exc
        for lineno, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            revoked = False
            if line.startswith("@"):
                marker, _, line = line.partition(" ")
                if marker != "@revoked":
                    continue
                revoked = True
            fields = line.split()
            if len(fields) < 3 or not _host_field_matches(fields[0], token):
                continue
            try:
                blob = base64.b64decode(fields[2], validate=True)
            except ValueError:
                continue
            found.append(_KnownKey(str(path), lineno, fields[1], blob, revoked))
    return found


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, token: str, key: paramiko.PKey):
        super().__init__(f"unknown host key for {token}")
        self.token = token
        self.key = key


class _ChangedHostKey(paramiko.BadHostKeyException):
    def __init__(self, token: str, key: paramiko.PKey, known: _KnownKey):
        # paramiko's BadHostKeyException wants a PKey for the expected key; we keep ours aside
        super().__init__(token, key, key)
        self.token = token
        self.known = known


class _KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """OpenSSH's host-key check: known -> accept; other key known for the host -> refuse; unknown -> refuse or accept-new.

    paramiko's own host-key dictionaries are left empty, so paramiko hands
    every server key to this policy: all known_hosts entries are considered
    (paramiko would compare against only the first one per key type), hashed
    names and ``@revoked`` markers included.
    """

    def __init__(self, options: ConnectOptions, known: list[_KnownKey]):
        self.options = options
        self.known = known

    def missing_host_key(self, client, hostname, key):
        blob = key.asbytes()
        for entry in self.known:
            if entry.revoked and entry.blob == blob:
                raise _ChangedHostKey(hostname, key, entry)
        if any(entry.blob == blob and not entry.revoked for entry in self.known):
            return
        valid = [entry for entry in self.known if not entry.revoked]
        if valid:
            raise _ChangedHostKey(hostname, key, valid[0])
        if not self.options.trust_new_hosts:
            raise _UnknownHostKey(hostname, key)
        path = self.options.known_hosts_write_path()
        _append_known_host(path, hostname, key)
        shown = f"{key.get_name()} {fingerprint_sha256(key)}"
        log.info("added host key for %s (%s) to %s", hostname, shown, path)
        if self.options.host_key_added:
            self.options.host_key_added(hostname, shown, str(path))


def _append_known_host(path: Path, token: str, key: paramiko.PKey) -> None:
    """Append one known_hosts line, as OpenSSH's accept-new does (never rewriting existing lines)."""
    line = f"{token} {key.get_name()} {key.get_base64()}\n"
    with _KNOWN_HOSTS_WRITE_LOCK:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "r+b") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)  # other edgeq processes appending at the same time
                handle.seek(0, os.SEEK_END)
                if handle.tell() > 0:
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":
                        line = "\n" + line
                handle.write(line.encode("ascii"))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise HostKeyError(f"cannot add the host key of {token} to {path}: {exc.strerror or exc}") from exc


def _preferred_key_types(known: list[_KnownKey], offered: tuple[str, ...]) -> tuple[str, ...]:
    """Host-key algorithms with those already known for the host first, so the server shows a key we can check."""
    first: list[str] = []
    for entry in known:
        if entry.revoked:
            continue
        names = ("rsa-sha2-512", "rsa-sha2-256") if entry.key_type == "ssh-rsa" else (entry.key_type,)
        first.extend(n for n in names if n in offered and n not in first)
    return tuple(first) + tuple(n for n in offered if n not in first)


# --------------------------------------------------------------------------- the one exception mapping


def map_ssh_error(exc: BaseException, *, device: str, action: str, timeout_s: float | None = None) -> EdgeqError:
    """Translate what paramiko / the socket layer raised into the edgeq error a user can act on.

    The one place where paramiko's exception tree meets edgeq's. Order
    matters: ``NoValidConnectionsError`` and ``socket.timeout`` are
    ``OSError``s; ``BadHostKeyException`` and ``AuthenticationException`` are
    ``SSHException``s. Messages never contain secrets: paramiko's own
    authentication messages do not, and no password is ever formatted here.
    """
    if isinstance(exc, EdgeqError):
        return exc
    if isinstance(exc, _UnknownHostKey):
        key = exc.key
        host, port = _split_token(exc.token)
        keyscan = f"ssh-keyscan -p {port} {host}" if port != 22 else f"ssh-keyscan {host}"
        return HostKeyError(
            f"{device}: unknown host key {key.get_name()} {fingerprint_sha256(key)} for {exc.token}; refusing to connect",
            hint=(
                "check the fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then re-run with "
                f"--trust-new-hosts to add it to known_hosts, or add it yourself: {keyscan} >> ~/.ssh/known_hosts"
            ),
        )
    if isinstance(exc, paramiko.BadHostKeyException):
        token = getattr(exc, "token", exc.hostname)
        got = exc.key
        known = getattr(exc, "known", None)
        if known is not None and known.revoked:
            return HostKeyError(
                f"{device}: the host key of {token} ({got.get_name()} {fingerprint_sha256(got)}) is REVOKED in {known.where}; refusing to connect"
            )
        was = (
            f"{known.key_type} {known.fingerprint} ({known.where})"
            if known is not None
            else f"{exc.expected_key.get_name()} {fingerprint_sha256(exc.expected_key)}"
        )
        return HostKeyError(
            f"{device}: HOST KEY CHANGED for {token}: it offered {got.get_name()} {fingerprint_sha256(got)}, known_hosts has {was}. "
            "This may be a man-in-the-middle attack, or the device was reinstalled; refusing to connect",
            hint=f"if the device was reinstalled, remove the old key (ssh-keygen -R '{token}' -f {known.path if known else '~/.ssh/known_hosts'}) and check the new fingerprint; edgeq never replaces a known key",
        )
    if isinstance(exc, paramiko.PasswordRequiredException):
        return DeviceAuthError(
            f"{device}: the private key is encrypted and edgeq does not ask for key passphrases",
            hint="load the key into ssh-agent (ssh-add KEY) and run again",
        )
    if isinstance(exc, paramiko.BadAuthenticationType):
        allowed = ", ".join(exc.allowed_types) or "none"
        return DeviceAuthError(
            f"{device}: authentication failed while {action} (the server accepts: {allowed})",
            hint=f"use a key the device accepts (--host user, ansible_ssh_private_key_file, IdentityFile or ssh-agent), or set {PASSWORD_ENV}",
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return DeviceAuthError(
            f"{device}: authentication failed while {action}",
            hint=f"check the user name and that a key the device accepts is offered (ansible_ssh_private_key_file, IdentityFile in ~/.ssh/config, ssh-agent), or set {PASSWORD_ENV}",
        )
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return DeviceUnreachableError(
            f"{device}: connection refused while {action}",
            hint="is the device up, and is sshd listening on that address and port?",
        )
    if isinstance(exc, socket.gaierror):
        return DeviceUnreachableError(
            f"{device}: cannot resolve the address ({exc.strerror or exc})",
            hint="check ansible_host / HostName / --host",
        )
    if isinstance(exc, (socket.timeout, TimeoutError)):
        within = f" within {timeout_s:g} s" if timeout_s else ""
        return DeviceUnreachableError(
            f"{device}: no answer{within} while {action}",
            hint="is the device up and reachable? Raise the timeouts (--connect-timeout, --transfer-timeout) for slow links",
        )
    if isinstance(exc, ConnectionRefusedError):
        return DeviceUnreachableError(
            f"{device}: connection refused while {action}",
            hint="is the device up, and is sshd listening on that address and port?",
        )
    if isinstance(exc, paramiko.ChannelException):
        return RemoteCommandError(f"{device}: the server refused a session while {action}: {exc}")
    if isinstance(exc, paramiko.SSHException) and _is_auth_failure(exc):
        return DeviceAuthError(
            f"{device}: no key, agent key or password to offer while {action}",
            hint=f"give a key (ansible_ssh_private_key_file, IdentityFile in ~/.ssh/config), load one into ssh-agent, or set {PASSWORD_ENV}",
        )
    if isinstance(exc, paramiko.SSHException):
        text = str(exc)
        if "no existing session" in text.lower():
            within = f" within {timeout_s:g} s" if timeout_s else ""
            return DeviceUnreachableError(
                f"{device}: the SSH handshake did not complete{within}",
                hint="is the device overloaded, or the link very slow? Raise --connect-timeout",
            )
        if "banner" in text.lower():
            within = f" within {timeout_s:g} s" if timeout_s else ""
            return DeviceUnreachableError(
                f"{device}: accepted the TCP connection but sent no SSH greeting{within}",
                hint="is an SSH server (and not something else) listening on that port? Is the device overloaded?",
            )
        return DeviceUnreachableError(f"{device}: SSH error while {action}: {text or type(exc).__name__}")
    if isinstance(exc, (EOFError, OSError)):
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return DeviceUnreachableError(f"{device}: connection lost while {action} ({reason})")
    return DeviceUnreachableError(f"{device}: {type(exc).__name__} while {action}: {exc}")


_TRANSPORT_ERRORS = (paramiko.SSHException, OSError, EOFError)


def _is_auth_failure(exc: BaseException) -> bool:
    return isinstance(exc, paramiko.AuthenticationException) or "no authentication methods" in str(exc).lower()


def _split_token(token: str) -> tuple[str, int]:
    if token.startswith("[") and "]:" in token:
        host, _, port = token[1:].partition("]:")
        return host, int(port)
    return token, 22


# --------------------------------------------------------------------------- processes


class DeviceFilesMissing(RemoteCommandError):
    """A command did not run: device files it needs (``paths``) are missing. The connection uploads them and retries."""

    def __init__(self, device: str, name: str, paths: Sequence[str]):
        super().__init__(f"{device}: `{name}` did not run: edgeq's files {', '.join(paths)} are missing on the device")
        self.paths = tuple(paths)


class _Process:
    """Shared buffering for a started command: stdout/stderr drained together, one deadline."""

    def __init__(self, label: str, command: str, timeout_s: float, name: str | None = None):
        self.label = label  # the device's
        self.command = command
        self.name = name or _short(command)  # the command's, for messages
        self.timeout_s = timeout_s
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s + _GRACE_S
        self._out = bytearray()
        self._err = bytearray()
        self._eof = False
        self._stdin_closed = False
        self._closed = False  # aborted by us: only what is already buffered can still be read

    # primitives the subclasses provide
    def _pump(self, wait_s: float) -> None:
        """Move what has arrived into the buffers, waiting up to ``wait_s`` for something."""
        raise NotImplementedError

    def _send(self, data: memoryview) -> int:
        raise NotImplementedError

    def _shutdown_write(self) -> None:
        raise NotImplementedError

    def _exit_status(self, wait_s: float) -> int | None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError

    def _errors(self, action: str):
        return contextlib.nullcontext()

    # the API
    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _timed_out(self) -> CommandTimeoutError:
        self._abort()
        return CommandTimeoutError(
            f"{self.label}: `{self.name}` did not finish within {self.timeout_s:g} s; it was stopped",
            hint="raise --command-timeout / --transfer-timeout if the device is just slow",
        )

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            with self._errors("sending data"):
                while view:
                    if self._remaining() <= 0:
                        raise self._timed_out()
                    sent = self._send(view[:_CHUNK_BYTES])
                    view = view[sent:]
                    self._pump(0)  # keep stdout/stderr flowing while we send
        except EdgeqError:
            self._raise_if_missing()  # the wrapper refused to run the command: it never read its input
            raise

    def _raise_if_missing(self) -> None:
        """Raise DeviceFilesMissing if the command ended saying that device files are missing."""
        try:
            with self._errors("reading output"):
                until = min(time.monotonic() + 2.0, self.deadline)
                while not self._eof and time.monotonic() < until:
                    self._pump(_POLL_S)
                status = self._exit_status(0.5) if self._eof else None
        except EdgeqError:
            return
        paths = remote.missing_paths(status, bytes(self._err).decode("utf-8", "replace")) if status is not None else []
        if paths:
            raise DeviceFilesMissing(self.label, self.name, paths)

    def await_output(self) -> None:
        """Wait for the first output (left to be read); DeviceFilesMissing if the command did not run for want of files."""
        with self._errors("reading output"):
            while not self._out and not self._eof:
                if self._remaining() <= 0:
                    raise self._timed_out()
                self._pump(min(_POLL_S * 4, max(self._remaining(), 0)))
        if not self._out:
            self._raise_if_missing()

    def send_file(self, path: str | os.PathLike, progress: ProgressCallback | None = None) -> int:
        total = os.path.getsize(path)
        done = 0
        with open(path, "rb") as handle:
            while True:
                chunk = handle.read(_CHUNK_BYTES)
                if not chunk:
                    break
                self.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        return done

    def close_stdin(self) -> None:
        if not self._stdin_closed:
            self._stdin_closed = True
            with self._errors("closing the upload"):
                self._shutdown_write()

    def readline(self) -> str | None:
        """The next line of stdout without its newline; None at end of output."""
        with self._errors("reading output"):
            while b"\n" not in self._out and not self._eof:
                if self._remaining() <= 0:
                    raise self._timed_out()
                self._pump(min(_POLL_S * 4, max(self._remaining(), 0)))
        # the buffers are changed in place: the local implementation's selector holds references to them
        end = self._out.find(b"\n")
        if end >= 0:
            line = bytes(self._out[:end])
            del self._out[: end + 1]
            return line.decode("utf-8", errors="replace")
        if self._out:
            line = bytes(self._out)
            self._out.clear()
            return line.decode("utf-8", errors="replace")
        return None

    def read_exact(self, size: int) -> bytes:
        with self._errors("reading output"):
            while len(self._out) < size and not self._eof:
                if self._remaining() <= 0:
                    raise self._timed_out()
                self._pump(min(_POLL_S * 4, max(self._remaining(), 0)))
        if len(self._out) < size:
            raise RemoteCommandError(
                f"{self.label}: `{self.name}` ended before sending its output; {self._stderr_tail()}"
            )
        data = bytes(self._out[:size])
        del self._out[:size]
        return data

    def wait(self, check: bool = True) -> CommandResult:
        """Drain stdout and stderr to their end, then take the exit status (in that order: see the module doc)."""
        self.close_stdin()
        with self._errors("waiting for a command"):
            while not self._eof:
                if self._remaining() <= 0:
                    raise self._timed_out()
                self._pump(min(_POLL_S * 4, max(self._remaining(), 0)))
            status = None
            while status is None:
                if self._remaining() <= 0:
                    raise self._timed_out()
                status = self._exit_status(min(_POLL_S, max(self._remaining(), 0)))
                self._pump(0)
        result = CommandResult(
            command=self.command,
            exit_status=status,
            stdout=bytes(self._out).decode("utf-8", errors="replace"),
            stderr=bytes(self._err).decode("utf-8", errors="replace"),
            duration_s=time.monotonic() - self.started,
        )
        self._out.clear()
        paths = remote.missing_paths(status, result.stderr)
        if paths:
            raise DeviceFilesMissing(self.label, self.name, paths)
        if TIMEOUT_MARKER in result.stderr:
            raise CommandTimeoutError(
                f"{self.label}: `{self.name}` did not finish within {self.timeout_s:g} s; it was stopped on the device",
                hint="raise --command-timeout / --transfer-timeout if the device is just slow",
            )
        if check and not result.ok:
            raise RemoteCommandError(
                f"{self.label}: `{self.name}` failed with exit status {status}{_tail(result.stderr)}"
            )
        return result

    def _stderr_tail(self) -> str:
        text = bytes(self._err).decode("utf-8", errors="replace").strip()
        return text[-300:] if text else "no error output"

    def close(self) -> None:
        self._abort()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _short(command: str, width: int = 60) -> str:
    first = command.strip().splitlines()[0] if command.strip() else command
    return first if len(first) <= width and "\n" not in command.strip() else first[: width - 3] + "..."


def _tail(stderr: str) -> str:
    text = stderr.strip()
    if not text:
        return ""
    return ": " + (text if len(text) <= 400 else "..." + text[-400:])


class _SSHProcess(_Process):
    def __init__(
        self, connection: SSHConnection, channel: paramiko.Channel, command: str, timeout_s: float, name: str | None
    ):
        super().__init__(connection.label, command, timeout_s, name)
        self._connection = connection
        self._channel = channel
        self._selector = selectors.DefaultSelector()
        self._selector.register(channel, selectors.EVENT_READ)  # the channel's pipe: stdout data, EOF or close

    def _errors(self, action: str):
        return self._connection._boundary(action, timeout_s=self.timeout_s)

    def _pump(self, wait_s: float) -> None:
        chan = self._channel
        if self._closed:
            wait_s = 0
            self._eof = True
        if wait_s > 0 and not (chan.recv_ready() or chan.recv_stderr_ready() or self._eof):
            self._selector.select(wait_s)
        while chan.recv_stderr_ready():
            self._err += chan.recv_stderr(65536)
        while chan.recv_ready():
            self._out += chan.recv(65536)
        if not self._eof and (chan.eof_received or chan.closed) and not chan.recv_ready():
            while chan.recv_stderr_ready():
                self._err += chan.recv_stderr(65536)
            self._eof = True

    def _send(self, data: memoryview) -> int:
        # No grace period for sending: a link that takes no data until the deadline is stalled; nor for as
        # long as keepalives would take to call it dead (the transport cannot send them while we block it).
        options = self._connection.options
        stall_s = options.keepalive_s * options.keepalive_count_max if options.keepalive_s > 0 else math.inf
        remaining = self.started + self.timeout_s - time.monotonic()
        self._channel.settimeout(max(min(remaining, stall_s), 0.001))
        try:
            return self._channel.send(data)
        except TimeoutError:
            # the device took no data: a stalled link, not a slow command
            self._abort()
            if stall_s < remaining:
                raise DeviceUnreachableError(
                    f"{self.label}: the transfer stalled: no data accepted for {stall_s:g} s",
                    hint="check the link to the device",
                ) from None
            raise DeviceUnreachableError(
                f"{self.label}: the transfer stalled (no data accepted) and did not finish within {self.timeout_s:g} s",
                hint="check the link to the device; raise --transfer-timeout for slow links",
            ) from None

    def _shutdown_write(self) -> None:
        self._channel.shutdown_write()

    def _exit_status(self, wait_s: float) -> int | None:
        chan = self._channel
        if self._closed and not chan.exit_status_ready():
            raise RemoteCommandError(f"{self.label}: `{self.name}` was stopped before it ended")
        if not chan.status_event.wait(wait_s):
            return None
        if chan.exit_status_ready() and chan.exit_status >= 0:
            return chan.exit_status
        transport = chan.get_transport()
        if transport is None or not transport.is_active():
            raise EOFError(getattr(transport, "dead_reason", None) or "the connection closed")
        raise RemoteCommandError(f"{self.label}: `{self.name}` ended without an exit status (killed by a signal?)")

    def _abort(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self._selector.close()
        with contextlib.suppress(Exception):
            self._channel.close()


class _LocalProcess(_Process):
    def __init__(self, label: str, popen: subprocess.Popen, command: str, timeout_s: float, name: str | None):
        super().__init__(label, command, timeout_s, name)
        self._popen = popen
        self._selector = selectors.DefaultSelector()
        self._open = {}
        for stream, buffer in ((popen.stdout, self._out), (popen.stderr, self._err)):
            os.set_blocking(stream.fileno(), False)
            self._selector.register(stream, selectors.EVENT_READ, buffer)
            self._open[stream] = buffer
        os.set_blocking(popen.stdin.fileno(), False)

    def _pump(self, wait_s: float) -> None:
        if not self._open or self._closed:
            self._eof = True
            return
        for key, _ in self._selector.select(max(wait_s, 0)):
            try:
                data = os.read(key.fileobj.fileno(), 65536)
            except BlockingIOError:
                continue
            if data:
                key.data.extend(data)
            else:
                self._selector.unregister(key.fileobj)
                key.fileobj.close()
                del self._open[key.fileobj]
        if not self._open:
            self._eof = True

    def _send(self, data: memoryview) -> int:
        fd = self._popen.stdin.fileno()
        while True:
            try:
                return os.write(fd, data)
            except BlockingIOError:
                if self._remaining() <= 0:
                    raise self._timed_out() from None
                self._pump(0.01)
            except BrokenPipeError:
                raise RemoteCommandError(
                    f"{self.label}: `{self.name}` stopped reading its input; {self._stderr_tail()}"
                ) from None

    def _shutdown_write(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._popen.stdin.close()

    def _exit_status(self, wait_s: float) -> int | None:
        try:
            return self._popen.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return None

    def _abort(self) -> None:
        self._closed = True
        self._open.clear()
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._popen.pid, 9)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=5)
        for stream in (self._popen.stdin, self._popen.stdout, self._popen.stderr):
            with contextlib.suppress(Exception):
                stream.close()
        with contextlib.suppress(Exception):
            self._selector.close()


# --------------------------------------------------------------------------- connections


class _ConnectionBase:
    label: str
    options: ConnectOptions
    edgeq_dir: str

    def _spawn(self, line: str, command: str, name: str | None, timeout_s: float) -> _Process:  # pragma: no cover
        """Run the shell command line ``line`` on the device (``command`` and ``name`` are for messages)."""
        raise NotImplementedError

    def _script(self, name: str) -> remote.DeviceFile:
        return remote.script(name, self.edgeq_dir)

    def start(
        self,
        command: str,
        timeout_s: float | None = None,
        *,
        label: str | None = None,
        requires: Sequence[remote.DeviceFile] = (),
        await_output: bool = False,
    ) -> RemoteProcess:
        """Start ``command`` (a POSIX shell command line) under the wrapper; see :class:`Connection`."""
        timeout_s = timeout_s or self.options.command_timeout_s
        line = remote.launcher(
            self._script("wrapper.sh"), _whole_seconds(timeout_s), label or _short(command), command, requires
        )

        def attempt() -> RemoteProcess:
            process = self._spawn(line, command, label, timeout_s)
            if await_output:
                try:
                    process.await_output()
                except BaseException:
                    process.close()
                    raise
            return process

        return self._with_files(requires, attempt) if await_output else attempt()

    def _with_files(self, requires: Sequence[remote.DeviceFile], attempt: Callable[[], _T]) -> _T:
        """``attempt()``; if it reports missing device files, upload them and ``attempt()`` once more."""
        try:
            return attempt()
        except DeviceFilesMissing as exc:
            self._install(exc.paths, requires)
        return attempt()

    def _install(self, paths: Sequence[str], requires: Sequence[remote.DeviceFile]) -> None:
        """Upload the device files at ``paths`` (all of them when the wrapper itself was missing) in one command."""
        wrapper = self._script("wrapper.sh")
        if wrapper.path in paths:
            files = [wrapper, *requires]
        else:
            known = {f.path: f for f in requires}
            unknown = [p for p in paths if p not in known]
            if unknown:
                raise RemoteCommandError(
                    f"{self.label}: the device asked for files edgeq did not send: {', '.join(unknown)}"
                )
            files = [known[p] for p in paths]
        log.debug("%s: installing %s", self.label, ", ".join(f.path for f in files))
        token = secrets.token_hex(4)
        processes: list[_Process] = []
        try:  # one command per file, all under way at once: one round trip
            for file in files:
                line = remote.install_command(file, token)
                processes.append(self._spawn(line, line, "install edgeq's files", self.options.transfer_timeout_s))
                processes[-1].write(file.data)
                processes[-1].close_stdin()
            results = [process.wait(check=False) for process in processes]
        finally:
            for process in processes:
                process.close()
        failed = [r for r in results if not r.ok]
        if failed:
            folders = ", ".join(dict.fromkeys(posixpath.dirname(f.path) for f in files))
            detail = (failed[0].stderr.strip().splitlines() or [f"exit status {failed[0].exit_status}"])[0]
            raise RemoteCommandError(
                f"{self.label}: cannot write edgeq's files into {folders}: {detail}",
                hint="check the device's remote_dir (edgeq_remote_dir, the target's [deploy] table) and its free space",
            )

    def run(
        self,
        command: str,
        timeout_s: float | None = None,
        *,
        stdin: bytes | None = None,
        check: bool = True,
        label: str | None = None,
        requires: Sequence[remote.DeviceFile] = (),
    ) -> CommandResult:
        """Run ``command`` (a POSIX shell command line) and return its result; raise RemoteCommandError if it fails and ``check``."""

        def attempt() -> CommandResult:
            process = self.start(command, timeout_s, label=label, requires=requires)
            try:
                if stdin:
                    process.write(stdin)
                process.close_stdin()
                return process.wait(check=check)
            finally:
                process.close()

        return self._with_files(requires, attempt)

    def put(self, local: str | os.PathLike, remote: str, progress: ProgressCallback | None = None) -> int:
        """Copy ``local`` to ``remote`` (relative paths: under the home directory); atomic, returns the bytes sent.

        The file goes to a temporary name beside ``remote``, its size is
        checked on the device, then it is renamed over ``remote`` (``put.sh``).
        """
        script = self._script("put.sh")
        command = f"sh {shlex.quote(script.path)} {shlex.quote(remote)} {os.path.getsize(local)}"

        def attempt() -> int:
            process = self.start(command, self.options.transfer_timeout_s, label="upload", requires=(script,))
            try:
                sent = process.send_file(local, progress)
                process.wait(check=True)
                return sent
            finally:
                process.close()

        return self._with_files((script,), attempt)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class _Transport(paramiko.Transport):
    """paramiko's transport with OpenSSH's ServerAliveInterval / ServerAliveCountMax.

    paramiko's own keepalive (``set_keepalive``) sends requests that want no
    answer, so a link gone silent goes unnoticed until a command's deadline
    (a deploy's is ``--command-timeout`` + ``--transfer-timeout``). Here each
    keepalive asks for one (sshd answers ``keepalive@openssh.com`` with a
    failure, which is an answer), and after ``count_max`` unanswered in a row
    the transport is closed: whatever waits on it ends as "connection lost",
    with the reason in ``dead_reason``.
    """

    dead_reason: str | None = None
    _unanswered = 0

    def check_alive(self, interval_s: int, count_max: int) -> None:
        if interval_s <= 0:
            return

        def keepalive(transport=weakref.proxy(self)) -> None:
            transport._keepalive(interval_s, count_max)

        self.packetizer.set_keepalive(interval_s, keepalive)

    def _keepalive(self, interval_s: int, count_max: int) -> None:  # in the transport's thread
        if self._unanswered >= count_max:
            self.dead_reason = f"no answer to {count_max} keepalives sent {interval_s} s apart: the link is dead"
            log.info("%s: closing the connection", self.dead_reason)
            self.close()
            return
        self._unanswered += 1
        message = paramiko.Message()
        message.add_byte(paramiko.common.cMSG_GLOBAL_REQUEST)
        message.add_string("keepalive@openssh.com")
        message.add_boolean(True)  # want_reply: the point of it
        self._send_user_message(message)  # type: ignore[attr-defined]  # paramiko's own send path (rekey-safe)

    # the handlers of the server's answers (paramiko binds them by name when it builds its handler table)
    def _parse_request_success(self, m):
        self._unanswered = 0
        return super()._parse_request_success(m)  # type: ignore[misc]

    def _parse_request_failure(self, m):
        self._unanswered = 0
        return super()._parse_request_failure(m)  # type: ignore[misc]


class SSHConnection(_ConnectionBase):
    """A device over SSH, opened on first use; one transport for everything done on it.

    ``host``, ``port``, ``user`` and ``key_files`` are already resolved (the
    inventory applies ``~/.ssh/config``). Keys are tried in the order: the
    given key files, ssh-agent, ``~/.ssh/id_*``, then a password from
    ``EDGEQ_SSH_PASSWORD`` or the prompt callback.
    """

    def __init__(
        self,
        host: str,
        *,
        port: int = 22,
        user: str | None = None,
        key_files: tuple[str, ...] | list[str] = (),
        options: ConnectOptions | None = None,
        name: str | None = None,
        edgeq_dir: str = "edgeq",
    ):
        self.host = host
        self.port = port
        self.user = user or _local_user()
        self.key_files = tuple(key_files)
        self.edgeq_dir = edgeq_dir
        self.options = options or ConnectOptions()
        self.name = name or host
        self.label = self.name
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SSHConnection({self.user}@{self.host}:{self.port})"

    @contextlib.contextmanager
    def _boundary(self, action: str, timeout_s: float | None = None) -> Iterator[None]:
        """Where paramiko meets edgeq: every paramiko call runs inside this block."""
        try:
            yield
        except EdgeqError:
            raise
        except _TRANSPORT_ERRORS as exc:
            raise map_ssh_error(exc, device=self.label, action=action, timeout_s=timeout_s) from exc

    @property
    def transport(self) -> paramiko.Transport:
        """The open transport, connecting first if needed."""
        with self._lock:
            if self._client is None or not (self._client.get_transport() and self._client.get_transport().is_active()):
                self._close_client()
                self._client = self._connect()
            return self._client.get_transport()

    def connect(self) -> SSHConnection:
        """Open the connection now (it opens by itself on first use otherwise)."""
        _ = self.transport
        return self

    def _connect(self) -> paramiko.SSHClient:
        options = self.options
        token = known_hosts_token(self.host, self.port)
        for key_file in self.key_files:
            if not os.path.isfile(key_file):
                raise DeviceAuthError(
                    f"{self.label}: key file {key_file} does not exist",
                    hint="check ansible_ssh_private_key_file / IdentityFile",
                )
        known = _known_keys(token, options.known_hosts_files())
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_KnownHostsPolicy(options, known))

        def make_transport(sock, **kwargs):
            transport = _Transport(sock, **kwargs)
            security = transport.get_security_options()
            security.ciphers = tuple(c for c in _CIPHERS if c in security.ciphers)
            security.digests = tuple(m for m in _MACS if m in security.digests)
            security.key_types = _preferred_key_types(known, tuple(security.key_types))
            return transport

        password = os.environ.get(options.password_env) or None
        timeout = options.connect_timeout_s
        try:
            with self._boundary("connecting", timeout_s=timeout):
                sock = socket.create_connection((self.host, self.port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small protocol messages: no Nagle delay
                try:
                    client.connect(
                        self.host,
                        port=self.port,
                        username=self.user,
                        password=password,
                        key_filename=list(self.key_files) or None,
                        timeout=timeout
                        + 0.5,  # the handshake; a silent server fails the banner wait first, more precisely
                        banner_timeout=timeout,
                        auth_timeout=timeout,
                        channel_timeout=timeout,
                        allow_agent=options.allow_agent,
                        look_for_keys=options.look_for_keys,
                        sock=sock,
                        transport_factory=make_transport,
                    )
                except paramiko.SSHException as exc:
                    # paramiko says "No authentication methods available" (an SSHException) when it had nothing to offer
                    if not _is_auth_failure(exc) or not self._prompt_for_password(client, password):
                        raise
                transport = client.get_transport()
                assert isinstance(transport, _Transport)  # made by make_transport above
                transport.check_alive(options.keepalive_s, options.keepalive_count_max)
        except BaseException:
            client.close()
            raise
        log.debug("connected to %s@%s:%s", self.user, self.host, self.port)
        return client

    def _prompt_for_password(self, client: paramiko.SSHClient, tried: str | None) -> bool:
        """After keys failed: one interactive password attempt, if a prompt is available and none was given."""
        prompt = self.options.password_prompt
        transport = client.get_transport()
        if prompt is None or tried is not None or transport is None or not transport.is_active():
            return False
        with _PROMPT_LOCK:  # devices of a fleet ask one at a time
            password = prompt(f"{self.user}@{self.host}")
        if not password:
            return False
        transport.auth_password(self.user, password)
        return transport.is_authenticated()

    def _spawn(self, line: str, command: str, name: str | None, timeout_s: float) -> _Process:
        transport = self.transport
        with self._boundary("starting a command", timeout_s=self.options.connect_timeout_s):
            channel = transport.open_session(timeout=self.options.connect_timeout_s)
            try:
                channel.exec_command(line)
            except BaseException:
                channel.close()
                raise
        return _SSHProcess(self, channel, command, timeout_s, name)

    def _close_client(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def close(self) -> None:
        with self._lock:
            self._close_client()


class LocalConnection(_ConnectionBase):
    """This machine, with the same interface: commands run under the same wrapper, from ``home``.

    ``shell`` reads the command lines (the login shell's part on a device);
    the scripts run under the ``sh`` found in ``PATH``, as on a device.
    """

    def __init__(
        self,
        home: str | os.PathLike | None = None,
        options: ConnectOptions | None = None,
        name: str = "local",
        *,
        edgeq_dir: str = "edgeq",
        shell: str = "/bin/sh",
    ):
        self.home = Path(home).expanduser() if home else Path.home()
        self.options = options or ConnectOptions()
        self.name = name
        self.label = name
        self.edgeq_dir = edgeq_dir
        self.shell = shell

    def __repr__(self) -> str:
        return f"LocalConnection({self.home})"

    def _spawn(self, line: str, command: str, name: str | None, timeout_s: float) -> _Process:
        env = dict(os.environ, HOME=str(self.home))
        try:
            popen = subprocess.Popen(
                [self.shell, "-c", line],
                cwd=self.home,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # lets the client kill the whole group if even the watchdog hangs
            )
        except OSError as exc:
            raise RemoteCommandError(
                f"{self.label}: cannot start a shell in {self.home}: {exc.strerror or exc}"
            ) from exc
        return _LocalProcess(self.label, popen, command, timeout_s, name)

    def close(self) -> None:
        pass


def _local_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid (containers)
        return "root" if os.geteuid() == 0 else str(os.geteuid())
