"""The operations on one device: deploy, status, rollback, remove. The policy; the device script only carries it out.

Each operation is one :class:`~edgeq.deploy.session.Session` (one run of
``deploy.sh`` on one channel): it reads the model folder's state, decides
(what to upload, what to switch to, what to prune, what the manifest says
next) and tells the device. Nothing active changes before ``commit``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import DeviceNotReady, EdgeqError, InternalError, ModelStateError, RemoteCommandError
from ..fleet import DeviceStatus
from .manifest import (
    known_sha256,
    manifest_entry,
    manifest_history,
    manifest_line,
    manifest_versions,
    new_manifest,
    utc_now,
    version_infos,
    versions_to_prune,
)
from .model import ModelFile, model_dir, validate_model_name
from .results import DeviceResult, ModelCheckError, ModelState, device_result
from .session import FolderState, Session

if TYPE_CHECKING:
    from ..connection import Connection, ProgressCallback
    from ..devices import Device
    from ..targets import Target

__all__ = [
    "DEFAULT_KEEP_VERSIONS",
    "deploy_to_device",
    "read_status",
    "remove_from_device",
    "rollback_device",
    "rollback_target",
    "status_of_device",
]

DEFAULT_KEEP_VERSIONS = 3
_FREE_MARGIN_BYTES = 64 * 1024  # the sha256 file, the manifest, file-system slack


def deploy_to_device(
    conn: Connection,
    device: Device,
    model: ModelFile,
    *,
    keep: int | None = None,
    progress: ProgressCallback | None = None,
    target: Target | None = None,
) -> DeviceResult:
    """Deploy ``model`` to one device over ``conn``: upload (unless the version is there), verify, flush, switch.

    ``target``: the device's target; a device whose ISA it does not describe is left untouched (DeviceNotReady,
    from the state report the deploy reads anyway: no round trip of its own).
    """
    keep = keep or device.keep_versions or DEFAULT_KEEP_VERSIONS
    version = model.version
    warnings: list[str] = []
    sent = 0
    with Session(conn, "deploy", model_dir(device, model.name), device.python, transfer=True) as session:
        state = _switch_state(session, device)
        _check_target(session, device, target, state)
        previous = state.current
        verified = False
        if version in state.versions:
            session.send(f"activate {version} {model.sha256}")
            kind, rest = session.expect("verified", "damaged")
            verified = kind == "verified"
            if not verified:
                warnings.append(f"version {version} on the device was damaged ({rest}); uploaded again")
                if previous == version:
                    warnings.append("the active model was damaged and has been replaced")
        if verified and previous == version:
            recorded = state.manifest.get("current")
            if recorded == version:
                session.send("skip")
            else:  # active but not recorded (a run stopped between the two by an older edgeq, a hand edit): record it
                warnings.append(
                    f"manifest.json named {recorded or 'no version'} as active, not {version}; recorded now"
                )
                entry = manifest_versions(state.manifest).get(version) or manifest_entry(model)
                event = {"at": utc_now(), "action": "deploy", "version": version, "previous": recorded or None}
                repaired = new_manifest(model.name, state.manifest, current=version, event=event, add=entry)
                session.send("commit", manifest_line(repaired), "")
                warnings.extend(session.until_done("switched"))
            session.finish()
            return device_result(
                device,
                "deploy",
                model.name,
                DeviceStatus.UNCHANGED,
                version=version,
                previous=previous,
                warnings=tuple(session.notes + warnings),
            )
        if not verified:
            sent = _upload(session, device, model, state, progress)
        entry = manifest_entry(model)
        prune = versions_to_prune(state.manifest, state.versions, version, keep)
        event = {"at": entry["deployed_at"], "action": "deploy", "version": version, "previous": previous}
        updated = new_manifest(model.name, state.manifest, current=version, event=event, add=entry, drop=prune)
        session.send("commit", manifest_line(updated), " ".join(prune))
        warnings.extend(session.until_done("switched"))
        session.finish()
    return device_result(
        device,
        "deploy",
        model.name,
        DeviceStatus.OK,
        version=version,
        previous=previous,
        bytes_sent=sent,
        removed=tuple(prune),
        warnings=tuple(session.notes + warnings),
    )


def _switch_state(session: Session, device: Device) -> FolderState:
    """The state report of a deploy or rollback (their script creates the folder: it never reports it absent)."""
    state = session.state()
    if state is None:
        raise InternalError(f"{device.name}: the device reported no model folder")
    return state


def _check_target(session: Session, device: Device, target: Target | None, state: FolderState) -> None:
    if target is None or state.arch is None:
        return
    from ..doctor import target_mismatch

    problem = target_mismatch(target, state.arch, state.kernel_arch)
    if problem is not None:
        session.send("quit")
        raise DeviceNotReady(
            f"{device.name}: not ready to deploy: {problem.message}", hint=f"{problem.fix} (or --skip-checks)"
        )


def _upload(
    session: Session, device: Device, model: ModelFile, state: FolderState, progress: ProgressCallback | None
) -> int:
    """Send the model when the device has room for it; it is checked and flushed there (``verified``). The bytes sent."""
    needed = model.size_bytes + _FREE_MARGIN_BYTES
    if state.free_bytes is not None and state.free_bytes < needed:
        session.send("quit")
        raise RemoteCommandError(
            f"{device.name}: not enough space for {model.name}: it needs {_mb(needed)}, {_mb(state.free_bytes)} free in {device.remote_dir}",
            hint="free some space on the device (edgeq remove), or lower keep_versions",
        )
    session.send(f"upload {model.version} {model.sha256} {model.size_bytes}")
    try:
        sent = session.send_file(model.path, progress)
    except EdgeqError as exc:
        # The device may have stopped reading because the write failed (disk full): its reason comes first.
        reason = session.early_error()
        if reason:
            raise RemoteCommandError(f"{device.name}: {reason}") from exc
        raise
    session.expect("verified")
    return sent


def read_status(conn: Connection, device: Device, name: str) -> tuple[FolderState, str, str | None] | None:
    """The read-only status dialogue (no lock): the folder's state, manifest included, and the active file's check.

    The check is ``verified``, ``damaged`` (with why, the third item) or ``inactive``; None when there is no
    model folder. :func:`status_of_device` and the Ansible collection's check mode both read through this.
    """
    validate_model_name(name)
    with Session(conn, "status", model_dir(device, name), device.python) as session:
        state = session.state(ready=False)
        if state is None:
            session.finish()
            return None
        kind, rest = session.expect("verified", "damaged", "inactive")
        session.finish()
    return state, kind, rest if kind == "damaged" else None


def status_of_device(conn: Connection, device: Device, name: str) -> DeviceResult:
    """The active version of ``name`` on one device and whether its file still matches its sha256.

    A model that is absent, has no active version or does not match its sha256
    raises :class:`~edgeq.deploy.ModelCheckError`, with what was read on the device.
    """
    found = read_status(conn, device, name)
    if found is None:
        raise ModelCheckError(f"{device.name}: no model named {name!r} on the device")
    state, kind, rest = found
    intact = None if kind == "inactive" else kind == "verified"
    model_state = ModelState(
        name=name,
        current=state.current,
        intact=intact,
        detail=rest,
        versions=version_infos(state.manifest, state.versions, state.current),
        free_bytes=state.free_bytes,
    )
    if kind == "inactive":
        raise ModelCheckError(f"{device.name}: no active version", state=model_state)
    if not intact:
        raise ModelCheckError(
            f"{device.name}: active version {state.current} does not match its sha256: {rest}",
            hint=f"re-deploy it (edgeq deploy) or roll back (edgeq rollback --name {name})",
            version=state.current,
            state=model_state,
        )
    return device_result(device, "status", name, DeviceStatus.OK, version=state.current, state=model_state)


def rollback_device(conn: Connection, device: Device, name: str, to: str | None = None) -> DeviceResult:
    """Switch ``name`` back to the previously active version (or to the version ``to``, a unique prefix) after verifying it."""
    validate_model_name(name)
    with Session(conn, "rollback", model_dir(device, name), device.python) as session:
        state = _switch_state(session, device)
        previous = state.current
        try:
            target = rollback_target(state, to)
        except EdgeqError:
            session.send("quit")
            raise
        if target == previous:
            session.send("quit")
            session.finish()
            return device_result(device, "rollback", name, DeviceStatus.UNCHANGED, version=target, previous=previous)
        session.send(f"activate {target} {known_sha256(state.manifest, target) or '-'}")
        kind, rest = session.expect("verified", "damaged")
        if kind == "damaged":
            session.send("quit")
            raise ModelStateError(
                f"{device.name}: not rolling back to {target}: {rest}", hint="deploy that model again instead"
            )
        event = {"at": utc_now(), "action": "rollback", "version": target, "previous": previous}
        updated = new_manifest(name, state.manifest, current=target, event=event)
        session.send("commit", manifest_line(updated), "")
        warnings = session.until_done("switched")
        session.finish()
    return device_result(
        device,
        "rollback",
        name,
        DeviceStatus.OK,
        version=target,
        previous=previous,
        warnings=tuple(session.notes + warnings),
    )


def rollback_target(state: FolderState, to: str | None) -> str:
    """The version ``to`` names (a unique prefix), else the last one active before the current one and still there."""
    if to:
        matches = [v for v in state.versions if v.startswith(to.lower())]
        if len(matches) == 1:
            return matches[0]
        listed = ", ".join(state.versions) or "none"
        if not matches:
            raise ModelStateError(f"no version {to!r} on the device (it has: {listed})")
        raise ModelStateError(f"version {to!r} is ambiguous on the device (it has: {listed})", hint="give more digits")
    for event in reversed(manifest_history(state.manifest)):
        version = event["version"]
        if version != state.current and version in state.versions:
            return version
    others = [v for v in state.versions if v != state.current]
    if others:
        raise ModelStateError(
            f"the device has no history of earlier activations; choose one of {', '.join(others)}",
            hint="edgeq rollback --to VERSION",
        )
    raise ModelStateError("no earlier version on the device to roll back to")


def remove_from_device(conn: Connection, device: Device, name: str, versions: Sequence[str] = ()) -> DeviceResult:
    """Delete ``name`` from one device: all of it, or only ``versions`` (never the active one)."""
    validate_model_name(name)
    with Session(conn, "remove", model_dir(device, name), device.python) as session:
        state = session.state()
        if state is None:
            session.finish()
            return device_result(
                device, "remove", name, DeviceStatus.UNCHANGED, reason=f"no model named {name!r} on the device"
            )
        previous = state.current
        if not versions:
            session.send("all")
            session.expect("done")
            session.finish()
            return device_result(device, "remove", name, DeviceStatus.OK, previous=previous, removed=state.versions)
        chosen: list[str] = []
        for wanted in versions:
            matches = [v for v in state.versions if v.startswith(wanted.lower())]
            if len(matches) > 1:
                session.send("quit")
                raise ModelStateError(
                    f"{device.name}: version {wanted!r} is ambiguous (it has: {', '.join(state.versions)})"
                )
            chosen.extend(m for m in matches if m not in chosen)
        if previous in chosen:
            session.send("quit")
            raise ModelStateError(
                f"{device.name}: {previous} is the active version of {name}; not removing it",
                hint=f"roll back first (edgeq rollback --name {name}), or remove the whole model",
            )
        if not chosen:
            session.send("quit")
            session.finish()
            return device_result(
                device,
                "remove",
                name,
                DeviceStatus.UNCHANGED,
                version=previous,
                reason="none of those versions is on the device",
            )
        event = {"at": utc_now(), "action": "remove", "version": previous or "-", "removed": chosen}
        updated = new_manifest(name, state.manifest, current=previous or "", event=event, drop=chosen)
        session.send("versions " + " ".join(chosen), manifest_line(updated))
        warnings = session.until_done()
        session.finish()
    return device_result(
        device,
        "remove",
        name,
        DeviceStatus.OK,
        version=previous,
        previous=previous,
        removed=tuple(chosen),
        warnings=tuple(session.notes + warnings),
    )


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
