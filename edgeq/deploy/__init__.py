"""Versioned, verified, atomic model deploys to devices and fleets; status, rollback and removal.

Layout on a device (``remote_dir`` is relative to the login user's home
unless absolute; the default is ``edgeq``)::

    <remote_dir>/models/<name>/
        current -> 3f2a9c0d1b7e          symlink to the active version, switched atomically
        3f2a9c0d1b7e/model.tflite        a version: its name is the first 12 hex digits of the sha256
        3f2a9c0d1b7e/model.tflite.sha256 the full sha256, written before the model is moved in
        manifest.json                    what was deployed, when, its hash; the history of switches
        .incoming/                       uploads in progress (temporary names, never active)
        .lock                            flock(1) lock while a deploy, rollback or removal runs; names its holder
        .manifest.<version>.pending      the journal of a switch in progress (see below)

The device side is ``edgeq/remote/deploy.sh`` (policy here, shell there).
A deploy is ONE run of it on ONE channel (one round trip fewer than
"inspect, then upload": on loopback a session costs as much as sending 9 MB).
The script reports the device's state; edgeq answers; the model is streamed
into a temporary file, its size and sha256 are checked ON THE DEVICE, it is
flushed (fsync), renamed into its version folder and reported ``verified``;
only when edgeq then sends ``commit`` does ``current`` switch: a temporary
symlink renamed over it (``mv -T``, else Python's ``os.replace``). A cut
connection at any point leaves the previous model active and intact: before
``commit`` nothing active has changed, and the switch itself is one rename.

The new manifest is written first as a journal, then ``current`` switches,
then the journal becomes ``manifest.json``; the script ignores HUP, INT, TERM
and PIPE meanwhile, and the next command that takes the lock finishes a
switch that was stopped half way (so ``manifest.json`` always ends up naming
the active version; a deploy that finds them apart all the same records it).
While the script waits for edgeq it gives up after ``3 x --connect-timeout``
(clamped to 3-60 s) without a word from it, releasing the lock. The last
``keep`` versions by activation are kept and the active one never removed.

Modules, one concern each:

* ``model``: the local model file (name, sha256, version) and its folder on a device;
* ``results``: what the operations return (:class:`DeviceResult`, :class:`DeployFleetResult`, ...);
* ``manifest``: ``manifest.json`` as data: entries, history, the next manifest, what to prune;
* ``session``: one run of ``deploy.sh`` speaking its line protocol over a :class:`~edgeq.connection.Connection`;
* ``device``: the operations on one device (the policy): deploy, status, rollback, remove;
* this module: the same operations on fleets, through :func:`edgeq.fleet.run_fleet` (bounded
  concurrency, transport errors retried, canary devices first); each device's outcome becomes a
  :class:`DeviceResult`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..errors import EdgeqError, InternalError
from ..fleet import (
    Connector,
    DeviceReport,
    DeviceStatus,
    FleetEvents,
    FleetOptions,
    Outcome,
    ProgressCallback,
    run_fleet,
)
from .device import DEFAULT_KEEP_VERSIONS, deploy_to_device, remove_from_device, rollback_device, status_of_device
from .model import ModelFile, model_dir, prepare_model, validate_model_name
from .results import (
    DeployFleetResult,
    DeviceResult,
    ModelCheckError,
    ModelState,
    VersionInfo,
    device_result,
    result_from_outcome,
)

if TYPE_CHECKING:
    from ..connection import Connection
    from ..devices import Device
    from ..targets import Target

__all__ = [
    "DEFAULT_KEEP_VERSIONS",
    "DeployFleetResult",
    "DeviceResult",
    "DeviceStatus",
    "FleetOptions",
    "ModelCheckError",
    "ModelFile",
    "ModelState",
    "VersionInfo",
    "deploy_fleet",
    "deploy_to_device",
    "device_result",
    "model_dir",
    "prepare_model",
    "remove_fleet",
    "remove_from_device",
    "rollback_device",
    "rollback_fleet",
    "status_fleet",
    "status_of_device",
    "validate_model_name",
]

_VERSION_ARG_RE = re.compile(r"[0-9a-fA-F]{4,12}")


def deploy_fleet(
    devices: Sequence[Device],
    model: ModelFile,
    *,
    connect: Connector,
    keep: int | None = None,
    options: FleetOptions = FleetOptions(),
    events: FleetEvents | None = None,
    device_targets: Callable[[str | None], Target | None] | None = None,
) -> DeployFleetResult:
    """Deploy ``model`` to every device (see :func:`deploy_to_device` and :func:`edgeq.fleet.run_fleet`).

    ``device_targets(name)``: each device's target, checked against the device (a device of another ISA is
    left untouched); None: not checked.
    """

    def operation(conn: Connection, device: Device, progress: ProgressCallback) -> DeviceResult:
        target = device_targets(device.target) if device_targets is not None else None
        return deploy_to_device(conn, device, model, keep=keep, progress=progress, target=target)

    return _run(
        devices,
        operation,
        connect=connect,
        action="deploy",
        model=model.name,
        version=model.version,
        options=options,
        events=events,
    )


def status_fleet(
    devices: Sequence[Device],
    name: str,
    *,
    connect: Connector,
    options: FleetOptions = FleetOptions(),
    events: FleetEvents | None = None,
) -> DeployFleetResult:
    """The state of ``name`` on every device (see :func:`status_of_device`)."""
    validate_model_name(name)
    return _run(
        devices,
        lambda c, d, p: status_of_device(c, d, name),
        connect=connect,
        action="status",
        model=name,
        options=options,
        events=events,
    )


def rollback_fleet(
    devices: Sequence[Device],
    name: str,
    *,
    to: str | None = None,
    connect: Connector,
    options: FleetOptions = FleetOptions(),
    events: FleetEvents | None = None,
) -> DeployFleetResult:
    """Roll ``name`` back on every device (see :func:`rollback_device`)."""
    validate_model_name(name)
    if to is not None and not _VERSION_ARG_RE.fullmatch(to):
        raise EdgeqError(f"--to {to!r} is not a version (4 to 12 hex digits, as edgeq status shows them)")
    return _run(
        devices,
        lambda c, d, p: rollback_device(c, d, name, to),
        connect=connect,
        action="rollback",
        model=name,
        version=to,
        options=options,
        events=events,
    )


def remove_fleet(
    devices: Sequence[Device],
    name: str,
    *,
    versions: Sequence[str] = (),
    connect: Connector,
    options: FleetOptions = FleetOptions(),
    events: FleetEvents | None = None,
) -> DeployFleetResult:
    """Remove ``name`` (or some of its versions) from every device (see :func:`remove_from_device`)."""
    validate_model_name(name)
    for version in versions:
        if not _VERSION_ARG_RE.fullmatch(version):
            raise EdgeqError(f"--version {version!r} is not a version (4 to 12 hex digits)")
    return _run(
        devices,
        lambda c, d, p: remove_from_device(c, d, name, versions),
        connect=connect,
        action="remove",
        model=name,
        options=options,
        events=events,
    )


# --------------------------------------------------------------------------- the fleet runner, in DeviceResults


class _Relay:
    """Passes the fleet runner's events on, each finished device as a :class:`DeviceResult`."""

    def __init__(self, events: FleetEvents, action: str, model: str):
        self.events = events
        self.action = action
        self.model = model

    def started(self, device: Device) -> None:
        self.events.started(device)

    def transferred(self, device: Device, done: int, total: int) -> None:
        self.events.transferred(device, done, total)

    def retrying(self, device: Device, attempt: int, error: EdgeqError, delay_s: float) -> None:
        self.events.retrying(device, attempt, error, delay_s)

    def finished(self, result: DeviceReport) -> None:
        if not isinstance(result, Outcome):  # the runner reports Outcomes
            raise InternalError(f"unexpected fleet report {result!r}")
        self.events.finished(result_from_outcome(result, self.action, self.model))


def _run(
    devices: Sequence[Device],
    operation: Callable[[Connection, Device, ProgressCallback], DeviceResult],
    *,
    connect: Connector,
    action: str,
    model: str,
    version: str | None = None,
    options: FleetOptions,
    events: FleetEvents | None,
) -> DeployFleetResult:
    fleet = run_fleet(
        devices,
        operation,
        connect=connect,
        options=options,
        events=_Relay(events, action, model) if events else None,
        action=action,
    )
    return DeployFleetResult(
        action=action,
        model=model,
        version=version,
        results=tuple(result_from_outcome(outcome, action, model) for outcome in fleet.results),
        seconds=fleet.seconds,
        stopped_by_canary=fleet.stopped_by_canary,
    )
