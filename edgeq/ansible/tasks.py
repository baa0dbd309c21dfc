"""One Ansible task on one host, in edgeq's terms: what the ``edgeq.fleet`` action plugins call.

The collection's action plugins (GPL, they import ansible) only gather what
Ansible resolved for a host and validate the task's arguments; everything
else is here, in edgeq (Apache-2.0, no ansible import), on edgeq's own
library: the host becomes a :class:`~edgeq.devices.Device` through
:func:`edgeq.devices.resolve_devices` (``~/.ssh/config``, the target's
defaults, the ``edgeq_*`` variables: as ``edgeq -i INVENTORY`` resolves it),
it is reached through :func:`edgeq.connection.open_connection` and
:func:`edgeq.fleet.run_fleet` (transport errors retried, edgeq's host-key
policy), and the work is :func:`edgeq.deploy.deploy_to_device`,
:func:`~edgeq.deploy.rollback_device`, :func:`~edgeq.deploy.remove_from_device`,
:func:`~edgeq.deploy.status_of_device` and the probe. A model deployed by one
tool is the other's: the same scripts, layout and manifest.

Every function returns the task's result as plain JSON types; a device's
failure is ``{"failed": True, "msg": ..., "kind": ..., "code": ...}``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EdgeqError, ModelStateError

if TYPE_CHECKING:
    from ..connection import Connection, ConnectOptions
    from ..deploy import DeviceResult, ModelFile
    from ..deploy.session import FolderState
    from ..devices import Device
    from ..probe import ProbeOptions, ProbeResult
    from ..targets import Target

__all__ = [
    "API_VERSION",
    "HOST_VARS",
    "AnsibleHost",
    "ModelRead",
    "check_api",
    "connect_options",
    "failure",
    "model_absent",
    "model_info",
    "model_present",
    "model_rollback",
    "prepare",
    "prepare_probe",
    "probe_active",
    "probe_file",
    "probe_options",
    "read_model",
    "resolve_host",
    "run_on_host",
    "target_of",
]

API_VERSION = 1
"""What the collection's plugins expect of this module; a collection built by another edgeq may expect another."""

HOST_VARS = ("edgeq_target", "edgeq_python", "edgeq_remote_dir", "edgeq_keep_versions", "ansible_python_interpreter")
"""The host variables edgeq reads besides the connection's own options (the plugins template them)."""

_VERSION_ARG_RE = re.compile(r"[0-9a-fA-F]{4,12}")
_DROPPED_PROBE_FIELDS = ("latencies_ms", "outputs")

Operation = Callable[["Connection", "Device"], dict[str, Any]]


def check_api(wanted: int) -> None:
    """Refuse a collection built for another version of this API (a plugin calls this first)."""
    if wanted != API_VERSION:
        from .. import __version__

        raise EdgeqError(
            f"this edgeq.fleet collection speaks edgeq's Ansible API {wanted}, the edgeq on the controller ({__version__}) speaks {API_VERSION}",
            hint="install the collection that this edgeq builds: edgeq ansible build, then ansible-galaxy collection install",
        )


# --------------------------------------------------------------------------- the host, as Ansible resolved it


@dataclasses.dataclass(frozen=True)
class AnsibleHost:
    """What Ansible resolved for one host: its connection plugin's options and its edgeq variables (templated)."""

    name: str  # inventory_hostname
    connection: str  # the connection plugin: ssh, paramiko, local, ...
    address: str | None = None
    user: str | None = None
    port: int | None = None
    key_file: str | None = None
    variables: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # HOST_VARS that are set


def resolve_host(
    host: AnsibleHost,
    *,
    target: str | None = None,
    known_hosts: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> Device:
    """The edgeq device for ``host``, resolved as edgeq resolves an inventory host.

    ``target`` overrides ``edgeq_target``; ``known_hosts`` is the module's
    option (as ``--known-hosts``: given, edgeq's known_hosts files are read
    besides it, else those of the SSH config); ``warn`` hears what edgeq can
    honour only in part.
    """
    from ..devices import HostEntry, resolve_devices

    values: dict[str, Any] = {"ansible_connection": host.connection}
    for key, value in (
        ("ansible_host", host.address),
        ("ansible_user", host.user),
        ("ansible_port", host.port),
        ("ansible_ssh_private_key_file", host.key_file),
    ):
        if value not in (None, ""):
            values[key] = value
    for key, value in host.variables.items():
        if key in HOST_VARS and value not in (None, "") and not (key == "ansible_python_interpreter" and _auto(value)):
            values[key] = value
    entry = HostEntry(name=host.name, vars=values, source="the Ansible inventory")
    (device,) = resolve_devices([entry], target=target, known_hosts=known_hosts, warn=warn)
    return device


def _auto(interpreter: object) -> bool:
    """Ansible's interpreter discovery (``auto``, ``auto_silent``, ...): no command edgeq can run."""
    return str(interpreter).startswith("auto")


def target_of(device: Device) -> Target | None:
    """The device's target, loaded (None when it has none)."""
    if not device.target:
        return None
    from ..targets import load_target

    return load_target(device.target)


def connect_options(
    *,
    known_hosts: str | None = None,
    trust_new_hosts: bool = False,
    connect_timeout_s: float | None = None,
    command_timeout_s: float | None = None,
    transfer_timeout_s: float | None = None,
    password: str | None = None,
    host_key_added: Callable[[str, str, str], None] | None = None,
) -> ConnectOptions:
    """edgeq's connection options: its host-key policy (known_hosts, never accepted silently) and timeouts.

    ``password`` (Ansible's ``ansible_password``) is offered only when the server asks for one.
    """
    from ..connection import ConnectOptions

    defaults = ConnectOptions()
    return ConnectOptions(
        connect_timeout_s=connect_timeout_s or defaults.connect_timeout_s,
        command_timeout_s=command_timeout_s or defaults.command_timeout_s,
        transfer_timeout_s=transfer_timeout_s or defaults.transfer_timeout_s,
        known_hosts=Path(known_hosts).expanduser() if known_hosts else None,
        trust_new_hosts=trust_new_hosts,
        password_prompt=(lambda _who: password) if password else None,
        host_key_added=host_key_added,
    )


def prepare(path: str, name: str | None = None) -> ModelFile:
    """The local model a task deploys (checked and hashed on the controller, before any connection)."""
    from ..deploy import prepare_model

    return prepare_model(path, name)


def probe_options(
    *,
    runs: int = 50,
    min_time_s: float = 1.0,
    warmup_runs: int = 5,
    warmup_time_s: float = 0.5,
    runtime: str | None = None,
    timeout_s: float = 300.0,
) -> ProbeOptions:
    """The probe's timing (edgeq probe's defaults, LiteRT's benchmark_model's)."""
    from ..probe import ProbeOptions

    return ProbeOptions(
        runs=runs,
        min_s=min_time_s,
        warmup_runs=warmup_runs,
        warmup_min_s=warmup_time_s,
        runtime=runtime,
        timeout_s=timeout_s,
    )


# --------------------------------------------------------------------------- running on the host


def run_on_host(device: Device, operation: Operation, *, options: ConnectOptions, retries: int = 2) -> dict[str, Any]:
    """``operation(conn, device)`` through edgeq's fleet runner (one device): its result, or the failure's.

    Transport errors are retried ``retries`` times with backoff, as ``edgeq
    deploy`` does; any other edgeq error fails the task at once; anything
    else is a bug and propagates with its traceback.
    """
    from ..connection import open_connection
    from ..fleet import FleetOptions, run_fleet

    fleet = run_fleet(
        [device],
        lambda conn, dev, _progress: operation(conn, dev),
        connect=lambda d: open_connection(d, options),
        options=FleetOptions(concurrency=1, retries=retries),
        action="ansible",
    )
    (outcome,) = fleet.results
    extra = {"device": outcome.destination, "attempts": outcome.attempts, "seconds": round(outcome.seconds, 3)}
    if outcome.error is not None:
        return {**failure(outcome.error, device.name), **extra}
    value = outcome.value if outcome.value is not None else {}
    return {**value, **extra}


def failure(error: EdgeqError, device: str | None = None) -> dict[str, Any]:
    """A failed task: edgeq's one-line message as ``msg`` (without the ``device:`` Ansible shows anyway), kind and code."""
    from ..fleet import reason_of

    result: dict[str, Any] = {
        "failed": True,
        "msg": reason_of(error, device) if device else error.message,
        "kind": error.kind,
        "code": error.exit_code,
    }
    if error.hint:
        result["hint"] = error.hint
    state = getattr(error, "state", None)  # a ModelCheckError brings what it read
    if state is not None:
        from ..types import to_jsonable

        result["state"] = to_jsonable(state)
    return result


# --------------------------------------------------------------------------- reading a model folder (read-only)


@dataclasses.dataclass(frozen=True)
class ModelRead:
    """A model folder as the read-only ``status`` run of the device script reports it (no lock, nothing written)."""

    state: FolderState | None  # None: no such model on the device
    verdict: str | None = None  # verified | damaged | inactive: the active version's file against its sha256
    detail: str | None = None  # why it is damaged

    @property
    def current(self) -> str | None:
        return self.state.current if self.state else None

    @property
    def intact(self) -> bool | None:
        return None if self.verdict in (None, "inactive") else self.verdict == "verified"


def read_model(conn: Connection, device: Device, name: str) -> ModelRead:
    """The state of ``name`` on the device, its manifest (history included) and the active file's check.

    Read as :func:`edgeq.deploy.status_of_device` reads it (:func:`edgeq.deploy.device.read_status`), which
    keeps only what ``edgeq status`` shows: check mode and ``model_info`` need the manifest's history too.
    """
    from ..deploy.device import read_status

    found = read_status(conn, device, name)
    if found is None:
        return ModelRead(state=None)
    state, verdict, detail = found
    return ModelRead(state=state, verdict=verdict, detail=detail)


# --------------------------------------------------------------------------- edgeq.fleet.model


def model_present(
    conn: Connection, device: Device, model: ModelFile, *, keep: int | None = None, check: bool = False
) -> dict[str, Any]:
    """``state: present``: :func:`edgeq.deploy.deploy_to_device` (check mode: what it would do, from the device's state)."""
    from ..deploy import DEFAULT_KEEP_VERSIONS, deploy_to_device
    from ..deploy.manifest import versions_to_prune

    if not check:
        return _device_result(deploy_to_device(conn, device, model, keep=keep))
    read = read_model(conn, device, model.name)
    if read.current == model.version and read.intact:
        return _would("unchanged", model.name, version=model.version, previous=read.current)
    on_device = read.state.versions if read.state else ()
    manifest = read.state.manifest if read.state else {}
    keep = keep or device.keep_versions or DEFAULT_KEEP_VERSIONS
    # an intact copy of a version that is not active is switched to without upload; check mode cannot tell a
    # damaged one (only the active file is checked by a read), so it counts it as intact
    upload = 0 if model.version in on_device else model.size_bytes
    return _would(
        "ok",
        model.name,
        version=model.version,
        previous=read.current,
        removed=versions_to_prune(manifest, on_device, model.version, keep),
        bytes_to_send=upload,
    )


def model_rollback(
    conn: Connection, device: Device, name: str, *, to: str | None = None, check: bool = False
) -> dict[str, Any]:
    """``state: rollback``: :func:`edgeq.deploy.rollback_device` to ``to`` or the previously active version."""
    from ..deploy import rollback_device
    from ..deploy.device import rollback_target

    check_version_arg(to, "version")
    if not check:
        return _device_result(rollback_device(conn, device, name, to))
    read = read_model(conn, device, name)
    if read.state is None:
        raise ModelStateError(f"{device.name}: no model named {name!r} on the device")
    target = rollback_target(read.state, to)  # edgeq's rule: the same choice rollback_device makes
    status = "unchanged" if target == read.current else "ok"
    return _would(status, name, version=target, previous=read.current)


def model_absent(
    conn: Connection, device: Device, name: str, *, versions: Sequence[str] = (), check: bool = False
) -> dict[str, Any]:
    """``state: absent``: :func:`edgeq.deploy.remove_from_device`: the whole model, or only ``versions``."""
    from ..deploy import remove_from_device

    for version in versions:
        check_version_arg(version, "versions")
    if not check:
        return _device_result(remove_from_device(conn, device, name, versions))
    read = read_model(conn, device, name)
    if read.state is None:
        return _would("unchanged", name)
    if not versions:
        return _would("ok", name, previous=read.current, removed=read.state.versions)
    chosen = [v for v in read.state.versions if any(v.startswith(w.lower()) for w in versions)]
    if read.current in chosen:
        raise ModelStateError(
            f"{device.name}: {read.current} is the active version of {name}; not removing it",
            hint="roll back first (state: rollback), or remove the whole model",
        )
    return _would("ok" if chosen else "unchanged", name, version=read.current, previous=read.current, removed=chosen)


def check_version_arg(version: str | None, option: str) -> None:
    """A version argument is 4 to 12 hex digits (a unique prefix of a version), as for ``edgeq rollback --to``."""
    if version is not None and not _VERSION_ARG_RE.fullmatch(version):
        raise EdgeqError(f"{option}: {version!r} is not a version (4 to 12 hex digits, as edgeq status shows them)")


def _device_result(result: DeviceResult) -> dict[str, Any]:
    from ..fleet import DeviceStatus

    value: dict[str, Any] = {
        "changed": result.status is DeviceStatus.OK,
        "status": result.status.value,
        "name": result.model,
        "version": result.version,
        "previous": result.previous,
        "bytes_sent": result.bytes_sent,
        "removed": list(result.removed),
    }
    if result.warnings:  # shown by Ansible as warnings
        value["warnings"] = list(result.warnings)
    return value


def _would(
    status: str,
    name: str,
    *,
    version: str | None = None,
    previous: str | None = None,
    removed: Sequence[str] = (),
    bytes_to_send: int = 0,
) -> dict[str, Any]:
    return {
        "changed": status == "ok",
        "status": status,
        "name": name,
        "version": version,
        "previous": previous,
        "bytes_sent": 0,
        "bytes_to_send": bytes_to_send,
        "removed": list(removed),
    }


# --------------------------------------------------------------------------- edgeq.fleet.model_info


def model_info(conn: Connection, device: Device, name: str) -> dict[str, Any]:
    """What the device has of ``name``: the active version, the versions kept, the history, the active file's check.

    An absent or damaged model is reported, not a failure (``exists``, ``intact``).
    """
    from ..deploy import model_dir
    from ..deploy.manifest import manifest_history, version_infos
    from ..types import to_jsonable

    read = read_model(conn, device, name)
    folder = model_dir(device, name)
    if read.state is None:
        return {"changed": False, "name": name, "exists": False, "path": folder, "version": None, "intact": None}
    state = read.state
    return {
        "changed": False,
        "name": name,
        "exists": True,
        "path": folder,
        "version": state.current,
        "intact": read.intact,
        "detail": read.detail,
        "versions": to_jsonable(version_infos(state.manifest, state.versions, state.current)),
        "history": manifest_history(state.manifest),
        "free_bytes": state.free_bytes,
    }


# --------------------------------------------------------------------------- edgeq.fleet.probe


def probe_active(
    conn: Connection,
    device: Device,
    name: str,
    options: ProbeOptions,
    *,
    target: Target | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Probe the ACTIVE version of the deployed model ``name`` (checked against its sha256 first: the health check)."""
    from ..bench import DeviceProber
    from ..deploy import model_dir, status_of_device
    from ..probe import run_probe

    status = status_of_device(conn, device, name)  # absent, inactive or damaged: a ModelCheckError
    prober = DeviceProber(conn, device, options, target=target, threads=threads)
    result = run_probe(
        conn,
        device.name,
        f"{model_dir(device, name)}/{status.version}/model.tflite",
        prober.options,
        python=prober.python,
        remote_dir=prober.remote_dir,
        threads=prober.threads,
    )
    return _probe_result(result, name, status.version)


def prepare_probe(path: str) -> ModelFile:
    """The model file ``edgeq probe PATH`` uploads, as ``probe-<stem>`` (checked and hashed before any connection)."""
    from ..bench import probe_model

    return probe_model(path)


def probe_file(
    conn: Connection,
    device: Device,
    model: ModelFile,
    options: ProbeOptions,
    *,
    target: Target | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """``edgeq probe PATH`` on this device (``model`` from :func:`prepare_probe`; never a deployed model's name)."""
    from ..bench import probe_device

    result, _ = probe_device(conn, device, model, options, target=target, threads=threads)
    return _probe_result(result, model.name, model.version)


def _probe_result(result: ProbeResult, name: str, version: str | None) -> dict[str, Any]:
    from ..types import to_jsonable

    figures = {k: v for k, v in to_jsonable(result).items() if k not in _DROPPED_PROBE_FIELDS}
    figures.update(name=name, version=version, path=figures.pop("model"))
    return {"changed": False, "probe": figures, "ansible_facts": {"edgeq_probe": figures}}
