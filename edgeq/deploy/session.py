"""One run of the device-side ``deploy.sh`` over a connection: its line protocol, and none of the policy.

``Session(conn, action, directory, python)`` starts the script on one
channel; :meth:`Session.state` reads the state report it opens with, and
:meth:`~Session.expect` / :meth:`~Session.send` carry the dialogue that
:mod:`edgeq.deploy.device` conducts. An ``error`` line, or a stream that ends
early, becomes a :class:`~edgeq.errors.RemoteCommandError`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
from typing import TYPE_CHECKING

from .. import remote
from ..errors import EdgeqError, RemoteCommandError
from .manifest import Manifest, parse_manifest

if TYPE_CHECKING:
    from ..connection import Connection, ProgressCallback, RemoteProcess

__all__ = ["FolderState", "Session", "idle_s"]

log = logging.getLogger(__name__)

_VERSION_RE = re.compile(r"^[0-9a-f]{12}$")


@dataclasses.dataclass(frozen=True)
class FolderState:
    """What the device reports of a model's folder before it acts on it."""

    current: str | None  # the active version
    versions: tuple[str, ...]  # the version folders on the device
    free_bytes: int | None  # free space in the folder's file system, when the device could tell
    manifest: Manifest
    arch: str | None = None  # the userland's architecture in the targets' spelling (uname -m and the word size)
    kernel_arch: str | None = None  # uname -m


def idle_s(conn: Connection) -> int:
    """How long the device waits for a word from edgeq before it takes edgeq (or the link) for gone.

    edgeq answers the device at once and streams uploads without pause, so
    silence is a dead client or link; ``--connect-timeout`` is how long edgeq
    itself waits for a silent peer, and three of them are a generous margin.
    """
    return int(min(60.0, max(3.0, 3 * conn.options.connect_timeout_s)))


class Session:
    """One run of ``deploy.sh`` (``action``: deploy, rollback, status, remove) speaking its line protocol, on one channel.

    ``transfer``: the session uploads a model, so it may take the transfer
    timeout on top of the command timeout. ``note`` lines (what the device
    finished for a stopped earlier run) are collected in ``notes`` wherever
    they come.
    """

    def __init__(self, conn: Connection, action: str, directory: str, python: str, *, transfer: bool = False):
        self.label = conn.label
        self.notes: list[str] = []
        options = conn.options
        timeout_s = options.command_timeout_s + (options.transfer_timeout_s if transfer else 0.0)
        script = remote.script("deploy.sh", conn.edgeq_dir)
        command = remote.script_command(
            script, action, directory, python or "python3", secrets.token_hex(6), str(idle_s(conn))
        )
        self.process: RemoteProcess = conn.start(
            command, timeout_s, label=action, requires=(script,), await_output=True
        )

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
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
        """The next line, which must be one of ``kinds``: (its kind, the rest of it)."""
        line = self.line()
        kind, _, rest = line.partition(" ")
        if kind not in kinds:
            raise RemoteCommandError(
                f"{self.label}: unexpected answer from the device: {line[:200]!r} (expected {' or '.join(kinds)})"
            )
        return kind, rest

    def send(self, *lines: str) -> None:
        self.process.write("".join(line + "\n" for line in lines).encode("utf-8"))

    def send_file(self, path: str, progress: ProgressCallback | None = None) -> int:
        """Stream the file at ``path`` (after an ``upload`` line); the bytes sent."""
        return self.process.send_file(path, progress)

    def state(self, ready: bool = True) -> FolderState | None:
        """The state report (and the ``ready`` after it); None when the model folder does not exist (status and remove only)."""
        first = self.line()
        if first != "edgeq-state 1":
            raise RemoteCommandError(f"{self.label}: unexpected answer from the device: {first[:200]!r}")
        values: dict[str, str] = {}
        while True:
            kind, rest = self.expect("current", "versions", "free_kb", "machine", "manifest", "absent")
            if kind == "absent":
                return None
            values[kind] = rest
            if kind == "manifest":
                break
        size = int(values["manifest"]) if values["manifest"].isdigit() else 0
        manifest: Manifest = {}
        if size:
            parsed = parse_manifest(self.process.read_exact(size))
            if parsed is None:
                log.warning("%s: manifest.json is not valid JSON; starting a new one", self.label)
            else:
                manifest = parsed
        if ready:
            self.expect("ready")
        current = values.get("current", "-")
        free = values.get("free_kb", "-")
        kernel_arch, bits = ([*values.get("machine", "-").split(), "-", "-"])[:2]
        from ..machine import userland_arch

        return FolderState(
            current=None if current == "-" else current,
            versions=tuple(v for v in values.get("versions", "-").split() if _VERSION_RE.match(v)),
            free_bytes=int(free) * 1024 if free.isdigit() else None,
            manifest=manifest,
            arch=None if kernel_arch == "-" else userland_arch(kernel_arch, bits),
            kernel_arch=None if kernel_arch == "-" else kernel_arch,
        )

    def until_done(self, *also: str) -> list[str]:
        """Read up to ``done`` (``warning`` lines and ``also`` kinds may come first); the warnings."""
        warnings = []
        while True:
            kind, rest = self.expect(*also, "warning", "done")
            if kind == "warning":
                warnings.append(rest)
            if kind == "done":
                return warnings

    def early_error(self) -> str | None:
        """The reason of an ``error`` line the device sent before it stopped reading (a failed write), if any."""
        try:
            for _ in range(20):
                line = self.process.readline()
                if line is None:
                    return None
                if line.startswith("error "):
                    return line[6:]
        except EdgeqError:
            return None
        return None

    def finish(self) -> None:
        """Wait for the script's end; a failure status raises."""
        self.process.wait(check=True)
