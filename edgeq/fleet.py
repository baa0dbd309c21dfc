"""One runner for every fleet operation: devices x operation -> each device's outcome, a value or an edgeq error.

``run_fleet(devices, operation, connect=..., options=..., events=...)`` runs
``operation(conn, device, progress) -> T`` on every device in threads, at
most ``options.concurrency`` at a time, each attempt on ONE connection that
``connect(device)`` makes (it opens on first use, closes after the attempt).
What one device does never stops the others:

* a value is that device's result: ``Outcome(value=...)``;
* an :class:`~edgeq.errors.EdgeqError` is that device's failure, kept with
  its kind and exit code: ``Outcome(error=...)``. A
  :class:`~edgeq.errors.DeviceUnreachableError` (a transport error: refused,
  timed out, cut) is retried ``options.retries`` times with exponential
  backoff; any other edgeq error fails the device at once. Retries are
  decided by the exception's type only;
* any other exception is a bug, not a device failure: no further device is
  started, the devices already running finish, and then the exception
  propagates with its traceback (a note names the device it came from);
* ``KeyboardInterrupt`` closes every open connection (which frees the worker
  threads) and propagates at once.

With ``options.canary = N`` the first N devices go first; the rest only if
all of them succeeded, else they are left out (``NotAttempted``, status
``skipped``). With ``options.batch = B`` the devices after the canary go B
at a time, and with ``options.max_fail_pct = P`` a batch where more than P %
of the devices failed stops the run: the later batches are left out
likewise (Ansible's ``serial`` and ``max_fail_percentage``). ``events`` (a :class:`FleetEvents`) hears each device start,
send bytes, retry and finish, from the worker threads.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .defaults import DEFAULT_CONCURRENCY, DEFAULT_RETRIES
from .errors import DeviceUnreachableError, EdgeqError, NotAttempted, RolledBack
from .types import to_jsonable

if TYPE_CHECKING:  # the connection module imports paramiko: only when a connection is really made
    from .connection import Connection
    from .devices import Device

__all__ = [
    "DEFAULT_CONCURRENCY",
    "Connector",
    "DeviceReport",
    "DeviceStatus",
    "FleetEvents",
    "FleetOptions",
    "FleetReport",
    "FleetResult",
    "Operation",
    "Outcome",
    "ProgressCallback",
    "fleet_waves",
    "reason_of",
    "run_fleet",
    "status_of",
]

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0

T = TypeVar("T")

ProgressCallback = Callable[[int, int], None]
"""``progress(bytes_done, bytes_total)``: what an operation reports of its uploads."""

Operation = Callable[["Connection", "Device", ProgressCallback], T]
"""``operation(conn, device, progress) -> T``: the work done on one device."""

Connector = Callable[["Device"], "Connection"]
"""``connect(device)`` -> an unopened connection (it opens on first use)."""


class DeviceStatus(str, enum.Enum):
    """How one device came out of a fleet operation."""

    OK = "ok"  # done
    UNCHANGED = "unchanged"  # deploy, rollback, remove: nothing to do, already in the wanted state
    FAILED = "failed"  # reached, but the operation failed (the reason says why)
    UNREACHABLE = "unreachable"  # could not connect, or the connection was lost (after retries)
    SKIPPED = "skipped"  # not attempted: the canary devices or a batch failed
    UNDONE = "undone"  # switched, then switched back because the rollout stopped

    @property
    def succeeded(self) -> bool:
        return self in (DeviceStatus.OK, DeviceStatus.UNCHANGED)


def status_of(error: EdgeqError | None) -> DeviceStatus:
    """The status a device's error stands for (OK without one)."""
    if error is None:
        return DeviceStatus.OK
    if isinstance(error, DeviceUnreachableError):
        return DeviceStatus.UNREACHABLE
    if isinstance(error, NotAttempted):
        return DeviceStatus.SKIPPED
    if isinstance(error, RolledBack):
        return DeviceStatus.UNDONE
    return DeviceStatus.FAILED


def reason_of(error: EdgeqError, device: str) -> str:
    """The error's message without the ``device: `` it starts with (tables and JSON name the device already)."""
    prefix = f"{device}: "
    return error.message[len(prefix) :] if error.message.startswith(prefix) else error.message


class DeviceReport(Protocol):
    """What every per-device result shows (an :class:`Outcome`, ``edgeq.deploy.DeviceResult``):
    what progress displays and the CLI's exit rule read."""

    @property
    def device(self) -> str: ...

    @property
    def status(self) -> DeviceStatus: ...

    @property
    def code(self) -> int: ...  # 0 when the device succeeded, else its error's exit code

    @property
    def kind(self) -> str | None: ...  # None when the device succeeded, else its error's kind

    @property
    def reason(self) -> str | None: ...

    @property
    def hint(self) -> str | None: ...


class FleetReport(Protocol):
    """Every device of a fleet operation (a :class:`FleetResult`, ``edgeq.deploy.DeployFleetResult``)."""

    @property
    def results(self) -> Sequence[DeviceReport]: ...

    @property
    def stopped_by_canary(self) -> bool: ...


@dataclasses.dataclass(frozen=True)
class Outcome(Generic[T]):
    """One device's outcome: the operation's value, or the edgeq error that stopped it (never both)."""

    device: str
    destination: str
    value: T | None = None
    error: EdgeqError | None = None
    attempts: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> DeviceStatus:
        return status_of(self.error)

    @property
    def code(self) -> int:
        return 0 if self.error is None else self.error.exit_code

    @property
    def kind(self) -> str | None:
        return None if self.error is None else self.error.kind

    @property
    def reason(self) -> str | None:
        return None if self.error is None else reason_of(self.error, self.device)

    @property
    def hint(self) -> str | None:
        return None if self.error is None else self.error.hint

    def to_dict(self) -> dict[str, Any]:
        value = self.value
        to_dict = getattr(value, "to_dict", None)
        return {
            "device": self.device,
            "destination": self.destination,
            "status": self.status.value,
            "code": self.code,
            "kind": self.kind,
            "reason": self.reason,
            "hint": self.hint,
            "attempts": self.attempts,
            "seconds": self.seconds,
            "value": to_dict() if callable(to_dict) else to_jsonable(value),
        }


@dataclasses.dataclass(frozen=True)
class FleetResult(Generic[T]):
    """Every device of a fleet operation, in the order given."""

    action: str
    results: tuple[Outcome[T], ...]
    seconds: float
    stopped_by_canary: bool = False
    stop_reason: str | None = None  # why devices were left out (the canary or a batch failed), when they were

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> tuple[Outcome[T], ...]:
        return tuple(r for r in self.results if not r.ok)

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for r in self.results if r.status is s) for s in DeviceStatus}

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "ok": self.ok,
            "counts": self.counts(),
            "seconds": self.seconds,
            "stopped_by_canary": self.stopped_by_canary,
            "stop_reason": self.stop_reason,
            "results": [r.to_dict() for r in self.results],
        }


class FleetEvents(Protocol):
    """What a progress display hears from :func:`run_fleet` (called from worker threads)."""

    def started(self, device: Device) -> None: ...

    def transferred(self, device: Device, done: int, total: int) -> None: ...

    def retrying(self, device: Device, attempt: int, error: EdgeqError, delay_s: float) -> None: ...

    def finished(self, result: DeviceReport) -> None: ...


@dataclasses.dataclass(frozen=True)
class FleetOptions:
    """How a fleet is worked through."""

    concurrency: int = DEFAULT_CONCURRENCY
    retries: int = DEFAULT_RETRIES  # extra attempts after a transport error (DeviceUnreachableError) only
    backoff_s: float = 1.0  # first retry delay; doubled for each further one, capped at 30 s
    canary: int = 0  # this many devices first; the rest only if all of them succeeded
    batch: int = 0  # after the canary, this many devices at a time (0: all the rest at once)
    max_fail_pct: float | None = None  # a batch with more failures than this (percent) stops the run; None: never


class _Registry:
    """Open connections, so that an interrupt can close them and free the worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[Connection] = set()
        self.cancelled = threading.Event()

    def add(self, conn: Connection) -> None:
        with self._lock:
            self._open.add(conn)

    def discard(self, conn: Connection) -> None:
        with self._lock:
            self._open.discard(conn)

    def cancel(self) -> None:
        self.cancelled.set()
        with self._lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.close()
            except Exception:  # closing during an interrupt: best effort
                pass


def run_fleet(
    devices: Sequence[Device],
    operation: Operation[T],
    *,
    connect: Connector,
    options: FleetOptions = FleetOptions(),
    events: FleetEvents | None = None,
    action: str = "fleet",
) -> FleetResult[T]:
    """Run ``operation`` on every device with bounded concurrency; one device's failure never stops the others.

    See the module's documentation for errors, retries, bugs, interrupts and canaries.
    ``action`` names the worker threads and the result.
    """
    started = time.monotonic()
    registry = _Registry()
    devices = list(devices)
    outcomes: dict[int, Outcome[T]] = {}
    waves = fleet_waves(len(devices), options.canary, options.batch)
    canary = min(max(options.canary, 0), len(devices))
    stop_reason: str | None = None
    by_canary = False
    for wave_number, wave in enumerate(waves):
        if stop_reason is not None:
            for index in wave:
                device = devices[index]
                error = NotAttempted(f"{device.name}: not attempted: {stop_reason}")
                outcomes[index] = Outcome(device=device.name, destination=device.destination, error=error)
                if events:
                    events.finished(outcomes[index])
            continue
        outcomes.update(_run_wave(devices, wave, operation, connect, options, events, registry, action))
        failed = [outcomes[i].device for i in wave if not outcomes[i].ok]
        if canary and wave_number == 0:
            if failed:
                stop_reason = f"the canary failed ({', '.join(failed)})"
                by_canary = True
        elif options.max_fail_pct is not None and 100.0 * len(failed) / len(wave) > options.max_fail_pct:
            which = f"batch {wave_number + (0 if canary else 1)}" if len(waves) > 1 else "the run"
            stop_reason = (
                f"{len(failed)} of {len(wave)} devices of {which} failed, more than {options.max_fail_pct:g} %"
            )
    return FleetResult(
        action=action,
        results=tuple(outcomes[i] for i in range(len(devices))),
        seconds=time.monotonic() - started,
        stopped_by_canary=by_canary,
        stop_reason=stop_reason,
    )


def fleet_waves(count: int, canary: int = 0, batch: int = 0) -> list[list[int]]:
    """The device indexes of each wave, in order: the canary (when any), then batches of ``batch`` (0: the rest at once)."""
    canary = min(max(canary, 0), count)
    waves = [list(range(canary))] if canary else []
    rest = list(range(canary, count))
    size = batch if batch > 0 else len(rest)
    waves += [rest[i : i + size] for i in range(0, len(rest), size or 1)]
    return [w for w in waves if w]


def _run_wave(
    devices: list[Device],
    wave: list[int],
    operation: Operation[T],
    connect: Connector,
    options: FleetOptions,
    events: FleetEvents | None,
    registry: _Registry,
    action: str,
) -> Mapping[int, Outcome[T]]:
    outcomes: dict[int, Outcome[T]] = {}
    bugs: dict[int, BaseException] = {}
    workers = max(1, min(options.concurrency, len(wave)))
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"edgeq-{action}")
    try:
        futures = {
            executor.submit(_attempts, devices[i], operation, connect, options, events, registry): i for i in wave
        }
        for future in concurrent.futures.as_completed(futures):
            if future.cancelled():
                continue
            index = futures[future]
            bug = future.exception()
            if bug is None:
                outcomes[index] = future.result()
                continue
            # a bug: start no further device; the ones running finish (cutting them off would help nobody)
            bugs[index] = bug
            for other in futures:
                other.cancel()
    except BaseException:  # KeyboardInterrupt (or SystemExit): free the workers and go at once
        registry.cancel()
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
    if bugs:
        first = min(bugs)
        bug = bugs[first]
        others = len(bugs) - 1
        bug.add_note(
            f"edgeq: raised by the {action} operation on device {devices[first].name!r}"
            + (f" (and {others} other device{'s' if others != 1 else ''})" if others else "")
            + "; a bug, not a device failure: no further device was started"
        )
        raise bug
    return outcomes


def _attempts(
    device: Device,
    operation: Operation[T],
    connect: Connector,
    options: FleetOptions,
    events: FleetEvents | None,
    registry: _Registry,
) -> Outcome[T]:
    """Every attempt on one device; an edgeq error becomes its outcome, anything else propagates (a bug)."""
    started = time.monotonic()
    if events:
        events.started(device)

    def progress(done: int, total: int) -> None:
        if events:
            events.transferred(device, done, total)

    attempt = 0
    while True:
        attempt += 1
        conn = None
        error: EdgeqError | None = None
        value: T | None = None
        try:
            if registry.cancelled.is_set():
                raise EdgeqError(f"{device.name}: interrupted")
            conn = connect(device)
            registry.add(conn)
            with conn:
                value = operation(conn, device, progress)
        except DeviceUnreachableError as exc:
            if attempt <= options.retries and not registry.cancelled.is_set():
                delay = min(options.backoff_s * (2 ** (attempt - 1)), _MAX_BACKOFF_S)
                if events:
                    events.retrying(device, attempt, exc, delay)
                log.info("%s; retrying in %.1f s", exc, delay)
                registry.cancelled.wait(delay)
                continue
            error = exc
        except EdgeqError as exc:
            error = exc
        finally:
            if conn is not None:
                registry.discard(conn)
        outcome = Outcome(
            device=device.name,
            destination=device.destination,
            value=value,
            error=error,
            attempts=attempt,
            seconds=time.monotonic() - started,
        )
        if events:
            events.finished(outcome)
        return outcome
