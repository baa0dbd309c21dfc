#!/usr/bin/env python3
"""Emulated Raspberry Pi OS devices: arm64 Debian bookworm roots run by qemu-user, each served by its own sshd.

    .venv/bin/python scripts/emulated_devices.py build [IMAGE ...]   build what the cache lacks (all images by default)
    .venv/bin/python scripts/emulated_devices.py up IMAGE [--address 127.0.0.x] [--port N] [--key FILE.pub]
    .venv/bin/python scripts/emulated_devices.py list
    .venv/bin/python scripts/emulated_devices.py clean

Images (cached in ${EDGEQ_DEVICES_CACHE:-~/.cache/edgeq/devices}, ~ from the passwd entry, not $HOME):

* ``bare``: the base root alone: Debian bookworm arm64 ``minbase`` with python3 (3.11.2), python3-numpy (1.24.2),
  openssh-server and procps from apt, i.e. Raspberry Pi OS 64-bit's userland, and a user ``pi`` (bash).
  No TFLite runtime. Shown as a Raspberry Pi 4 Model B.
* ``rpios64``: + tflite-runtime 2.14.0 unpacked into /usr/local/lib/python3.11/dist-packages, running on apt's
  numpy 1.24 (Raspberry Pi OS 64-bit with ``pip install --break-system-packages tflite-runtime``). A Pi 4.
* ``pi5-litert``: + ai-edge-litert 2.3.0 with the dependencies pip resolves for it as
  ``pip install --target`` does (ignoring apt's packages): NumPy 2 lands in /usr/local and shadows apt's 1.24.
  A Raspberry Pi 5.

The base is built once with debootstrap (qemu-user-static runs the arm64 maintainer scripts through
binfmt_misc); the images are overlayfs layers on it: directories holding only what they add. Wheels are
downloaded on this machine by pip for the device's platform (manylinux aarch64, CPython 3.11) and unpacked
into the layer, as pip would install them there; the device has no pip. Every build goes to a temporary
folder renamed into place once complete, named by a stamp of its recipe: a changed recipe builds anew, a
killed build leaves nothing that looks complete.

A device (``start_device``, or ``up``) is the image under a FRESH writable layer, discarded when it stops,
inside private namespaces (``unshare --mount --pid --uts --ipc``): overlayfs, /proc with the board's recorded
cpuinfo bound over /proc/cpuinfo, sysfs with the board's device-tree model on /sys/firmware/devicetree/base/model,
a minimal /dev and /run, then ``chroot ROOT /usr/sbin/sshd -D -e`` (the root's own arm64 OpenSSH) on a loopback
address and port, with its own ed25519 host key and key-only logins for ``pi``. Its sshd is the namespace's
init: when it ends, the kernel ends every process of the device and its mounts go with the namespace. The
board files are in tests/data/devices/ (see the README there).

Emulated code is an order of magnitude or more slower than native code on this machine (measured: the tests'
digits model 0.10 ms against 0.0095 ms, a Python start 0.33 s against 0.04 s, a TFLite runtime's import ~1.1 s):
latencies measured on these devices are NOT a Raspberry Pi's.

Needs root, Linux with overlayfs, qemu-user-static with binfmt_misc handlers (flag F) and debootstrap
(scripts/bootstrap.sh installs and registers them).
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import ctypes
import dataclasses
import datetime as _dt
import fcntl
import hashlib
import itertools
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "BOARDS",
    "IMAGES",
    "BuildError",
    "Cache",
    "DeviceError",
    "EmulatedDevice",
    "build",
    "host_problem",
    "missing_images",
    "start_device",
]

REPO = Path(__file__).resolve().parent.parent
BOARD_FILES = REPO / "tests" / "data" / "devices"
MIRROR = os.environ.get("EDGEQ_DEVICES_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
SITE = "usr/local/lib/python3.11/dist-packages"  # where `pip install --break-system-packages` puts packages
USER = "pi"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# pip does not expand older manylinux tags when --platform is given: bookworm's glibc is 2.36, so all of these run
PLATFORMS = tuple(f"manylinux_2_{minor}_aarch64" for minor in range(36, 16, -1)) + ("manylinux2014_aarch64",)
BASE_RECIPE: dict[str, Any] = {
    "debootstrap": {
        "arch": "arm64",
        "suite": SUITE,
        "variant": "minbase",
        "include": ["python3", "python3-numpy", "openssh-server", "procps"],
    },
    "user": {"name": USER, "uid": 1000, "shell": "/bin/bash", "password": "*"},  # '*': no password, not locked
    "hostname": "raspberrypi",
    "remove": ["etc/ssh/ssh_host_*", "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*"],
    "revision": 1,  # bump when the build steps below change
}


@dataclasses.dataclass(frozen=True)
class Board:
    """The Raspberry Pi a device shows: its recorded files and the CPU qemu emulates."""

    name: str
    qemu_cpu: str  # qemu-aarch64 -cpu: the instruction set (HWCAPs) the device's programs detect
    cores: int  # what nproc says (OMP_NUM_THREADS in the device's sessions; the host may have fewer)

    @property
    def cpuinfo(self) -> Path:
        return BOARD_FILES / self.name / "cpuinfo"

    @property
    def model_file(self) -> Path:
        return BOARD_FILES / self.name / "model"

    @property
    def model(self) -> str:
        return self.model_file.read_bytes().rstrip(b"\0").decode()


@dataclasses.dataclass(frozen=True)
class Image:
    """An image: the base root plus a layer of wheels (none for ``bare``)."""

    name: str
    board: str
    description: str
    wheels: tuple[str, ...] = ()  # pip requirement specifiers
    with_dependencies: bool = False  # False: the wheels alone (they run on apt's packages)

    def recipe(self, base_stamp: str) -> dict[str, Any]:
        return {
            "base": base_stamp,
            "wheels": list(self.wheels),
            "dependencies": self.with_dependencies,
            "platforms": list(PLATFORMS),
            "python": "cp311",
            "revision": 1,
        }


BOARDS = {b.name: b for b in (Board("rpi4b", "cortex-a72", 4), Board("rpi5", "cortex-a76", 4))}
IMAGES = {
    i.name: i
    for i in (
        Image("bare", "rpi4b", "Raspberry Pi OS 64-bit userland (Debian bookworm arm64), apt's python3 and numpy 1.24"),
        Image("rpios64", "rpi4b", "+ tflite-runtime 2.14.0 on apt's numpy 1.24", ("tflite-runtime==2.14.0",)),
        Image(
            "pi5-litert",
            "rpi5",
            "+ ai-edge-litert 2.3.0 and its dependencies (NumPy 2 in /usr/local)",
            ("ai-edge-litert==2.3.0",),
            with_dependencies=True,
        ),
    )
}


class BuildError(Exception):
    """A build could not be done; the message says why and what to do."""


class DeviceError(Exception):
    """A device could not be started (or the host cannot run devices); the message says why."""


def _stamp(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- the host


def host_problem(*, for_build: bool = False) -> str | None:
    """None when this machine can run (``for_build``: build) emulated devices, else why not, with what to do."""
    if sys.platform != "linux":
        return "needs Linux (namespaces, overlayfs, binfmt_misc)"
    if os.geteuid() != 0:
        return "needs root (unshare, mount, chroot)"
    handler = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not Path("/proc/sys/fs/binfmt_misc/register").exists():
        return "binfmt_misc is not mounted (run scripts/bootstrap.sh, or: mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc)"
    if not handler.exists():
        return "no qemu-aarch64 binfmt_misc handler: install qemu-user-static and binfmt-support (scripts/bootstrap.sh does)"
    text = handler.read_text()
    if not text.startswith("enabled"):
        return f"the qemu-aarch64 binfmt_misc handler is disabled ({handler})"
    flags = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("flags:")), "")
    if "F" not in flags:
        return f"the qemu-aarch64 binfmt_misc handler lacks flag F (it would not work inside a chroot): {handler}"
    tools = ["unshare", "nsenter", "chroot", "mount", "ssh-keygen"] + (["debootstrap"] if for_build else [])
    missing = [t for t in tools if not shutil.which(t, path=PATH + ":" + os.environ.get("PATH", ""))]
    if missing:
        return f"missing on this machine: {', '.join(missing)} (scripts/bootstrap.sh installs them)"
    return None


def _tool(name: str) -> str:
    return shutil.which(name, path=PATH + ":" + os.environ.get("PATH", "")) or name


def _start_time(pid: int) -> int | None:
    """A process's start time (clock ticks since boot): with the pid, it names a process across pid reuse."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rfind(")") + 2 :].split()[19])


def _alive(pid: int | None, start: int | None) -> bool:
    """Is that process (pid and start time) still running? A zombie is not."""
    if pid is None or start is None:
        return False
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0] != "Z" and int(fields[19]) == start


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    points = []
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix) or point == prefix[:-1]:
                points.append(point)
    return sorted(points, reverse=True)


def _remove_tree(path: Path) -> None:
    """rm -rf that never crosses into a mounted file system (a /proc or /dev left mounted by a killed build)."""
    if not path.exists() and not path.is_symlink():
        return
    for point in _mounts_under(path):
        subprocess.run([_tool("umount"), "--lazy", point], capture_output=True)
    subprocess.run([_tool("rm"), "-rf", "--one-file-system", str(path)], capture_output=True)
    if path.exists():
        raise BuildError(f"could not remove {path}")


def _disk_bytes(path: Path) -> int:
    """Disk usage of a tree (one file system, hard links once), as du counts it."""
    seen: set[tuple[int, int]] = set()
    total = 0
    device = path.stat().st_dev
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if st.st_dev != device or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
        dirnames[:] = [d for d in dirnames if os.lstat(os.path.join(dirpath, d)).st_dev == device]
    return total


def _mb(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.0f} MB"


# --------------------------------------------------------------------------- the cache


class Cache:
    """The folder holding the built base root and image layers, the builds in progress and the running devices."""

    def __init__(self, path: str | Path | None = None):
        # the user's home from the passwd entry, not $HOME: a test that isolates HOME must still find the images
        home = Path(pwd.getpwuid(os.getuid()).pw_dir)
        default = os.environ.get("EDGEQ_DEVICES_CACHE") or home / ".cache" / "edgeq" / "devices"
        self.path = Path(path or default).expanduser().absolute()

    @property
    def base_stamp(self) -> str:
        return _stamp(BASE_RECIPE)

    def base_dir(self) -> Path:
        return self.path / f"base-arm64-{self.base_stamp}"

    def layer_dir(self, image: Image) -> Path | None:
        if not image.wheels:
            return None
        return self.path / f"layer-{image.name}-{_stamp(image.recipe(self.base_stamp))}"

    def lowerdirs(self, image: Image) -> list[Path]:
        """The image's read-only roots, top first (overlayfs lowerdir order)."""
        layer = self.layer_dir(image)
        return ([layer / "root"] if layer else []) + [self.base_dir() / "root"]

    def is_built(self, image: Image) -> bool:
        return all(d.parent.is_dir() for d in self.lowerdirs(image))

    def record(self, folder: Path) -> dict[str, Any]:
        try:
            return json.loads((folder / "build.json").read_text())
        except (OSError, ValueError):
            return {}

    @property
    def run_dir(self) -> Path:
        return self.path / "run"

    @contextlib.contextmanager
    def lock(self, say: Callable[[str], None]) -> Iterator[None]:
        """One build at a time (two test sessions, or bootstrap and a test)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                say(f"waiting for another build of the emulated devices ({handle.read().strip() or 'unknown'})")
                fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            try:
                yield
            finally:
                handle.truncate(0)
                fcntl.flock(handle, fcntl.LOCK_UN)

    def in_use(self) -> set[Path]:
        """The roots of running devices (never removed under them)."""
        used: set[Path] = set()
        for state in self.live_devices():
            used.update(Path(p) for p in state.get("lowerdirs", []))
        return used

    def live_devices(self) -> list[dict[str, Any]]:
        found = []
        for folder in sorted(self.run_dir.glob("*")) if self.run_dir.is_dir() else []:
            state = _read_state(folder)
            if _alive(state.get("unshare_pid"), state.get("unshare_start")):
                found.append(state)
        return found

    def remove_stale(self, say: Callable[[str], None] | None = None, extra_run_dir: Path | None = None) -> None:
        """Builds and devices left by processes that died: temporary folders, writable layers."""
        if not self.path.is_dir():
            return
        for folder in self.path.glob(".build-*"):
            pid = folder.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                if say:
                    say(f"removing an interrupted build: {folder.name}")
                _remove_tree(folder)
        folders = [f for d in {self.run_dir, extra_run_dir or self.run_dir} if d.is_dir() for f in d.glob("*")]
        for folder in sorted(folders):
            named = re.fullmatch(r"(\d+)-\d+-[a-z0-9-]+", folder.name)  # <owner pid>-<n>-<image>
            if not named:
                continue  # not a device's folder
            state = _read_state(folder)
            if state and _alive(state.get("owner_pid"), state.get("owner_start")):
                continue
            if not state and Path(f"/proc/{named.group(1)}").exists():
                continue  # being set up
            if _alive(state.get("unshare_pid"), state.get("unshare_start")):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(state["unshare_pid"], signal.SIGKILL)  # its device dies with it (--kill-child)
            _remove_tree(folder)

    def remove_outdated(self, say: Callable[[str], None]) -> None:
        """Roots built from older recipes (unless a running device uses them)."""
        current = {self.base_dir()} | {d for i in IMAGES.values() if (d := self.layer_dir(i))}
        used = {p.parent for p in self.in_use()}
        for folder in list(self.path.glob("base-*")) + list(self.path.glob("layer-*")):
            if folder not in current and folder not in used:
                say(f"removing {folder.name} (built from an older recipe)")
                _remove_tree(folder)


def _read_state(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "device.json").read_text())
    except (OSError, ValueError):
        return {}


def missing_images(images: Sequence[str] | None = None, cache: Cache | None = None) -> list[str]:
    """The images of ``images`` (default: all) that the cache lacks."""
    cache = cache or Cache()
    return [name for name in images or list(IMAGES) if not cache.is_built(IMAGES[name])]


# --------------------------------------------------------------------------- building


@dataclasses.dataclass
class BuildRecord:
    name: str  # "base" or an image
    state: str  # "built" | "cached"
    seconds: float | None
    size_bytes: int
    details: str = ""


def build(
    images: Sequence[str] | None = None, *, cache: Cache | None = None, say: Callable[[str], None] = print
) -> list[BuildRecord]:
    """Build the base and the layers of ``images`` (default: all) that the cache lacks; BuildError when one fails."""
    cache = cache or Cache()
    names = list(images or IMAGES)
    unknown = [n for n in names if n not in IMAGES]
    if unknown:
        raise BuildError(f"unknown image {', '.join(unknown)}; images: {', '.join(IMAGES)}")
    problem = host_problem(for_build=True)
    if problem:
        raise BuildError(f"cannot build emulated devices here: {problem}")
    records = []
    with cache.lock(say):
        cache.remove_stale(say)
        records.append(_build_base(cache, say))
        for name in names:
            image = IMAGES[name]
            if image.wheels:
                records.append(_build_layer(cache, image, say))
        cache.remove_outdated(say)
    return records


def _check_mirror() -> None:
    url = f"{MIRROR}/dists/{SUITE}/InRelease"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=20):
            pass
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BuildError(
            f"the Debian mirror {MIRROR} is unreachable ({reason}): the base root of the emulated devices is "
            "downloaded from it once (set EDGEQ_DEVICES_MIRROR to use another mirror)"
        ) from None


def _build_base(cache: Cache, say: Callable[[str], None]) -> BuildRecord:
    final = cache.base_dir()
    if final.is_dir():
        info = cache.record(final)
        return BuildRecord("base", "cached", info.get("seconds"), info.get("size_bytes", 0))
    _check_mirror()
    _phase.clear()
    work = cache.path / f".build-base-{os.getpid()}"
    _remove_tree(work)
    work.mkdir(parents=True)
    root = work / "root"
    log = work / "build.log"
    recipe = BASE_RECIPE["debootstrap"]
    started = time.monotonic()
    say(
        f"[base] debootstrap {recipe['suite']} {recipe['arch']} ({recipe['variant']} + {', '.join(recipe['include'])}) "
        f"from {MIRROR}, under qemu-aarch64 (~3-4 min, ~270 MB)"
    )
    # debootstrap mounts /proc and /sys in the root: in a private mount namespace they cannot outlive it
    command = [
        _tool("unshare"),
        "--mount",
        "--propagation=private",
        "--fork",
        "--kill-child=SIGKILL",
        _tool("debootstrap"),
        f"--arch={recipe['arch']}",
        f"--variant={recipe['variant']}",
        f"--include={','.join(recipe['include'])}",
        recipe["suite"],
        str(root),
        MIRROR,
    ]
    if _run_logged(command, log, lambda line: _debootstrap_progress(line, started, say)) != 0:
        lines = log.read_text(errors="replace").splitlines()
        errors = [line for line in lines if line.startswith("E:")] or lines[-5:]
        unreachable = any(
            "Failed getting release file" in line or "Couldn't download" in line or "Failed to download" in line
            for line in lines
        )
        why = (
            f"debootstrap could not download from {MIRROR} (is the mirror reachable? EDGEQ_DEVICES_MIRROR sets another)"
            if unreachable
            else "debootstrap failed"
        )
        _remove_tree(work)
        raise BuildError(f"{why}: {' / '.join(errors)[-600:]}")
    say(f"[base] debootstrap done in {time.monotonic() - started:.0f} s; adding user {USER}, cleaning up")
    user = BASE_RECIPE["user"]
    steps = [
        f"useradd --create-home --shell {user['shell']} --uid {user['uid']} --user-group --password '{user['password']}' {user['name']}",
        f"echo {BASE_RECIPE['hostname']} > /etc/hostname",
        f"printf '127.0.1.1\\t%s\\n' {BASE_RECIPE['hostname']} >> /etc/hosts",
        "mkdir -p -m 0755 /run/sshd",
    ]
    for step in steps:
        _chroot(root, step, log)
    for pattern in BASE_RECIPE["remove"]:
        for path in root.glob(pattern):
            path.unlink()
    return _finish(cache, work, final, "base", started, {"recipe": BASE_RECIPE, "mirror": MIRROR}, say)


def _chroot(root: Path, command: str, log: Path) -> None:
    env = {"PATH": PATH, "HOME": "/root", "LC_ALL": "C"}
    done = subprocess.run(
        [_tool("chroot"), str(root), "/bin/sh", "-ec", command], env=env, capture_output=True, text=True
    )
    with open(log, "a") as handle:
        handle.write(f"$ {command}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        raise BuildError(f"in the new root, `{command}` failed: {(done.stderr or done.stdout).strip()[-400:]}")


_PHASES = {
    "Retrieving": "downloading",
    "Validating": "downloading",
    "Checking": "downloading",
    "Extracting": "extracting",
    "Installing": "installing",
    "Unpacking": "unpacking",
    "Configuring": "configuring",
}
_phase: dict[str, str] = {}


def _debootstrap_progress(line: str, started: float, say: Callable[[str], None]) -> None:
    """One line per phase of debootstrap (not one per package)."""
    if line.startswith(("E:", "W:")):
        say(f"[base] {line}")
        return
    word = line[3:].split(" ", 1)[0] if line.startswith("I: ") else ""
    phase = _PHASES.get(word)
    if phase and _phase.get("now") != phase:
        _phase["now"] = phase
        elapsed = int(time.monotonic() - started)
        say(f"[base] {elapsed // 60}:{elapsed % 60:02d} {phase}...")


def _run_logged(command: list[str], log: Path, on_line: Callable[[str], None]) -> int:
    env = {"PATH": PATH, "LC_ALL": "C", "HOME": "/root"}
    with open(log, "a") as handle:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=_pdeathsig
        )
        assert process.stdout is not None
        try:
            for line in process.stdout:
                handle.write(line)
                handle.flush()
                on_line(line.rstrip("\n"))
        except BaseException:
            process.kill()
            process.wait()
            raise
        return process.wait()


def _finish(
    cache: Cache,
    work: Path,
    final: Path,
    name: str,
    started: float,
    extra: dict[str, Any],
    say: Callable[[str], None],
) -> BuildRecord:
    seconds = time.monotonic() - started
    size = _disk_bytes(work / "root")
    record = {
        "name": name,
        "seconds": round(seconds, 1),
        "size_bytes": size,
        "built_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **extra,
    }
    (work / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    os.sync()  # the rename below marks the build complete: what it names must be on disk first
    os.rename(work, final)
    say(f"[{name}] built in {seconds:.0f} s, {_mb(size)}: {final}")
    return BuildRecord(name, "built", seconds, size, ", ".join(extra.get("wheels", [])))


def _build_layer(cache: Cache, image: Image, say: Callable[[str], None]) -> BuildRecord:
    final = cache.layer_dir(image)
    assert final is not None
    if final.is_dir():
        info = cache.record(final)
        return BuildRecord(image.name, "cached", info.get("seconds"), info.get("size_bytes", 0))
    work = cache.path / f".build-{image.name}-{os.getpid()}"
    _remove_tree(work)
    (work / "root").mkdir(parents=True)
    started = time.monotonic()
    wheels = work / "wheels"
    how = "with the dependencies pip resolves" if image.with_dependencies else "alone (on apt's numpy)"
    say(f"[{image.name}] downloading {' '.join(image.wheels)} {how} for manylinux aarch64 / CPython 3.11")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        *(f"--platform={p}" for p in PLATFORMS),
        "--python-version=3.11",
        "--implementation=cp",
        "--abi=cp311",
        "--abi=abi3",
        "--abi=none",
        *([] if image.with_dependencies else ["--no-deps"]),
        "--dest",
        str(wheels),
        *image.wheels,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    (work / "build.log").write_text(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        errors = [
            line for line in done.stderr.splitlines() if "ERROR" in line or "Error" in line
        ] or done.stderr.splitlines()[-3:]
        _remove_tree(work)
        raise BuildError(
            f"pip could not download {' '.join(image.wheels)} for the device (is PyPI reachable from this machine?): "
            + " / ".join(errors)[-600:]
        )
    files = sorted(wheels.glob("*.whl"))
    for wheel in files:
        _install_wheel(wheel, work / "root")
    say(f"[{image.name}] unpacked {len(files)} wheels into /{SITE}; compiling their .pyc files")
    _compile(cache, work / "root")
    _remove_tree(wheels)
    return _finish(
        cache,
        work,
        final,
        image.name,
        started,
        {"recipe": image.recipe(cache.base_stamp), "wheels": [w.name for w in files]},
        say,
    )


def _install_wheel(wheel: Path, root: Path) -> None:
    """Unpack a wheel as pip installs it into Debian's /usr/local (purelib = platlib = dist-packages)."""
    site = root / SITE
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        data = dist_info[: -len(".dist-info")] + ".data"
        project = dist_info.split("-")[0]
        destinations = {
            "purelib": site,
            "platlib": site,
            "scripts": root / "usr/local/bin",
            "headers": root / "usr/local/include/python3.11" / project,
            "data": root / "usr/local",
        }
        for info in archive.infolist():
            if info.is_dir():
                continue
            parts = info.filename.split("/")
            if ".." in parts or info.filename.startswith("/"):
                raise BuildError(f"{wheel.name}: unsafe path {info.filename}")
            target = destinations[parts[1]].joinpath(*parts[2:]) if parts[0] == data else site.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
            executable = (info.external_attr >> 16) & 0o111 or parts[:2] == [data, "scripts"]
            target.chmod(0o755 if executable else 0o644)
            if parts[:2] == [data, "scripts"]:
                text = target.read_bytes()
                if text.startswith(b"#!python"):
                    target.write_bytes(b"#!/usr/bin/python3" + text[len(b"#!python") :])
        if f"{dist_info}/entry_points.txt" in names:
            entry_points = configparser.ConfigParser(delimiters=("=",))
            entry_points.optionxform = str  # type: ignore[assignment,method-assign]
            entry_points.read_string(archive.read(f"{dist_info}/entry_points.txt").decode())
            if entry_points.has_section("console_scripts"):
                for name, target_text in entry_points.items("console_scripts"):
                    module, _, attribute = target_text.partition(":")
                    script = root / "usr/local/bin" / name
                    script.parent.mkdir(parents=True, exist_ok=True)
                    script.write_text(  # pip's console-script launcher
                        "#!/usr/bin/python3\n# -*- coding: utf-8 -*-\nimport re\nimport sys\n"
                        f"from {module.strip()} import {attribute.strip().split('.')[0]}\n"
                        "if __name__ == '__main__':\n"
                        "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
                        f"    sys.exit({attribute.strip()}())\n"
                    )
                    script.chmod(0o755)
        (site / dist_info / "INSTALLER").write_text("edgeq-emulated-devices\n")


def _compile(cache: Cache, layer_root: Path) -> None:
    """Byte-compile the layer as pip does at install time, with the device's own python3 (under qemu).

    Without it every import on the device would compile again: /usr/local is not writable by pi.
    The device's root is the base with the layer's /usr/local bound over its own, in a private mount namespace.
    """
    base = cache.base_dir() / "root"
    script = 'mount --bind "$1" "$2/usr/local" && exec chroot "$2" python3 -m compileall -q -j 0 "/$3"'
    done = subprocess.run(
        [_tool("unshare"), "--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh"]
        + [str(layer_root / "usr/local"), str(base), SITE],
        env={"PATH": PATH, "LC_ALL": "C.UTF-8", "HOME": "/root"},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        # like pip, a file that does not compile (a test fixture with Python 2 syntax) is no failure; others are
        failed = [line for line in done.stdout.splitlines() if line.startswith("*** Error compiling")]
        if not failed:
            raise BuildError(f"compiling the layer's .pyc files failed: {(done.stderr or done.stdout).strip()[-400:]}")


# --------------------------------------------------------------------------- devices

_COUNT = itertools.count(1)
_DEVICE_SCRIPT = r"""
set -eu
root=$1 lower=$2 upper=$3 work=$4 cpuinfo=$5 model=$6 hostname=$7
mount -t overlay edgeq-device -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$root"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount --bind "$cpuinfo" "$root/proc/cpuinfo"
mount -o remount,bind,ro "$root/proc/cpuinfo"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t tmpfs -o mode=0755,size=64k,nosuid,nodev,noexec firmware "$root/sys/firmware"
mkdir -p "$root/sys/firmware/devicetree/base"
cp "$model" "$root/sys/firmware/devicetree/base/model"
chmod 0444 "$root/sys/firmware/devicetree/base/model"
mount -o remount,ro "$root/sys/firmware"
mount -t tmpfs -o mode=0755,size=1m,nosuid dev "$root/dev"
mknod -m 0666 "$root/dev/null" c 1 3
mknod -m 0666 "$root/dev/zero" c 1 5
mknod -m 0666 "$root/dev/full" c 1 7
mknod -m 0666 "$root/dev/random" c 1 8
mknod -m 0666 "$root/dev/urandom" c 1 9
mknod -m 0666 "$root/dev/tty" c 5 0
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mkdir "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$root/dev/shm"
mount -t tmpfs -o mode=0755,size=16m,nosuid,nodev run "$root/run"
mkdir -m 0755 "$root/run/sshd"
mkdir -m 1777 "$root/run/lock"
hostname "$hostname"
cd "$root"
exec chroot "$root" /usr/sbin/sshd -D -e -f /etc/ssh/edgeq_sshd_config
"""


@dataclasses.dataclass
class EmulatedDevice:
    """A running emulated device: where its sshd listens, its host key, its files (seen from this machine)."""

    image: str
    board: str
    name: str
    host: str
    port: int
    host_key: str  # "ssh-ed25519 AAAA... comment"
    run_dir: Path  # its writable layer, config and log (removed when it stops)
    process: subprocess.Popen[bytes]  # the unshare holding its namespaces
    pid: int  # the device's init, its sshd, as this machine numbers it
    qemu_cpu: str
    cores: int
    start_s: float
    user: str = USER
    uid: int = 1000
    gid: int = 1000

    @property
    def spec(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def root(self) -> Path:
        """The device's root file system from this machine (valid while it runs)."""
        return Path(f"/proc/{self.pid}/root")

    @property
    def home(self) -> Path:
        return self.root / "home" / self.user

    @property
    def log(self) -> Path:
        return self.run_dir / "sshd.log"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def known_hosts_line(self) -> str:
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{name} {' '.join(self.host_key.split()[:2])}"

    def run_as_root(
        self, command: str, *, timeout_s: float = 300, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command inside the device as root (its namespaces and root; under qemu like its own programs)."""
        if not self.running:
            raise DeviceError(f"device {self.name} is not running")
        return subprocess.run(
            [_tool("nsenter"), f"--target={self.pid}", "--mount", "--uts", "--ipc", "--pid", "--root", "--wd"]
            + ["/bin/sh", "-c", command],
            env={
                "PATH": PATH,
                "HOME": "/root",
                "LC_ALL": "C.UTF-8",
                "QEMU_CPU": self.qemu_cpu,
                "OMP_NUM_THREADS": str(self.cores),
            },
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def stop(self, timeout_s: float = 15) -> None:
        """Stop its sshd (the namespace's init: every process of the device ends with it), discard its writable layer."""
        if self.process.poll() is None:
            if _parent_of(self.pid) == self.process.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                if _parent_of(self.pid) == self.process.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, signal.SIGKILL)
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        _remove_tree(self.run_dir)


def _parent_of(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rfind(")") + 2 :].split()[1])


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _parent_of(int(entry)) == pid:
            found.append(int(entry))
    return found


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _sshd_config(host: str, port: int, board: Board) -> str:
    return "\n".join(
        [
            "# written by scripts/emulated_devices.py",
            f"ListenAddress {host}:{port}",
            "HostKey /etc/ssh/ssh_host_ed25519_key",
            "PidFile none",
            "UsePAM no",
            "PermitRootLogin no",
            f"AllowUsers {USER}",
            "AuthorizedKeysFile .ssh/authorized_keys",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "MaxStartups 64:30:128",
            "MaxSessions 32",
            "PrintMotd no",
            "AcceptEnv LANG LC_*",
            # the sessions' programs run under qemu as the board's CPU; nproc says the board's core count
            f"SetEnv QEMU_CPU={board.qemu_cpu} OMP_NUM_THREADS={board.cores}",
            "LogLevel VERBOSE",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
            "",
        ]
    )


def _seed(upper: Path, lowers: list[Path], relative: str, content: bytes, mode: int, uid: int, gid: int) -> None:
    """Write a file into the writable layer; its parent folders get the owner and mode they have below."""
    parts = Path(relative).parts
    for depth in range(1, len(parts)):
        sub = Path(*parts[:depth])
        folder = upper / sub
        if folder.is_dir():
            continue
        below = next((low / sub for low in lowers if (low / sub).is_dir()), None)
        folder.mkdir()
        if below is not None:
            st = below.stat()
            os.chown(folder, st.st_uid, st.st_gid)
            folder.chmod(st.st_mode & 0o7777)
        else:
            os.chown(folder, uid, gid)
            folder.chmod(0o700)
    path = upper / relative
    path.write_bytes(content)
    os.chown(path, uid, gid)
    path.chmod(mode)


def _passwd_ids(base_root: Path, user: str) -> tuple[int, int]:
    for line in (base_root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise DeviceError(f"no user {user} in {base_root}/etc/passwd")


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: a forked child must not load libraries


def _pdeathsig() -> None:
    """In the child, before exec: die with the parent (a killed test run or `up` leaves no device running)."""
    _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_device(
    image: str,
    *,
    client_public_key: str,
    host: str = "127.0.0.2",
    port: int = 0,
    name: str | None = None,
    work_dir: Path | None = None,
    cache: Cache | None = None,
    timeout_s: float = 120,
) -> EmulatedDevice:
    """Start a device of ``image`` (built: see :func:`build`) with a fresh writable layer; ``port`` 0 picks a free one.

    ``client_public_key`` ("ssh-ed25519 AAAA...") may log in as ``pi``. The device's folder (its writable
    layer, sshd config and log) is made in ``work_dir`` (default: the cache's run/ folder) and removed at
    :meth:`EmulatedDevice.stop`; the folders of devices whose starting process died are removed at the next start.
    """
    problem = host_problem()
    if problem:
        raise DeviceError(f"cannot run emulated devices here: {problem}")
    if image not in IMAGES:
        raise DeviceError(f"unknown image {image!r}; images: {', '.join(IMAGES)}")
    spec = IMAGES[image]
    board = BOARDS[spec.board]
    cache = cache or Cache()
    if not cache.is_built(spec):
        raise DeviceError(f"image {image} is not built: run `scripts/emulated_devices.py build {image}`")
    parent = Path(work_dir).absolute() if work_dir else cache.run_dir
    cache.remove_stale(extra_run_dir=parent)
    started = time.monotonic()
    number = next(_COUNT)
    name = name or f"{image}-{number}"
    run_dir = parent / f"{os.getpid()}-{number}-{image}"
    _remove_tree(run_dir)
    for sub in ("upper", "work", "merged"):
        (run_dir / sub).mkdir(parents=True)
    lowers = cache.lowerdirs(spec)
    owner_start = _start_time(os.getpid())
    state: dict[str, Any] = {
        "image": image,
        "name": name,
        "owner_pid": os.getpid(),
        "owner_start": owner_start,
        "lowerdirs": [str(p) for p in lowers],
    }
    (run_dir / "device.json").write_text(json.dumps(state))
    process: subprocess.Popen[bytes] | None = None
    try:
        uid, gid = _passwd_ids(lowers[-1], USER)
        subprocess.run(
            [_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", f"{name}", "-f", str(run_dir / "host_key")],
            check=True,
            capture_output=True,
        )
        upper = run_dir / "upper"
        private, public = (run_dir / "host_key").read_bytes(), (run_dir / "host_key.pub").read_bytes()
        _seed(upper, lowers, "etc/ssh/ssh_host_ed25519_key", private, 0o600, 0, 0)
        _seed(upper, lowers, "etc/ssh/ssh_host_ed25519_key.pub", public, 0o644, 0, 0)
        _seed(
            upper,
            lowers,
            f"home/{USER}/.ssh/authorized_keys",
            client_public_key.strip().encode() + b"\n",
            0o600,
            uid,
            gid,
        )
        (upper / f"home/{USER}/.ssh").chmod(0o700)
        attempts = 1 if port else 5
        for attempt in range(attempts):
            chosen = port or free_port(host)
            _seed(upper, lowers, "etc/ssh/edgeq_sshd_config", _sshd_config(host, chosen, board).encode(), 0o644, 0, 0)
            process, pid = _launch(run_dir, lowers, board, name, timeout_s)
            if pid is not None:
                break
            if attempt == attempts - 1 or "Address already in use" not in _tail(run_dir / "sshd.log"):
                raise DeviceError(
                    f"device {name} ({image}) did not start on {host}:{chosen}: {_tail(run_dir / 'sshd.log')}"
                )
        assert pid is not None and process is not None
        state.update(unshare_pid=process.pid, unshare_start=_start_time(process.pid), pid=pid, host=host, port=chosen)
        (run_dir / "device.json").write_text(json.dumps(state))
    except BaseException:
        if process is not None and process.poll() is None:
            process.kill()  # unshare: its --kill-child takes the device's init, and so the device, down with it
            process.wait()
        _remove_tree(run_dir)
        raise
    return EmulatedDevice(
        image=image,
        board=board.name,
        name=name,
        host=host,
        port=chosen,
        host_key=public.decode().strip(),
        run_dir=run_dir,
        process=process,
        pid=pid,
        qemu_cpu=board.qemu_cpu,
        cores=board.cores,
        start_s=time.monotonic() - started,
        uid=uid,
        gid=gid,
    )


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " / ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _launch(
    run_dir: Path, lowers: list[Path], board: Board, name: str, timeout_s: float
) -> tuple[subprocess.Popen[bytes], int | None]:
    """Start the namespaces and the device's sshd; (process, the sshd's pid) once it listens, pid None if it ended."""
    log = run_dir / "sshd.log"
    command = [
        _tool("unshare"),
        "--mount",
        "--pid",
        "--uts",
        "--ipc",
        "--fork",
        "--propagation=private",
        "--kill-child=SIGKILL",  # unshare killed: the device's init (and so the device) dies too
        "/bin/sh",
        "-c",
        _DEVICE_SCRIPT,
        "edgeq-device",
        str(run_dir / "merged"),
        ":".join(str(p) for p in lowers),
        str(run_dir / "upper"),
        str(run_dir / "work"),
        str(board.cpuinfo),
        str(board.model_file),
        name if re.fullmatch(r"[A-Za-z0-9-]{1,63}", name) else "raspberrypi",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env={"PATH": PATH, "LC_ALL": "C", "QEMU_CPU": board.qemu_cpu},
            start_new_session=True,  # Ctrl-C at a terminal reaches `up`, which stops the device in order
            preexec_fn=_pdeathsig,
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "Server listening on" in log.read_text(errors="replace"):
            children = _children_of(process.pid)
            if children:
                return process, children[0]
        if process.poll() is not None:
            return process, None
        time.sleep(0.02)
    process.kill()
    process.wait()
    raise DeviceError(f"device {name} did not start within {timeout_s:.0f} s: {_tail(log)}")


# --------------------------------------------------------------------------- the command line


def _print_build_table(records: list[BuildRecord], cache: Cache, seconds: float) -> None:
    print(f"{'root':<12} {'state':<7} {'build s':>8} {'size':>8}  what")
    for r in records:
        what = "Debian bookworm arm64 root (all images)" if r.name == "base" else IMAGES[r.name].description
        built = f"{r.seconds:.0f}" if r.seconds is not None else "-"
        print(f"{r.name:<12} {r.state:<7} {built:>8} {_mb(r.size_bytes):>8}  {what}")
    total = sum(r.size_bytes for r in records)
    print(f"cache: {cache.path} ({_mb(total)}); this run: {seconds:.0f} s")


def _cmd_build(args: argparse.Namespace) -> int:
    cache = Cache()
    started = time.monotonic()
    records = build(args.images or None, cache=cache)
    if all(r.state == "cached" for r in records):
        total = sum(r.size_bytes for r in records)
        names = ", ".join(args.images or IMAGES)
        print(f"emulated devices: {names}: cached in {cache.path} ({_mb(total)}), nothing to build")
    else:
        _print_build_table(records, cache, time.monotonic() - started)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    cache = Cache()
    print(f"cache: {cache.path}")
    base = cache.base_dir()
    info = cache.record(base)
    state = f"built {info.get('built_at', '?')}, {_mb(info.get('size_bytes', 0))}" if base.is_dir() else "not built"
    print(f"  {'base':<11} {state}")
    for image in IMAGES.values():
        layer = cache.layer_dir(image)
        if layer is None:
            text = "the base alone" if base.is_dir() else "not built"
        elif layer.is_dir():
            record = cache.record(layer)
            text = f"built {record.get('built_at', '?')}, layer {_mb(record.get('size_bytes', 0))}: {', '.join(record.get('wheels', []))}"
        else:
            text = "not built"
        print(f"  {image.name:<11} {text}  [{image.board}] {image.description}")
    outdated = [
        p.name
        for p in list(cache.path.glob("base-*")) + list(cache.path.glob("layer-*"))
        if p != base and p not in {cache.layer_dir(i) for i in IMAGES.values()}
    ]
    if outdated:
        print(f"  outdated (removed by the next build): {', '.join(sorted(outdated))}")
    for device in cache.live_devices():
        print(
            f"  running: {device['name']} ({device['image']}) on {device.get('host')}:{device.get('port')}, pid {device.get('pid')}"
        )
    return 0


def _cmd_clean(args: argparse.Namespace) -> int:
    cache = Cache()
    cache.remove_stale()
    live = cache.live_devices()
    if live:
        names = ", ".join(f"{d['name']} (owner pid {d['owner_pid']})" for d in live)
        print(f"error: devices are running: {names}; stop them first", file=sys.stderr)
        return 1
    if cache.path.is_dir():
        size = _disk_bytes(cache.path)
        _remove_tree(cache.path)
        print(f"removed {cache.path} ({_mb(size)})")
    else:
        print(f"nothing to remove: {cache.path} does not exist")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _cmd_up(args: argparse.Namespace) -> int:
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # each stops the device in order
        signal.signal(number, _interrupt)
    cache = Cache()
    if missing_images([args.image], cache):
        print(f"image {args.image} is not built yet: building it first")
        build([args.image], cache=cache)
    scratch = Path(tempfile.mkdtemp(prefix="edgeq-device-up-"))
    key = Path(args.key).expanduser() if args.key else Path.home() / ".ssh" / "id_ed25519.pub"
    if args.key is None and not key.exists():
        subprocess.run(
            [
                _tool("ssh-keygen"),
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "edgeq-emulated",
                "-f",
                str(scratch / "id_ed25519"),
            ],
            check=True,
        )
        key = scratch / "id_ed25519.pub"
    private = key.with_suffix("") if key.suffix == ".pub" else key
    device = start_device(args.image, client_public_key=key.read_text(), host=args.address, port=args.port, cache=cache)
    known_hosts = scratch / "known_hosts"
    known_hosts.write_text(device.known_hosts_line() + "\n")
    board = BOARDS[device.board]
    print(
        f"{device.name} is up ({board.model}; aarch64 under qemu -cpu {device.qemu_cpu}), started in {device.start_s:.1f} s\n"
        f"  ssh -i {private} -o UserKnownHostsFile={known_hosts} -p {device.port} {device.user}@{device.host}\n"
        f"  known_hosts line: {device.known_hosts_line()}\n"
        f"  edgeq targets detect --host {device.spec} -k {private} --known-hosts {known_hosts}\n"
        f"  its files from here: {device.root} (as root)\n"
        "Ctrl-C stops it and discards everything written to it."
    )
    try:
        while device.running:
            time.sleep(0.5)
        print(f"the device ended by itself: {_tail(device.log)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"stopping {device.name}", flush=True)
        return 0
    finally:
        device.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="emulated_devices.py",
        description="Emulated Raspberry Pi OS devices (arm64 under qemu-user, real sshd on loopback) for edgeq's tests.",
        epilog="Images: "
        + "; ".join(f"{i.name} ({i.board}): {i.description}" for i in IMAGES.values())
        + ". Cache: $EDGEQ_DEVICES_CACHE, default ~/.cache/edgeq/devices. Mirror: $EDGEQ_DEVICES_MIRROR.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("build", help="build the images the cache lacks (all by default); quick when cached")
    p.add_argument("images", nargs="*", metavar="IMAGE", help=f"of: {', '.join(IMAGES)}")
    p.set_defaults(run=_cmd_build)
    p = commands.add_parser("up", help="serve one device until Ctrl-C (builds its image first if needed)")
    p.add_argument("image", choices=list(IMAGES), metavar="IMAGE", help=f"one of: {', '.join(IMAGES)}")
    p.add_argument("--address", default="127.0.0.2", help="loopback address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--key", help="public key allowed to log in as pi (default: ~/.ssh/id_ed25519.pub, else a new one)")
    p.set_defaults(run=_cmd_up)
    p = commands.add_parser("list", help="images in the cache and running devices")
    p.set_defaults(run=_cmd_list)
    p = commands.add_parser("clean", help="remove the cache (refused while devices run)")
    p.set_defaults(run=_cmd_clean)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (BuildError, DeviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
