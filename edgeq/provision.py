"""``edgeq provision``: a working TFLite runtime on each device, from wheels the HOST downloads.

The device needs neither pip nor internet access. Per device:

1. ``runtime.py inspect`` (:mod:`edgeq.remote`) says its Python, machine,
   word size and C library, the numpy it already imports (Debian's apt
   numpy 1.24 on Raspberry Pi OS bookworm) and what edgeq's runtime folder
   holds;
2. the host resolves the wheels for that Python, ISA and glibc with
   ``pip download --platform ... --python-version ... --only-binary=:all:``
   into ~/.cache/edgeq/wheels (the cache is tried first, without the index;
   ``--offline`` never leaves it). The device's own numpy is kept when the
   runtime can use it (tflite-runtime needs ``1.23.2 <= numpy < 2``: it was
   built against NumPy 1.x); else ``numpy<2`` or a compatible numpy goes
   into the folder, where it shadows the system's for edgeq alone;
3. when the folder already holds exactly those wheels, nothing is sent: the
   runtime is checked where it is and the device is reported unchanged;
4. else the wheels are pushed (content-named, so an interrupted run resumes
   without sending them again), unpacked into a new folder on the device,
   checked there (the runtime imports and runs a tiny model) and swapped in
   atomically; a failed check leaves the old folder as it was.

The folder is ``<edgeq dir>/runtime/py<major><minor>-<machine>``; the probe
(``--env-root``) and the facts script put it first on the import path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import remote
from .errors import DeviceNotReady, ProbeOutputError, RemoteCommandError
from .probe import RUNTIME_FOLDER

if TYPE_CHECKING:
    from .connection import Connection
    from .devices import Device
    from .fleet import Connector, FleetEvents, FleetOptions, FleetResult
    from .targets import Target

__all__ = [
    "PROVISIONABLE",
    "DeviceRuntime",
    "ProvisionError",
    "Provisioned",
    "WheelSet",
    "platform_tags",
    "provision_device",
    "provision_fleet",
    "resolve_wheels",
    "wheel_cache",
]

PROVISIONABLE = ("ai-edge-litert", "tflite-runtime")  # tensorflow (hundreds of MB, no armv7l wheels) is not pushed
NUMPY_1_ABI = {"tflite-runtime"}  # built against NumPy 1.x: fails under NumPy 2
MIN_NUMPY = "1.23.2"  # both runtimes' requirement
_SAVED = re.compile(r"^\s*(?:Saved|File was already downloaded)\s+(\S+\.whl)\s*$")


class ProvisionError(DeviceNotReady):
    """No wheel fits the device, or the host cannot get it (offline, no pip)."""

    kind = "no-wheel"


@dataclasses.dataclass(frozen=True)
class DeviceRuntime:
    """What ``runtime.py inspect`` read on the device."""

    python: str  # "3.11.2"
    implementation: str  # "cpython"
    machine: str  # platform.machine(): the runtime folder's name uses it
    bits: int
    libc: tuple[str, str]  # ("glibc", "2.36")
    numpy: str | None  # the numpy the device imports without edgeq's folder
    env: str  # absolute path of edgeq's runtime folder for this Python
    manifest: dict[str, Any] | None  # what the folder holds (None: nothing yet)
    free_mb: int | None

    @property
    def wheel_arch(self) -> str:
        """The ISA wheels are tagged with: a 32-bit Python on a 64-bit kernel runs armv7l code."""
        if self.bits == 32 and self.machine in ("aarch64", "armv8l", "armv7l"):
            return "armv7l"
        if self.bits == 32 and self.machine == "x86_64":
            return "i686"
        return self.machine

    @property
    def python_tag(self) -> str:
        major, minor = self.python.split(".")[:2]
        return f"{major}{minor}"


@dataclasses.dataclass(frozen=True)
class WheelSet:
    """The wheels one device gets, resolved on the host."""

    runtime: str
    version: str
    wheels: tuple[Path, ...]  # to push (the device's own numpy left out when it serves)
    numpy: str  # the numpy the runtime will import: the device's or a pushed one
    numpy_pushed: bool

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(w.name for w in self.wheels))


@dataclasses.dataclass(frozen=True)
class Provisioned:
    """One device's runtime after ``edgeq provision``."""

    device: str
    runtime: str
    version: str
    env: str
    changed: bool  # False: the folder already held these wheels, nothing was sent
    wheels: tuple[str, ...]
    numpy: str | None  # what the runtime imports (checked on the device)
    numpy_source: str  # "device" (the system's, e.g. apt) | "edgeq" (pushed into the folder)
    bytes_sent: int


# --------------------------------------------------------------------------- the host side: wheels


def wheel_cache() -> Path:
    """Where the host keeps the wheels it downloads for devices (shared by every device of the same kind).

    ``EDGEQ_WHEEL_CACHE`` names another folder (a shared one, or one filled beforehand for offline work).
    """
    if os.environ.get("EDGEQ_WHEEL_CACHE"):
        return Path(os.environ["EDGEQ_WHEEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgeq" / "wheels"


def platform_tags(arch: str, libc: tuple[str, str]) -> tuple[str, ...]:
    """pip's ``--platform`` values for a glibc device: every manylinux tag its glibc can load, newest first.

    pip does not widen ``--platform manylinux_2_34_aarch64`` to the older tags by itself (measured: with
    only that tag it misses ai-edge-litert 2.3.0, which is manylinux_2_27), so all are listed.
    """
    name, version = libc
    if name != "glibc" or not re.fullmatch(r"\d+\.\d+", version or ""):
        raise ProvisionError(
            f"the device's C library is {name or 'unknown'} {version or ''}".strip()
            + ": PyPI's runtime wheels need glibc (manylinux)",
            hint="use a glibc distribution (Raspberry Pi OS, Debian, Ubuntu) or build the runtime on the device",
        )
    major, minor = (int(p) for p in version.split("."))
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 16, -1)]
    tags.append(f"manylinux2014_{arch}")
    if arch in ("x86_64", "i686"):
        tags += [f"manylinux2010_{arch}", f"manylinux1_{arch}"]
    return tuple(tags)


def _version_tuple(text: str) -> tuple[int, ...]:
    from .kernels import parse_version

    return parse_version(text)


def numpy_serves(runtime: str, numpy: str | None) -> bool:
    """Can ``runtime`` use the device's own ``numpy``?"""
    if numpy is None:
        return False
    try:
        version = _version_tuple(numpy)
    except ValueError:
        return False
    if version < _version_tuple(MIN_NUMPY):
        return False
    return not (runtime in NUMPY_1_ABI and version >= (2,))


def _pip_download(
    specs: Sequence[str], tags: Sequence[str], info: DeviceRuntime, cache: Path, *, index: bool
) -> list[Path] | str:
    """Run pip download; the wheel files it resolved, or pip's last error line."""
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--dest",
        ".",
        "--python-version",
        info.python_tag,
        "--implementation",
        "cp" if info.implementation == "cpython" else info.implementation[:2],
        "--abi",
        f"cp{info.python_tag}",
        "--abi",
        "abi3",
        "--abi",
        "none",
        *(arg for tag in tags for arg in ("--platform", tag)),
    ]
    if not index:
        cmd += ["--no-index", "--find-links", "."]
    env = dict(os.environ, PIP_NO_INPUT="1")
    try:
        done = subprocess.run(
            cmd + list(specs), cwd=cache, capture_output=True, text=True, timeout=900, env=env, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"pip did not run: {exc}"
    if done.returncode != 0:
        errors = [line.strip() for line in done.stderr.splitlines() if line.strip().startswith("ERROR")]
        if "No module named pip" in done.stderr:
            return "no pip beside edgeq's Python (install pip into edgeq's environment)"
        return errors[0] if errors else (done.stderr.strip().splitlines() or ["pip failed"])[-1]
    found = [m.group(1) for line in done.stdout.splitlines() if (m := _SAVED.match(line))]
    return [(cache / f).resolve() for f in found]


def _dist_and_version(wheel: Path) -> tuple[str, str]:
    name, version = wheel.name.split("-")[:2]
    return name.lower().replace("_", "-"), version


def resolve_wheels(
    runtime: str,
    info: DeviceRuntime,
    *,
    offline: bool = False,
    cache: Path | None = None,
    say: Callable[[str], None] | None = None,
) -> WheelSet:
    """The wheels that give ``info``'s device a working ``runtime`` (downloaded on the host, cached)."""
    if runtime not in PROVISIONABLE:
        raise ProvisionError(f"edgeq provisions {' and '.join(PROVISIONABLE)}, not {runtime}")
    cache = cache or wheel_cache()
    tags = platform_tags(info.wheel_arch, info.libc)
    folder = cache / f"cp{info.python_tag}-{info.wheel_arch}"
    keep_numpy = numpy_serves(runtime, info.numpy)
    attempts: list[list[str]] = []
    if keep_numpy:
        attempts.append([runtime, f"numpy=={info.numpy}"])  # other dependencies chosen to suit the device's numpy
    attempts.append([runtime, f"numpy>={MIN_NUMPY},<2"] if runtime in NUMPY_1_ABI else [runtime])
    problem = ""
    for specs in attempts:
        for index in (False,) if offline else (False, True):
            if index and say:
                say(f"downloading {' '.join(specs)} wheels for cp{info.python_tag} {info.wheel_arch} on the host")
            got = _pip_download(specs, tags, info, folder, index=index)
            if isinstance(got, list):
                return _wheel_set(runtime, got, info, keep_numpy)
            problem = got
    where = f"CPython {info.python} on {info.wheel_arch} with {' '.join(info.libc)}"
    if offline:
        raise ProvisionError(
            f"the host's wheel cache ({folder}) lacks {runtime} for {where} ({problem})",
            hint="run edgeq provision once without --offline where the host reaches PyPI (the device never needs to)",
        )
    hint = None
    if runtime == "ai-edge-litert" and info.wheel_arch == "armv7l":
        hint = "ai-edge-litert publishes no 32-bit Arm wheels: use --runtime tflite-runtime"
    elif runtime == "tflite-runtime" and _version_tuple(info.python) >= (3, 12):
        hint = (
            "tflite-runtime's last release (2.14) has no wheels for Python 3.12 or newer: use --runtime ai-edge-litert"
        )
    raise ProvisionError(f"no {runtime} wheel fits {where}: {problem}", hint=hint)


def _wheel_set(runtime: str, wheels: list[Path], info: DeviceRuntime, keep_numpy: bool) -> WheelSet:
    version = next((v for w in wheels for d, v in [_dist_and_version(w)] if d == runtime), "?")
    numpy = next((v for w in wheels for d, v in [_dist_and_version(w)] if d == "numpy"), None)
    push = [w for w in wheels if not (keep_numpy and _dist_and_version(w)[0] == "numpy")]
    return WheelSet(
        runtime=runtime,
        version=version,
        wheels=tuple(sorted(push, key=lambda w: w.name)),
        numpy=(info.numpy or "?") if keep_numpy else (numpy or "?"),
        numpy_pushed=not keep_numpy,
    )


# --------------------------------------------------------------------------- the device side


def _runtime_script(conn: Connection) -> remote.DeviceFile:
    return remote.script("runtime.py", conn.edgeq_dir)


def _run_json(
    conn: Connection,
    device: Device,
    python: str,
    args: Sequence[str],
    requires: Sequence[remote.DeviceFile],
    timeout_s: float,
) -> dict[str, Any]:
    script = _runtime_script(conn)
    command = shlex.join([python, script.path, *args])
    result = conn.run(command, timeout_s, check=False, label="provision", requires=(script, *requires))
    lines = result.stdout.strip().splitlines()
    try:
        document = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        detail = (result.stderr.strip().splitlines() or [f"exit status {result.exit_status}"])[-1][-300:]
        if result.exit_status == 127 or "not found" in detail:
            raise DeviceNotReady(
                f"{device.name}: no Python at `{python}` ({detail})",
                hint="install python3 and python3-numpy on the device (sudo apt install python3 python3-numpy)",
            ) from None
        raise ProbeOutputError(f"{device.name}: edgeq's runtime script gave no result ({detail})") from None
    if not isinstance(document, dict):
        raise ProbeOutputError(f"{device.name}: edgeq's runtime script printed something else than its result")
    return document


def inspect_device(conn: Connection, device: Device, python: str) -> DeviceRuntime:
    """Ask the device's Python what it is and what edgeq's runtime folder holds (one command)."""
    doc = _run_json(conn, device, python, ["inspect", _root(conn)], (), conn.options.command_timeout_s)
    libc = doc.get("libc") or ["", ""]
    try:
        return DeviceRuntime(
            python=str(doc["python"]),
            implementation=str(doc.get("implementation") or "cpython"),
            machine=str(doc["machine"]),
            bits=int(doc.get("bits") or 64),
            libc=(str(libc[0]), str(libc[1])),
            numpy=doc.get("numpy"),
            env=str(doc["env"]),
            manifest=doc.get("manifest"),
            free_mb=doc.get("free_mb"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProbeOutputError(f"{device.name}: edgeq's runtime script left out {exc}") from exc


def _root(conn: Connection) -> str:
    return posixpath.join(conn.edgeq_dir, RUNTIME_FOLDER)


def _choose_runtime(
    requested: str | None,
    target: Target | None,
    info: DeviceRuntime,
    offline: bool,
    cache: Path | None,
    say: Callable[[str], None] | None,
) -> WheelSet:
    if requested:
        return resolve_wheels(requested, info, offline=offline, cache=cache, say=say)
    order = [r for r in (target.runtimes if target else PROVISIONABLE) if r in PROVISIONABLE] or list(PROVISIONABLE)
    problems: list[ProvisionError] = []
    for runtime in order:
        try:
            return resolve_wheels(runtime, info, offline=offline, cache=cache, say=say)
        except ProvisionError as exc:
            problems.append(exc)
    raise ProvisionError("; ".join(p.message for p in problems), hint=next((p.hint for p in problems if p.hint), None))


def provision_device(
    conn: Connection,
    device: Device,
    *,
    runtime: str | None = None,
    target: Target | None = None,
    offline: bool = False,
    cache: Path | None = None,
    say: Callable[[str], None] | None = None,
) -> Provisioned:
    """Give ``device`` a working ``runtime`` (default: the first of the target's that has wheels for it)."""
    python = device.python or (target.python if target else "python3")
    info = inspect_device(conn, device, python)
    wheels = _choose_runtime(runtime, target, info, offline, cache, say)
    timeout = max(conn.options.command_timeout_s, 900.0)
    manifest = info.manifest or {}
    env = info.env
    if manifest.get("runtime") == wheels.runtime and sorted(manifest.get("wheels") or []) == list(wheels.names):
        doc = _run_json(conn, device, python, ["check", _root(conn), wheels.runtime], (), timeout)
        if doc.get("ok"):
            return _result(device, wheels, env, doc, changed=False, sent=0)
        if say:
            say(
                f"{device.name}: the runtime folder holds these wheels but fails its check ({_why(doc)}); installing again"
            )
    size = sum(w.stat().st_size for w in wheels.wheels)
    if info.free_mb is not None and info.free_mb < 2 * size / 2**20 + 1:
        raise DeviceNotReady(
            f"{device.name}: {info.free_mb} MB free; the {wheels.runtime} wheels need {2 * size / 2**20:.0f} MB "
            "(pushed, then unpacked)",
            hint="free space on the device, or point edgeq_remote_dir at a bigger disk",
        )
    folder = posixpath.join(_root(conn), "wheels")
    files = []
    for wheel in wheels.wheels:
        data = wheel.read_bytes()
        files.append(remote.DeviceFile.at(folder, f"{remote.content_digest(data)}-{wheel.name}", data))
    if say:
        say(f"{device.name}: installing {wheels.runtime} {wheels.version} ({len(files)} wheels, {size / 1e6:.1f} MB)")
    doc = _run_json(
        conn, device, python, ["install", _root(conn), wheels.runtime, *(f.path for f in files)], files, timeout
    )
    if not doc.get("ok"):
        raise RemoteCommandError(
            f"{device.name}: {wheels.runtime} {wheels.version} was unpacked but does not work there: {_why(doc)}; "
            "the runtime folder was left as it was",
            hint="run edgeq doctor on the device; an illegal instruction means the wheel needs a newer CPU",
        )
    return _result(device, wheels, env, doc, changed=True, sent=size)


def _why(doc: dict[str, Any]) -> str:
    check = doc.get("check") or {}
    return str(doc.get("error") or check.get("error") or "no reason given")


def _result(
    device: Device, wheels: WheelSet, env: str, doc: dict[str, Any], *, changed: bool, sent: int
) -> Provisioned:
    check = doc.get("check") or {}
    numpy_file = str(check.get("numpy_file") or "")
    return Provisioned(
        device=device.name,
        runtime=wheels.runtime,
        version=wheels.version,
        env=env,
        changed=changed,
        wheels=wheels.names,
        numpy=check.get("numpy"),
        numpy_source="edgeq" if numpy_file.startswith(env.rstrip("/") + "/") else "device",
        bytes_sent=sent,
    )


def provision_fleet(
    devices: Sequence[Device],
    *,
    connect: Connector,
    runtime: str | None = None,
    device_targets: Callable[[str | None], Target | None] | None = None,
    offline: bool = False,
    fleet_options: FleetOptions | None = None,
    events: FleetEvents | None = None,
    say: Callable[[str], None] | None = None,
) -> FleetResult[Provisioned]:
    """``edgeq provision`` on every device (see :func:`edgeq.fleet.run_fleet`)."""
    from .fleet import FleetOptions, run_fleet

    targets = device_targets or (lambda _name: None)

    def operation(conn: Connection, device: Device, _progress: Any) -> Provisioned:
        return provision_device(conn, device, runtime=runtime, target=targets(device.target), offline=offline, say=say)

    return run_fleet(
        devices, operation, connect=connect, options=fleet_options or FleetOptions(), events=events, action="provision"
    )
