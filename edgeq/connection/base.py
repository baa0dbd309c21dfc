"""What a connection is: its results and options, the ``Connection`` / ``RemoteProcess`` / ``Endpoint`` protocols."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from .. import remote
from ..defaults import DEFAULT_COMMAND_TIMEOUT_S, DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_TRANSFER_TIMEOUT_S
from ..errors import RemoteCommandError

__all__ = [
    "PASSWORD_ENV",
    "TIMEOUT_MARKER",
    "CommandResult",
    "ConnectOptions",
    "Connection",
    "DeviceFilesMissing",
    "Endpoint",
    "ProgressCallback",
    "RemoteProcess",
    "local_user",
]

PASSWORD_ENV = "EDGEQ_SSH_PASSWORD"
TIMEOUT_MARKER = remote.TIMEOUT_MARKER  # on stderr: the wrapper's watchdog stopped the command

ProgressCallback = Callable[[int, int], None]
"""``progress(bytes_done, bytes_total)``, called from the thread doing the transfer."""


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
    before a connection is made: see :func:`edgeq.connection.read_ssh_config`
    and ``edgeq.devices.resolve_devices``.)

    Timeouts: ``connect_timeout_s`` bounds each step of connecting (TCP, the
    SSH greeting, the handshake, authentication); ``command_timeout_s`` a
    remote command; ``transfer_timeout_s`` one upload.
    """

    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S
    transfer_timeout_s: float = DEFAULT_TRANSFER_TIMEOUT_S
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


class DeviceFilesMissing(RemoteCommandError):
    """A command did not run: device files it needs (``paths``) are missing. The connection uploads them and retries."""

    def __init__(self, device: str, name: str, paths: Sequence[str]):
        super().__init__(f"{device}: `{name}` did not run: edgeq's files {', '.join(paths)} are missing on the device")
        self.paths = tuple(paths)


@runtime_checkable
class RemoteProcess(Protocol):
    """A command started on a device: write to its stdin, read its stdout, wait for its end."""

    def write(self, data: bytes) -> None: ...

    def send_file(self, path: str | os.PathLike[str], progress: ProgressCallback | None = None) -> int: ...

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

    def put(self, local: str | os.PathLike[str], remote: str, progress: ProgressCallback | None = None) -> int: ...

    def close(self) -> None: ...

    def __enter__(self) -> Connection: ...

    def __exit__(self, *exc: object) -> None: ...


class Endpoint(Protocol):
    """What :func:`edgeq.connection.open_connection` needs of a device record (``edgeq.devices.Device`` is one)."""

    # read-only: a frozen dataclass (as Device is) provides them
    @property
    def name(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def user(self) -> str: ...

    @property
    def key_files(self) -> tuple[str, ...]: ...

    @property
    def transport(self) -> str: ...

    @property
    def remote_dir(self) -> str: ...


def local_user() -> str:
    """The name of the user running edgeq (the default login user on devices)."""
    import getpass  # only when no user is given: most runs never need it

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid (containers)
        return "root" if os.geteuid() == 0 else str(os.geteuid())
