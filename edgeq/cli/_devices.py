"""The device options every command that works on devices shares, the fleet progress display and its exit rule.

Usage in a command module::

    @cli.command("deploy")
    @device_options
    def deploy_cmd(..., devices: DeviceOptions):
        found = devices.resolve()                   # refused before any connection if anything is wrong
        with FleetProgress(len(found)) as ui:
            fleet = deploy_fleet(found, ..., connect=devices.connector(ui), options=devices.fleet_options(), events=ui)
        ...render...
        raise_for_fleet(fleet)                      # the exit rule: see raise_for_fleet

Nothing here imports paramiko: the library is imported when a command runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..defaults import (
    DEFAULT_COMMAND_TIMEOUT_S,
    DEFAULT_CONCURRENCY,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_RETRIES,
    DEFAULT_TRANSFER_TIMEOUT_S,
)

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from ..connection import Connection, ConnectOptions
    from ..devices import Device, HostSpec
    from ..errors import EdgeqError
    from ..fleet import DeviceReport, FleetOptions, FleetReport
    from ..targets import Target

__all__ = ["DeviceOptions", "FleetProgress", "HostSpecType", "device_options", "raise_for_fleet"]

_R = TypeVar("_R")


class HostSpecType(click.ParamType):
    """``[user@]address[:port]``; a bad value is a one-line usage error."""

    name = "USER@ADDRESS[:PORT]"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> HostSpec:
        from ..devices import HostSpec, parse_host_spec
        from ..errors import EdgeqError

        if isinstance(value, HostSpec):
            return value
        try:
            return parse_host_spec(str(value))
        except EdgeqError as exc:
            self.fail(exc.message, param, ctx)


@dataclasses.dataclass(frozen=True)
class DeviceOptions:
    """The values of the shared device options, and what commands make of them."""

    hosts: tuple[HostSpec, ...] = ()
    inventory: Path | None = None
    limit: str | None = None
    target: str | None = None
    known_hosts: Path | None = None
    trust_new_hosts: bool = False
    ssh_config: Path | None = None
    identities: tuple[Path, ...] = ()
    concurrency: int = DEFAULT_CONCURRENCY
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S
    transfer_timeout_s: float = DEFAULT_TRANSFER_TIMEOUT_S
    retries: int = DEFAULT_RETRIES

    def resolve(
        self, targets_dir: str | os.PathLike | None = None, target_loader: Callable[[str], Target] | None = None
    ) -> tuple[Device, ...]:
        """The selected devices, fully resolved (inventory, the SSH config by ``ssh -G``, target defaults); no connection.

        ``target_loader(name)`` loads targets (a command that uses them later passes its own cache), else
        they are loaded by name from ``targets_dir`` and the usual search path. What edgeq honours of the
        SSH config only in part is a ``Warning:`` line on stderr; what it cannot honour is an error.
        """
        from ..devices import HostEntry, host_entries_from_specs, resolve_devices
        from ..inventory import load_inventory

        if self.hosts and self.inventory:
            raise click.UsageError("give either --host or --inventory, not both")
        if self.limit and not self.inventory:
            raise click.UsageError("--limit selects hosts of an --inventory")
        loader = target_loader
        if loader is None and targets_dir is not None:
            from ..targets import load_target

            loader = functools.partial(load_target, targets_dir=targets_dir)
        if self.inventory:
            entries = load_inventory(self.inventory, self.limit).select()
        elif self.hosts:
            entries = host_entries_from_specs(self.hosts)
        elif self.target:
            entries = (HostEntry(name=self.target, vars={}, source="--target"),)
        else:
            raise click.UsageError("which devices? Give --host USER@ADDRESS[:PORT] (repeatable) or --inventory FILE")
        devices = resolve_devices(
            entries,
            target=self.target,
            ssh_config=self.ssh_config,
            target_loader=loader,
            identity_files=self.identities,
            known_hosts=self.known_hosts,
            warn=_echo_warning,
        )
        if not self.hosts and not self.inventory and devices[0].transport != "local":
            raise click.UsageError(
                f"target {self.target!r} is reached over SSH: give --host USER@ADDRESS[:PORT] or --inventory FILE"
            )
        return devices

    def connect_options(self, ui: FleetProgress | None = None) -> ConnectOptions:
        from ..connection import ConnectOptions

        return ConnectOptions(
            connect_timeout_s=self.connect_timeout_s,
            command_timeout_s=self.command_timeout_s,
            transfer_timeout_s=self.transfer_timeout_s,
            known_hosts=self.known_hosts,
            trust_new_hosts=self.trust_new_hosts,
            password_prompt=_password_prompt(ui) if sys.stdin.isatty() else None,
            host_key_added=ui.host_key_added if ui else _echo_host_key_added,
        )

    def connector(self, ui: FleetProgress | None = None) -> Callable[[Device], Connection]:
        """``connector(device)`` -> an unopened connection (it opens on first use)."""
        from ..connection import open_connection
        from ..devices import jump_resolver

        options = self.connect_options(ui)
        resolve_jump = jump_resolver(self.ssh_config)
        return lambda device: open_connection(device, options, resolve_jump=resolve_jump)

    def fleet_options(self, canary: int = 0) -> FleetOptions:
        from ..fleet import FleetOptions

        return FleetOptions(concurrency=self.concurrency, retries=self.retries, canary=canary)


_OPTIONS = (
    click.option(
        "--host",
        "hosts",
        multiple=True,
        type=HostSpecType(),
        help="A device: user@address[:port] (repeatable). Host aliases of the SSH config work (read by ssh -G).",
    ),
    click.option(
        "-i",
        "--inventory",
        type=click.Path(path_type=Path, dir_okay=True),
        help="A fleet: an Ansible inventory (file or directory: YAML, INI, plugins), resolved by ansible-inventory.",
    ),
    click.option(
        "-l",
        "--limit",
        metavar="PATTERN",
        help="With --inventory: an Ansible host pattern, as ansible --limit (':'/',' unions, '&', '!', [0] subscripts, ~regex).",
    ),
    click.option(
        "--target",
        metavar="TARGET",
        help="Target of the devices (overrides edgeq_target): its [deploy] table gives default user, port, remote_dir, keep_versions.",
    ),
    click.option(
        "--known-hosts",
        type=click.Path(path_type=Path, dir_okay=False),
        help="A known_hosts file read besides /etc/ssh/ssh_known_hosts and ~/.ssh/known_hosts (instead of the SSH "
        "config's UserKnownHostsFile and GlobalKnownHostsFile); --trust-new-hosts writes to it.",
    ),
    click.option(
        "--trust-new-hosts",
        is_flag=True,
        help="Add the key of a host never seen before to known_hosts (OpenSSH's accept-new). A CHANGED key is always refused.",
    ),
    click.option(
        "--ssh-config",
        type=click.Path(path_type=Path, dir_okay=False),
        help="SSH config file, as ssh -F: read instead of ~/.ssh/config and /etc/ssh/ssh_config (by ssh -G).",
    ),
    click.option(
        "-k",
        "--identity",
        "identities",
        multiple=True,
        type=click.Path(path_type=Path, dir_okay=False, exists=True),
        help="A private key file to offer first, as ssh -i (repeatable; after the host's ansible_ssh_private_key_file, "
        "before the SSH config's). -k, because -i is --inventory.",
    ),
    click.option(
        "--concurrency",
        type=click.IntRange(min=1, max=256),
        default=DEFAULT_CONCURRENCY,
        show_default=True,
        help="Devices worked on at the same time.",
    ),
    click.option(
        "--connect-timeout",
        "connect_timeout_s",
        type=click.FloatRange(min=0.1),
        default=DEFAULT_CONNECT_TIMEOUT_S,
        show_default=True,
        help="Seconds to connect, get the SSH greeting and authenticate.",
    ),
    click.option(
        "--command-timeout",
        "command_timeout_s",
        type=click.FloatRange(min=1),
        default=DEFAULT_COMMAND_TIMEOUT_S,
        show_default=True,
        help="Seconds a remote command may run; then it is stopped on the device.",
    ),
    click.option(
        "--transfer-timeout",
        "transfer_timeout_s",
        type=click.FloatRange(min=1),
        default=DEFAULT_TRANSFER_TIMEOUT_S,
        show_default=True,
        help="Seconds one model upload may take.",
    ),
    click.option(
        "--retries",
        type=click.IntRange(min=0, max=10),
        default=DEFAULT_RETRIES,
        show_default=True,
        help="Extra attempts after a connection error (never after an authentication, host-key or command error), with backoff.",
    ),
)
_NAMES = (
    "hosts",
    "inventory",
    "limit",
    "target",
    "known_hosts",
    "trust_new_hosts",
    "ssh_config",
    "identities",
    "concurrency",
    "connect_timeout_s",
    "command_timeout_s",
    "transfer_timeout_s",
    "retries",
)


def device_options(func: Callable[..., _R]) -> Callable[..., _R]:
    """Add the shared device options to a click command; it receives them as one ``devices: DeviceOptions`` argument."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> _R:  # click passes each option's parsed value
        _debug_logging()
        values = {name: kwargs.pop(name) for name in _NAMES}
        values["hosts"] = tuple(values["hosts"] or ())
        values["identities"] = tuple(values["identities"] or ())
        kwargs["devices"] = DeviceOptions(**values)
        return func(*args, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def _debug_logging() -> None:
    """With ``edgeq --debug``: edgeq's log (retries, tracebacks of internal errors in fleet runs) and paramiko's on stderr."""
    ctx = click.get_current_context(silent=True)
    if not (ctx and ctx.find_root().obj and ctx.find_root().obj.get("debug")):
        return
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(name)s %(levelname)s: %(message)s"))
    for name, level in (("edgeq", logging.DEBUG), ("paramiko", logging.INFO)):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(getattr(h, "_edgeq_debug", False) for h in logger.handlers):
            handler._edgeq_debug = True  # type: ignore[attr-defined]
            logger.addHandler(handler)


# --------------------------------------------------------------------------- prompts and notices


def _echo_warning(message: str) -> None:
    click.echo(f"Warning: {message}", err=True)


def _echo_host_key_added(host: str, key: str, path: str) -> None:
    click.echo(f"Warning: trusted the new host key of {host} ({key}), added to {path}", err=True)


def _password_prompt(ui: FleetProgress | None) -> Callable[[str], str | None]:
    def prompt(who: str) -> str | None:
        with ui.paused() if ui else contextlib.nullcontext():
            try:
                return (
                    click.prompt(f"Password for {who}", hide_input=True, default="", show_default=False, err=True)
                    or None
                )
            except click.Abort:
                return None

    return prompt


# --------------------------------------------------------------------------- progress


class FleetProgress:
    """Progress of a fleet operation on stderr: devices done and bytes sent (rich bars on a terminal, else one line per device).

    Implements :class:`edgeq.fleet.FleetEvents`; safe to call from worker threads.
    """

    def __init__(self, devices: int, *, action: str = "deploy", total_bytes: int | None = None, enabled: bool = True):
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self.devices = devices
        self.action = action
        self.total_bytes = total_bytes
        self.enabled = enabled
        self._lock = threading.Lock()
        self._sent: dict[str, int] = {}
        self._done = 0
        self._progress: Progress | None = None
        self._device_task: TaskID | None = None
        self._bytes_task: TaskID | None = None

    def __enter__(self) -> FleetProgress:
        if self.enabled and self.console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            progress = self._progress = Progress(
                TextColumn("{task.description:<8}"),
                BarColumn(),
                TextColumn("{task.fields[count]:>18}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[detail]}"),
                console=self.console,
                transient=True,
            )
            self._device_task = progress.add_task(self.action, total=self.devices, count=f"0/{self.devices}", detail="")
            if self.total_bytes:
                total = self.total_bytes * self.devices
                self._bytes_task = progress.add_task("bytes", total=total, count=f"0.0/{total / 1e6:.1f} MB", detail="")
            progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Stop drawing while something else uses the terminal (a password prompt)."""
        progress = self._progress
        if progress is not None:
            progress.stop()
        try:
            yield
        finally:
            if progress is not None:
                progress.start()

    # FleetEvents
    def started(self, device: Device) -> None:
        pass

    def transferred(self, device: Device, done: int, total: int) -> None:
        with self._lock:
            self._sent[device.name] = done
            sent = sum(self._sent.values())
        if self._progress is not None and self._bytes_task is not None:
            total = (self.total_bytes or 0) * self.devices
            self._progress.update(self._bytes_task, completed=sent, count=f"{sent / 1e6:.1f}/{total / 1e6:.1f} MB")

    def retrying(self, device: Device, attempt: int, error: EdgeqError, delay_s: float) -> None:
        with self._lock:
            self._sent.pop(device.name, None)
        message = error.message
        message = message[len(device.name) + 2 :] if message.startswith(f"{device.name}: ") else message
        self._say(f"{device.name}: {message}; retrying in {delay_s:.1f} s")

    def finished(self, result: DeviceReport) -> None:
        if self._progress is not None and self._device_task is not None:  # both set together in __enter__
            with self._lock:
                self._done += 1
                done = self._done
            self._progress.update(
                self._device_task,
                advance=1,
                count=f"{done}/{self.devices}",
                detail=f"{result.device}: {result.status.value}",
            )
        elif self.enabled:
            detail = f" ({result.reason})" if result.reason and not result.status.succeeded else ""
            self._say(f"{result.device}: {result.status.value}{detail}")

    def host_key_added(self, host: str, key: str, path: str) -> None:
        self._say(f"Warning: trusted the new host key of {host} ({key}), added to {path}", always=True)

    def note(self, message: str) -> None:
        """A progress line from a worker thread (shown above the bars, or as a line when not a terminal)."""
        self._say(message)

    def _say(self, message: str, always: bool = False) -> None:
        if not (self.enabled or always):
            return
        if self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False)
        else:
            click.echo(message if message.startswith("Warning") else f"edgeq: {message}", err=True)


# --------------------------------------------------------------------------- the exit rule


def raise_for_fleet(fleet: FleetReport) -> None:
    """Return when every device succeeded; else raise the error whose exit code says what happened.

    The rule: ONE device exits with its own failure's code (7 unreachable,
    8 authentication, 9 host key, 10 remote command, 11 probe output, ...);
    a fleet whose failures all have the same code exits with that code; a
    fleet whose failures differ exits 12 (:class:`~edgeq.errors.PartialFailure`).
    Devices skipped after a failed canary count as failures of code 12.
    """
    from ..errors import PartialFailure
    from ..fleet import DeviceStatus

    results = list(fleet.results)
    failures = [r for r in results if not r.status.succeeded]
    if not failures:
        return
    codes = {r.code for r in failures}
    if len(results) == 1:
        only = failures[0]
        raise _shared_error(failures)(
            f"{only.device}: {only.status.value}: {only.reason or 'no reason given'}", hint=only.hint
        )
    counts = {s.value: sum(1 for r in failures if r.status is s) for s in DeviceStatus}
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    hints = list(dict.fromkeys(r.hint for r in failures if r.hint))
    stopped = "; the rollout stopped after the canary" if fleet.stopped_by_canary else ""
    error = _shared_error(failures) if len(codes) == 1 else PartialFailure
    raise error(
        f"{len(failures)} of {len(results)} devices did not succeed ({summary}){stopped}",
        hint=hints[0] if len(hints) == 1 else "the table above gives each device's reason",
    )


def _shared_error(failures: list[DeviceReport]) -> Callable[..., EdgeqError]:
    """The most specific error class every failure is an instance of (they share one exit code)."""
    from ..errors import EdgeqError, error_class

    code = failures[0].code
    classes = [error_class(r.kind or "error") for r in failures]
    shared = next(c for c in classes[0].__mro__ if all(issubclass(other, c) for other in classes))
    if issubclass(shared, EdgeqError) and shared.exit_code == code:
        return shared

    def make(message: str, hint: str | None = None) -> EdgeqError:  # failures recorded with kinds edgeq does not know
        error = EdgeqError(message, hint)
        error.exit_code = code
        return error

    return make
