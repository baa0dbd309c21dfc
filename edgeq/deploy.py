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
Fleets go through :func:`edgeq.fleet.run_fleet` (bounded concurrency,
transport errors retried, canary devices first); each device's outcome
becomes a :class:`DeviceResult`, this module's own result type.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import posixpath
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, remote
from .errors import EdgeqError, InternalError, ModelError, ModelStateError, RemoteCommandError
from .fleet import (
    Connector,
    DeviceReport,
    DeviceStatus,
    FleetEvents,
    FleetOptions,
    Outcome,
    ProgressCallback,
    reason_of,
    run_fleet,
    status_of,
)
from .types import to_jsonable

if TYPE_CHECKING:  # the connection module imports paramiko: only when a connection is really made
    from .connection import Connection
    from .inventory import Device

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

log = logging.getLogger(__name__)

DEFAULT_KEEP_VERSIONS = 3
_HISTORY_LIMIT = 100
_FREE_MARGIN_BYTES = 64 * 1024  # the sha256 file, the manifest, file-system slack
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION_RE = re.compile(r"^[0-9a-f]{12}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """A local model about to be deployed: its name on devices, its hash and version."""

    path: str
    name: str
    sha256: str
    size_bytes: int

    @property
    def version(self) -> str:
        return self.sha256[:12]


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    """One version of a model on a device, from its folder and the manifest."""

    version: str
    sha256: str | None = None
    size_bytes: int | None = None
    deployed_at: str | None = None
    source: str | None = None
    active: bool = False


@dataclasses.dataclass(frozen=True)
class ModelState:
    """A model on one device: the active version, whether its file matches its hash, the versions kept."""

    name: str
    current: str | None
    intact: bool | None  # None: no active version to check
    detail: str | None  # why it is not intact
    versions: tuple[VersionInfo, ...]
    free_bytes: int | None = None


@dataclasses.dataclass(frozen=True)
class DeviceResult:
    """What one operation (deploy, status, rollback, remove) did on one device.

    ``code`` and ``kind`` say what a failure was: the exit code and kind of
    the edgeq error behind it (``0`` and ``None`` when the device succeeded).
    """

    device: str
    destination: str
    action: str  # "deploy" | "status" | "rollback" | "remove"
    model: str
    status: DeviceStatus
    code: int = 0
    kind: str | None = None
    version: str | None = None  # active version afterwards
    previous: str | None = None  # active version before
    reason: str | None = None
    hint: str | None = None
    bytes_sent: int = 0
    seconds: float = 0.0
    attempts: int = 0
    state: ModelState | None = None
    removed: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


class ModelCheckError(ModelStateError):
    """``status`` found the model absent, without an active version, or damaged; what it read comes along."""

    def __init__(
        self, message: str, hint: str | None = None, *, version: str | None = None, state: ModelState | None = None
    ):
        super().__init__(message, hint)
        self.version = version
        self.state = state


@dataclasses.dataclass(frozen=True)
class DeployFleetResult:
    """Every device of a deploy, status, rollback or removal, in the order given."""

    action: str
    model: str
    version: str | None
    results: tuple[DeviceResult, ...]
    seconds: float
    stopped_by_canary: bool = False

    @property
    def ok(self) -> bool:
        return all(r.status.succeeded for r in self.results)

    @property
    def failures(self) -> tuple[DeviceResult, ...]:
        return tuple(r for r in self.results if not r.status.succeeded)

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for r in self.results if r.status is s) for s in DeviceStatus}

    def to_dict(self) -> dict[str, Any]:
        data = to_jsonable(self)
        data["ok"] = self.ok
        data["counts"] = self.counts()
        return data


# --------------------------------------------------------------------------- names and models


def validate_model_name(name: str) -> str:
    """A model name is one safe file name: letters, digits, ``.``, ``_``, ``-``; at most 64; not starting with a dot."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise EdgeqError(
            f"model name {name!r} is not a safe file name",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. --name digits-int8)",
        )
    return name


def prepare_model(path: str | Path, name: str | None = None) -> ModelFile:
    """Check a local .tflite file, hash it and name it (``name`` defaults to the file's stem)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file" if not path.exists() else f"{path} is not a file")
    model_name = name if name is not None else path.stem
    if name is None and not _NAME_RE.match(model_name):
        raise EdgeqError(
            f"the file name {path.name!r} does not make a safe model name",
            hint="give one with --name (letters, digits, '.', '_', '-')",
        )
    validate_model_name(model_name)
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            digest.update(head)
            size += len(head)
            while block := handle.read(1 << 20):
                digest.update(block)
                size += len(block)
    except OSError as exc:
        raise ModelError(f"{path}: {exc.strerror or exc}") from exc
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise ModelError(
            f"{path} is not a TFLite model (no TFL3 identifier)",
            hint="deploy the .tflite file that edgeq convert wrote",
        )
    return ModelFile(path=str(path), name=model_name, sha256=digest.hexdigest(), size_bytes=size)


def model_dir(device: Device, name: str) -> str:
    """Where ``name``'s versions live on ``device`` (relative paths are under the login user's home)."""
    base = device.remote_dir
    if not base.startswith("/") and not base.startswith("./"):
        base = "./" + base  # never let a path start with "-" in a command
    return posixpath.join(base, "models", validate_model_name(name))


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- the device side's dialogue


@dataclasses.dataclass(frozen=True)
class _State:
    current: str | None
    versions: tuple[str, ...]
    free_bytes: int | None
    manifest: dict


class _Session:
    """One run of ``deploy.sh`` (``action``: deploy, rollback, status, remove) speaking its line protocol, on one channel.

    ``note`` lines (what the device finished for a stopped earlier run) are
    collected in ``notes`` wherever they come.
    """

    def __init__(self, conn: Connection, action: str, directory: str, python: str, timeout_s: float):
        self.label = conn.label
        self.notes: list[str] = []
        script = remote.script("deploy.sh", conn.edgeq_dir)
        command = remote.script_command(
            script, action, directory, python or "python3", secrets.token_hex(6), str(_idle_s(conn))
        )
        self.process = conn.start(command, timeout_s, label=action, requires=(script,), await_output=True)

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc) -> None:
        self.process.close()

    def line(self) -> str:
        """The next protocol line; a closed stream or an ``error`` line becomes an edgeq error."""
        line = self.process.readline()
        while line is not None and line.startswith("note "):
            self.notes.append(line[5:])
            line = self.process.readline()
        if line is None:
            result = self.process.wait(check=False)  # raises if the connection was lost or the command timed out
            detail = result.stderr.strip()[-400:] or f"exit status {result.exit_status}"
            raise RemoteCommandError(f"{self.label}: the remote script ended early: {detail}")
        if line.startswith("error "):
            raise RemoteCommandError(f"{self.label}: {line[6:]}")
        return line

    def expect(self, *kinds: str) -> tuple[str, str]:
        line = self.line()
        kind, _, rest = line.partition(" ")
        if kind not in kinds:
            raise RemoteCommandError(
                f"{self.label}: unexpected answer from the device: {line[:200]!r} (expected {' or '.join(kinds)})"
            )
        return kind, rest

    def send(self, *lines: str) -> None:
        self.process.write("".join(line + "\n" for line in lines).encode("utf-8"))

    def state(self, ready: bool = True) -> _State | None:
        """The state report (and the ``ready`` after it); None when the model folder does not exist (status and remove only)."""
        first = self.line()
        if first != "edgeq-state 1":
            raise RemoteCommandError(f"{self.label}: unexpected answer from the device: {first[:200]!r}")
        values: dict[str, str] = {}
        while True:
            kind, rest = self.expect("current", "versions", "free_kb", "manifest", "absent")
            if kind == "absent":
                return None
            values[kind] = rest
            if kind == "manifest":
                break
        size = int(values["manifest"]) if values["manifest"].isdigit() else 0
        manifest: dict = {}
        if size:
            raw = self.process.read_exact(size)
            try:
                loaded = json.loads(raw.decode("utf-8"))
                manifest = loaded if isinstance(loaded, dict) else {}
            except (UnicodeDecodeError, json.JSONDecodeError):
                log.warning("%s: manifest.json is not valid JSON; starting a new one", self.label)
        if ready:
            self.expect("ready")
        current = values.get("current", "-")
        free = values.get("free_kb", "-")
        return _State(
            current=None if current == "-" else current,
            versions=tuple(v for v in values.get("versions", "-").split() if _VERSION_RE.match(v)),
            free_bytes=int(free) * 1024 if free.isdigit() else None,
            manifest=manifest,
        )

    def finish(self) -> None:
        self.process.wait(check=True)


def _session_timeout(conn: Connection, transfer: bool) -> float:
    options = conn.options
    return options.command_timeout_s + (options.transfer_timeout_s if transfer else 0.0)


def _idle_s(conn: Connection) -> int:
    """How long the device waits for a word from edgeq before it takes edgeq (or the link) for gone.

    edgeq answers the device at once and streams uploads without pause, so
    silence is a dead client or link; ``--connect-timeout`` is how long edgeq
    itself waits for a silent peer, and three of them are a generous margin.
    """
    return int(min(60.0, max(3.0, 3 * conn.options.connect_timeout_s)))


# --------------------------------------------------------------------------- the manifest


def _manifest_versions(manifest: dict) -> dict[str, dict]:
    versions = manifest.get("versions")
    return {k: v for k, v in versions.items() if isinstance(v, dict)} if isinstance(versions, dict) else {}


def _manifest_history(manifest: dict) -> list[dict]:
    history = manifest.get("history")
    return (
        [e for e in history if isinstance(e, dict) and isinstance(e.get("version"), str)]
        if isinstance(history, list)
        else []
    )


def _new_manifest(
    name: str, manifest: dict, *, current: str, event: dict, add: dict | None = None, drop: Iterable[str] = ()
) -> dict:
    versions = _manifest_versions(manifest)
    if add:
        versions[current] = add
    for version in drop:
        versions.pop(version, None)
    history = (_manifest_history(manifest) + [event])[-_HISTORY_LIMIT:]
    return {
        "format": 1,
        "model": name,
        "current": current,
        "updated_at": event["at"],
        "versions": versions,
        "history": history,
    }


def _manifest_line(manifest: dict) -> str:
    return json.dumps(
        manifest, separators=(",", ":"), sort_keys=True, ensure_ascii=True
    )  # one line, ASCII: safe for `read -r`


def _versions_to_prune(state: _State, current: str, keep: int) -> list[str]:
    """Versions beyond the ``keep`` most recently activated ones; never ``current``."""
    rank: dict[str, int] = {}
    for index, event in enumerate(_manifest_history(state.manifest)):
        rank[event["version"]] = index
    rank[current] = 1 << 30
    on_device = sorted(set(state.versions) | {current}, key=lambda v: rank.get(v, -1), reverse=True)
    return [v for v in on_device[keep:] if v != current]


def _version_infos(state: _State) -> tuple[VersionInfo, ...]:
    known = _manifest_versions(state.manifest)
    infos = []
    for version in state.versions:
        entry = known.get(version, {})
        infos.append(
            VersionInfo(
                version=version,
                sha256=entry.get("sha256"),
                size_bytes=entry.get("size_bytes"),
                deployed_at=entry.get("deployed_at"),
                source=entry.get("source"),
                active=version == state.current,
            )
        )
    return tuple(sorted(infos, key=lambda i: (i.deployed_at or "", i.version), reverse=True))


# --------------------------------------------------------------------------- one device


def device_result(device: Device, action: str, model: str, status: DeviceStatus, **kwargs: Any) -> DeviceResult:
    """A :class:`DeviceResult` for ``device`` (what the one-device operations return)."""
    return DeviceResult(
        device=device.name, destination=device.destination, action=action, model=model, status=status, **kwargs
    )


def deploy_to_device(
    conn: Connection,
    device: Device,
    model: ModelFile,
    *,
    keep: int | None = None,
    progress: ProgressCallback | None = None,
) -> DeviceResult:
    """Deploy ``model`` to one device over ``conn``: upload (unless the version is there), verify, flush, switch."""
    keep = keep or device.keep_versions or DEFAULT_KEEP_VERSIONS
    version = model.version
    warnings: list[str] = []
    sent = 0
    with _Session(
        conn, "deploy", model_dir(device, model.name), device.python, _session_timeout(conn, transfer=True)
    ) as session:
        state = session.state()
        if state is None:  # the switch script creates the folder: it never reports it absent
            raise InternalError(f"{device.name}: the device reported no model folder")
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
                entry = _manifest_versions(state.manifest).get(version) or _manifest_entry(model)
                event = {"at": _now(), "action": "deploy", "version": version, "previous": recorded or None}
                repaired = _new_manifest(model.name, state.manifest, current=version, event=event, add=entry)
                session.send("commit", _manifest_line(repaired), "")
                warnings.extend(_until_done(session))
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
            needed = model.size_bytes + _FREE_MARGIN_BYTES
            if state.free_bytes is not None and state.free_bytes < needed:
                session.send("quit")
                raise RemoteCommandError(
                    f"{device.name}: not enough space for {model.name}: it needs {_mb(needed)}, {_mb(state.free_bytes)} free in {device.remote_dir}",
                    hint="free some space on the device (edgeq remove), or lower keep_versions",
                )
            session.send(f"upload {version} {model.sha256} {model.size_bytes}")
            try:
                sent = session.process.send_file(model.path, progress)
            except EdgeqError as exc:
                # The device may have stopped reading because the write failed (disk full): its reason comes first.
                reason = _early_error(session)
                if reason:
                    raise RemoteCommandError(f"{device.name}: {reason}") from exc
                raise
            session.expect("verified")
        manifest = state.manifest
        entry = _manifest_entry(model)
        prune = _versions_to_prune(state, version, keep)
        event = {"at": entry["deployed_at"], "action": "deploy", "version": version, "previous": previous}
        new_manifest = _new_manifest(model.name, manifest, current=version, event=event, add=entry, drop=prune)
        session.send("commit", _manifest_line(new_manifest), " ".join(prune))
        warnings.extend(_until_done(session))
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


def _manifest_entry(model: ModelFile) -> dict[str, Any]:
    return {
        "sha256": model.sha256,
        "size_bytes": model.size_bytes,
        "deployed_at": _now(),
        "source": Path(model.path).name,
        "edgeq": __version__,
    }


def _early_error(session: _Session) -> str | None:
    try:
        for _ in range(20):
            line = session.process.readline()
            if line is None:
                return None
            if line.startswith("error "):
                return line[6:]
    except EdgeqError:
        return None
    return None


def _until_done(session: _Session) -> list[str]:
    warnings = []
    while True:
        kind, rest = session.expect("switched", "warning", "done")
        if kind == "warning":
            warnings.append(rest)
        if kind == "done":
            return warnings


def status_of_device(conn: Connection, device: Device, name: str) -> DeviceResult:
    """The active version of ``name`` on one device and whether its file still matches its sha256.

    A model that is absent, has no active version or does not match its sha256
    raises :class:`ModelCheckError`, with what was read on the device.
    """
    validate_model_name(name)
    with _Session(
        conn, "status", model_dir(device, name), device.python, _session_timeout(conn, transfer=False)
    ) as session:
        state = session.state(ready=False)
        if state is None:
            session.finish()
            raise ModelCheckError(f"{device.name}: no model named {name!r} on the device")
        kind, rest = session.expect("verified", "damaged", "inactive")
        session.finish()
    intact = None if kind == "inactive" else kind == "verified"
    model_state = ModelState(
        name=name,
        current=state.current,
        intact=intact,
        detail=rest if kind == "damaged" else None,
        versions=_version_infos(state),
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
    with _Session(
        conn, "rollback", model_dir(device, name), device.python, _session_timeout(conn, transfer=False)
    ) as session:
        state = session.state()
        if state is None:  # the switch script creates the folder: it never reports it absent
            raise InternalError(f"{device.name}: the device reported no model folder")
        previous = state.current
        try:
            target = _rollback_target(state, to)
        except EdgeqError:
            session.send("quit")
            raise
        if target == previous:
            session.send("quit")
            session.finish()
            return device_result(device, "rollback", name, DeviceStatus.UNCHANGED, version=target, previous=previous)
        known = _manifest_versions(state.manifest).get(target, {})
        expected = (
            known.get("sha256") if isinstance(known.get("sha256"), str) and _SHA_RE.match(known["sha256"]) else "-"
        )
        session.send(f"activate {target} {expected}")
        kind, rest = session.expect("verified", "damaged")
        if kind == "damaged":
            session.send("quit")
            raise ModelStateError(
                f"{device.name}: not rolling back to {target}: {rest}", hint="deploy that model again instead"
            )
        event = {"at": _now(), "action": "rollback", "version": target, "previous": previous}
        new_manifest = _new_manifest(name, state.manifest, current=target, event=event)
        session.send("commit", _manifest_line(new_manifest), "")
        warnings = _until_done(session)
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


def _rollback_target(state: _State, to: str | None) -> str:
    if to:
        matches = [v for v in state.versions if v.startswith(to.lower())]
        if len(matches) == 1:
            return matches[0]
        listed = ", ".join(state.versions) or "none"
        if not matches:
            raise ModelStateError(f"no version {to!r} on the device (it has: {listed})")
        raise ModelStateError(f"version {to!r} is ambiguous on the device (it has: {listed})", hint="give more digits")
    for event in reversed(_manifest_history(state.manifest)):
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
    with _Session(
        conn, "remove", model_dir(device, name), device.python, _session_timeout(conn, transfer=False)
    ) as session:
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
        event = {"at": _now(), "action": "remove", "version": previous or "-", "removed": chosen}
        manifest = _new_manifest(name, state.manifest, current=previous or "", event=event, drop=chosen)
        session.send("versions " + " ".join(chosen), _manifest_line(manifest))
        warnings = []
        while True:
            kind, rest = session.expect("warning", "done")
            if kind == "done":
                break
            warnings.append(rest)
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


# --------------------------------------------------------------------------- fleets


def _as_device_result(outcome: Outcome[DeviceResult], action: str, model: str) -> DeviceResult:
    """A fleet runner's outcome as this module's result: the operation's own, or one made from its error."""
    if outcome.value is not None:
        return dataclasses.replace(outcome.value, attempts=outcome.attempts, seconds=outcome.seconds)
    error = outcome.error
    if error is None:  # the operations below always return a result
        raise InternalError(f"{outcome.device}: {action} returned nothing")
    checked = error if isinstance(error, ModelCheckError) else None
    return DeviceResult(
        device=outcome.device,
        destination=outcome.destination,
        action=action,
        model=model,
        status=status_of(error),
        code=error.exit_code,
        kind=error.kind,
        version=checked.version if checked else None,
        reason=reason_of(error, outcome.device),
        hint=error.hint,
        attempts=outcome.attempts,
        seconds=outcome.seconds,
        state=checked.state if checked else None,
    )


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
        self.events.finished(_as_device_result(result, self.action, self.model))


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
        results=tuple(_as_device_result(outcome, action, model) for outcome in fleet.results),
        seconds=fleet.seconds,
        stopped_by_canary=fleet.stopped_by_canary,
    )


# --------------------------------------------------------------------------- the fleet operations


def deploy_fleet(
    devices: Sequence[Device],
    model: ModelFile,
    *,
    connect: Connector,
    keep: int | None = None,
    options: FleetOptions = FleetOptions(),
    events: FleetEvents | None = None,
) -> DeployFleetResult:
    """Deploy ``model`` to every device (see :func:`deploy_to_device` and :func:`edgeq.fleet.run_fleet`)."""

    def operation(conn: Connection, device: Device, progress: ProgressCallback) -> DeviceResult:
        return deploy_to_device(conn, device, model, keep=keep, progress=progress)

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
    if to is not None and not re.fullmatch(r"[0-9a-fA-F]{4,12}", to):
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
        if not re.fullmatch(r"[0-9a-fA-F]{4,12}", version):
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
