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

import copy
import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..errors import EdgeqError, HealthCheckFailed, InternalError, ModelStateError, RolledBack
from ..fleet import (
    Connector,
    DeviceReport,
    DeviceStatus,
    FleetEvents,
    FleetOptions,
    Outcome,
    ProgressCallback,
    reason_of,
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
    from ..health import Health, HealthOptions
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
    check_target: bool = True,
    health: HealthOptions | None = None,
    undo: bool = True,
) -> DeployFleetResult:
    """Deploy ``model`` to every device (see :func:`deploy_to_device` and :func:`edgeq.fleet.run_fleet`).

    ``device_targets(name)``: each device's target (its Python and runtimes for the health check), checked
    against the device unless ``check_target`` is False (a device of another ISA is left untouched).
    ``health``: after the switch, :func:`edgeq.health.check_health` runs on the device; a device that fails
    it is switched back at once (to the version it had; a first deploy is removed) and fails with
    HealthCheckFailed. Rollback needs the previous version, so at least 2 versions are kept then.
    ``options.canary`` / ``batch`` / ``max_fail_pct`` stage the rollout; when it stops, the devices it had
    switched are switched back (``undo``), each reported ``undone`` with the version it runs.
    """
    from ..health import check_health

    def operation(conn: Connection, device: Device, progress: ProgressCallback) -> DeviceResult:
        target = device_targets(device.target) if device_targets is not None else None
        versions = keep if health is None else max(keep or device.keep_versions or DEFAULT_KEEP_VERSIONS, 2)
        result = deploy_to_device(
            conn, device, model, keep=versions, progress=progress, target=target if check_target else None
        )
        if health is None:
            return result
        switched = result.status is DeviceStatus.OK and result.previous != result.version
        # already active: checked unless it never was (a run that lost the device during its check, then retried
        # or re-run, finds the version active and must not leave it unchecked); what came before is in the manifest
        unchecked = result.status is DeviceStatus.UNCHANGED and not has_baseline(conn, device, model)
        if not (switched or unchecked):
            return result
        previous = result.previous if switched else None
        found = check_health(conn, device, model, health, previous=previous, target=target)
        if found.ok:
            write_baseline(conn, device, model, found)
            return dataclasses.replace(result, health=found)
        final = _switch_back(conn, device, model.name, previous, from_manifest=not switched)
        back = f"rolled back to {final}" if final else "removed (it was the first version on the device)"
        raise HealthCheckFailed(
            f"{device.name}: version {model.version} failed its health check ({found.failure}): {found.reason}; {back}",
            version=final,
            health=found,
        )

    fleet = _run(
        devices,
        operation,
        connect=connect,
        action="deploy",
        model=model.name,
        version=model.version,
        options=options,
        events=events,
    )
    if fleet.stop_reason is None or not undo:
        return fleet
    return _undo_rollout(fleet, devices, connect=connect, options=options, events=events)


BASELINE_FILE = "baseline.json"  # beside a version's model.tflite: its health check at deploy time


def write_baseline(conn: Connection, device: Device, model: ModelFile, health: Health) -> None:
    """Keep the passed health check beside the version on the device (atomic put): `edgeq check` compares with it."""
    import json

    from ..remote import put_bytes
    from .manifest import utc_now

    data = json.dumps(health.baseline(model, utc_now()), indent=1).encode()
    put_bytes(conn, data, f"{model_dir(device, model.name)}/{model.version}/{BASELINE_FILE}")


def has_baseline(conn: Connection, device: Device, model: ModelFile) -> bool:
    """Whether this version passed a health check on the device (its ``baseline.json`` is there)."""
    import shlex

    path = f"{model_dir(device, model.name)}/{model.version}/{BASELINE_FILE}"
    return (
        conn.run(f"test -f {shlex.quote(path)}", conn.options.command_timeout_s, check=False, label="check").exit_status
        == 0
    )


def _switch_back(
    conn: Connection, device: Device, name: str, previous: str | None, *, from_manifest: bool = False
) -> str | None:
    """Make ``previous`` active again (None: remove the model, which was not on the device before); what is active after.

    ``from_manifest``: ``previous`` is not known here; the version active before the current one, as the
    manifest's history says (rollback's own default), else the model is removed.
    """
    if from_manifest:
        try:
            return rollback_device(conn, device, name).version
        except ModelStateError:  # no earlier version to go back to
            previous = None
    if previous is None:
        remove_from_device(conn, device, name)
        return None
    return rollback_device(conn, device, name, to=previous).version


def _undo_rollout(
    fleet: DeployFleetResult,
    devices: Sequence[Device],
    *,
    connect: Connector,
    options: FleetOptions,
    events: FleetEvents | None,
) -> DeployFleetResult:
    """Switch back every device the stopped rollout switched; each becomes ``undone`` (or says why it could not)."""
    switched = {
        r.device: r for r in fleet.results if r.status is DeviceStatus.OK and r.version and r.version != r.previous
    }
    if not switched:
        return dataclasses.replace(fleet, undone=True)
    chosen = [d for d in devices if d.name in switched]

    def operation(conn: Connection, device: Device, _progress: ProgressCallback) -> str | None:
        return _switch_back(conn, device, fleet.model, switched[device.name].previous)

    back = run_fleet(
        chosen,
        operation,
        connect=connect,
        options=dataclasses.replace(options, canary=0, batch=0, max_fail_pct=None),
        action="undo",
    )
    results = {r.device: r for r in fleet.results}
    for outcome in back.results:
        before = switched[outcome.device]
        if outcome.error is None:
            now = outcome.value
            where = f"switched back to {now}" if now else "removed again (it was the first version there)"
            error: EdgeqError = RolledBack(
                f"{outcome.device}: {where}: the rollout stopped ({fleet.stop_reason})", version=now
            )
        else:
            error = copy.copy(outcome.error)  # its kind and code say why switching back failed
            error.message = (
                f"{outcome.device}: runs the new version {before.version}: switching it back failed "
                f"({reason_of(outcome.error, outcome.device)}); the rollout stopped ({fleet.stop_reason})"
            )
            error.version = before.version  # type: ignore[attr-defined]  # what the device runs, for the report
        undone = result_from_outcome(Outcome(outcome.device, outcome.destination, error=error), "deploy", fleet.model)
        results[outcome.device] = dataclasses.replace(undone, previous=before.previous, bytes_sent=before.bytes_sent)
    return dataclasses.replace(fleet, results=tuple(results[r.device] for r in fleet.results), undone=True)


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
        stop_reason=fleet.stop_reason,
    )
