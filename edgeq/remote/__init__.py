"""The on-device protocol: POSIX sh scripts (dash, BusyBox ash) and the host side that places and names them.

The scripts beside this file are the only shell edgeq runs on devices:

* ``wrapper.sh``: every command runs under it (its own process group, a
  timeout watchdog, the check that the files it needs are on the device);
* ``deploy.sh``: deploy, rollback, status and remove of one model folder;
* ``detect.sh``: what a device is (``edgeq targets detect``);
* ``put.sh``: the atomic upload of one file (``Connection.put``);
* ``runtime.py``: edgeq's runtime folder (``edgeq provision``), run with the device's Python.

They are read with :mod:`importlib.resources` and kept on each device once
per content, like the probe program: under ``<edgeq folder>/scripts/`` with
the first 16 hex digits of their sha256 in their names
(:class:`DeviceFile`). A command names the device files it needs; the
wrapper checks for them in the same remote command that runs it (no round
trip of its own) and, when one is missing, says so and runs nothing
(``edgeq-missing PATH`` on stderr, exit status 97). The connection then
uploads them with :func:`install_command` and runs the command again: one
extra round trip per device and edgeq version, not per command.

Every command has a short label ("deploy", "status", "detect", ...) that
error messages use instead of the shell text.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources
import posixpath
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..connection import Connection

__all__ = [
    "MISSING_MARKER",
    "MISSING_STATUS",
    "SCRIPTS",
    "TIMEOUT_MARKER",
    "DeviceFile",
    "content_digest",
    "install_command",
    "launcher",
    "missing_paths",
    "put_bytes",
    "script",
    "script_command",
    "script_source",
]

SCRIPTS = ("wrapper.sh", "deploy.sh", "detect.sh", "put.sh", "runtime.py")
MISSING_STATUS = 97
MISSING_MARKER = "edgeq-missing "
TIMEOUT_MARKER = "edgeq-watchdog: "


@dataclasses.dataclass(frozen=True)
class DeviceFile:
    """A file edgeq keeps on devices once per content: where it goes (its name carries its hash) and its bytes."""

    path: str  # relative paths are under the login user's home
    data: bytes = dataclasses.field(repr=False, compare=False)

    @classmethod
    def at(cls, folder: str, name: str, data: bytes) -> DeviceFile:
        """``name`` in ``folder`` (a relative folder is under the home; "./" is prepended so no path starts with "-")."""
        if not folder.startswith(("/", "./", "../")):
            folder = "./" + folder
        return cls(posixpath.join(folder, name), data)


def content_digest(data: bytes) -> str:
    """The first 16 hex digits of ``data``'s sha256: what cached device files are named by."""
    return hashlib.sha256(data).hexdigest()[:16]


@functools.cache
def script_source(name: str) -> bytes:
    """The text of one of the packaged scripts (``SCRIPTS``)."""
    if name not in SCRIPTS:
        raise ValueError(f"no device script named {name!r}")
    return importlib.resources.files(__name__).joinpath(name).read_bytes()


@functools.cache
def script(name: str, edgeq_dir: str) -> DeviceFile:
    """Where a device whose edgeq folder is ``edgeq_dir`` keeps the script ``name``, and its text."""
    data = script_source(name)
    stem, _, suffix = name.rpartition(".")
    return DeviceFile.at(posixpath.join(edgeq_dir, "scripts"), f"{stem}-{content_digest(data)}.{suffix}", data)


def script_command(file: DeviceFile, *args: str) -> str:
    """The command line that runs the device script ``file`` with ``args`` (every word quoted)."""
    return shlex.join(["sh", file.path, *args])


def launcher(wrapper: DeviceFile, timeout_s: int, label: str, command: str, requires: Sequence[DeviceFile]) -> str:
    """The command line sent to the device: run ``command`` under the cached wrapper, or say the wrapper is missing.

    Plain POSIX syntax, read by the login shell (bash, dash, ash, zsh).
    """
    w = shlex.quote(wrapper.path)
    args = shlex.join([str(timeout_s), label, command, *(f.path for f in requires)])
    return (
        f"[ -f {w} ] && exec sh {w} {args}; "
        f"echo {shlex.quote(MISSING_MARKER + wrapper.path)} >&2; exit {MISSING_STATUS}"
    )


def missing_paths(exit_status: int, stderr: str) -> list[str]:
    """The device files a command reported missing (empty when it did not)."""
    if exit_status != MISSING_STATUS:
        return []
    return [line[len(MISSING_MARKER) :] for line in stderr.splitlines() if line.startswith(MISSING_MARKER)]


def install_command(file: DeviceFile, token: str) -> str:
    """The command that writes ``file`` (its bytes on stdin, then end of input) where it goes.

    The bootstrap of the scheme above, so it cannot be a device script
    itself: the bytes go to a temporary name, their count is checked, then
    the file is renamed into place; a cut stream installs nothing under a
    cached name. (One command per file: BusyBox's ``head -c`` reads past its
    count from a pipe, so several files cannot share one stream.)
    """
    path = shlex.quote(file.path)
    temp = shlex.quote(f"{file.path}.{token}.part")
    folder = shlex.quote(posixpath.dirname(file.path) or ".")
    size = len(file.data)
    return (
        f"umask 022; {{ mkdir -p -- {folder} && cat > {temp} && [ $(wc -c < {temp}) -eq {size} ] "
        f"&& mv -f -- {temp} {path}; }} || {{ rm -f -- {temp}; echo 'edgeq: cannot write '{path} >&2; exit 1; }}"
    )


def put_bytes(conn: Connection, data: bytes, path: str) -> int:
    """Write ``data`` to ``path`` on the device through ``conn.put`` (atomic: a temporary name, then a rename)."""
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="edgeq-put-") as handle:
        handle.write(data)
        handle.flush()
        return conn.put(handle.name, path)
