"""A started command's I/O, whatever runs it: stdout and stderr drained together, one deadline, the result.

stdout and stderr are drained while a command runs and before its exit
status is awaited (``recv_exit_status`` can block forever otherwise). The
SSH and local implementations (:mod:`.ssh`, :mod:`.local`) provide the
primitives: move what arrived into the buffers, send, close stdin, poll the
exit status, abort.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Self

from .. import remote
from ..errors import CommandTimeoutError, EdgeqError, RemoteCommandError
from .base import TIMEOUT_MARKER, CommandResult, DeviceFilesMissing, ProgressCallback

__all__ = ["CHUNK_BYTES", "GRACE_S", "POLL_S", "BufferedProcess", "short_command", "whole_seconds"]

GRACE_S = 5.0  # the client waits this long past a command's timeout for the watchdog to act
CHUNK_BYTES = 256 * 1024
POLL_S = 0.05


def whole_seconds(timeout_s: float) -> int:
    """A timeout for the device's wrapper, which counts whole seconds (at least one)."""
    return max(1, math.ceil(timeout_s))


def short_command(command: str, width: int = 60) -> str:
    """A command's first line, cut to ``width``: how messages name a command that has no label."""
    first = command.strip().splitlines()[0] if command.strip() else command
    return first if len(first) <= width and "\n" not in command.strip() else first[: width - 3] + "..."


def _tail(stderr: str) -> str:
    text = stderr.strip()
    if not text:
        return ""
    return ": " + (text if len(text) <= 400 else "..." + text[-400:])


class BufferedProcess:
    """Shared buffering for a started command: stdout/stderr drained together, one deadline.

    Implements :class:`edgeq.connection.RemoteProcess`; subclasses provide the primitives.
    """

    def __init__(self, label: str, command: str, timeout_s: float, name: str | None = None):
        self.label = label  # the device's
        self.command = command
        self.name = name or short_command(command)  # the command's, for messages
        self.timeout_s = timeout_s
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s + GRACE_S
        self._out = bytearray()
        self._err = bytearray()
        self._eof = False
        self._stdin_closed = False
        self._closed = False  # aborted by us: only what is already buffered can still be read

    # primitives the subclasses provide
    def _pump(self, wait_s: float) -> None:
        """Move what has arrived into the buffers, waiting up to ``wait_s`` for something."""
        raise NotImplementedError

    def _send(self, data: memoryview) -> int:
        raise NotImplementedError

    def _shutdown_write(self) -> None:
        raise NotImplementedError

    def _exit_status(self, wait_s: float) -> int | None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError

    def _errors(self, action: str) -> contextlib.AbstractContextManager[None]:
        """Where the implementation's own errors become edgeq errors (``action`` names what was being done)."""
        return contextlib.nullcontext()

    # the API
    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _timed_out(self) -> CommandTimeoutError:
        self._abort()
        return CommandTimeoutError(
            f"{self.label}: `{self.name}` did not finish within {self.timeout_s:g} s; it was stopped",
            hint="raise --command-timeout / --transfer-timeout if the device is just slow",
        )

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            with self._errors("sending data"):
                while view:
                    if self._remaining() <= 0:
                        raise self._timed_out()
                    sent = self._send(view[:CHUNK_BYTES])
                    view = view[sent:]
                    self._pump(0)  # keep stdout/stderr flowing while we send
        except EdgeqError:
            self._raise_if_missing()  # the wrapper refused to run the command: it never read its input
            raise

    def _raise_if_missing(self) -> None:
        """Raise DeviceFilesMissing if the command ended saying that device files are missing."""
        try:
            with self._errors("reading output"):
                until = min(time.monotonic() + 2.0, self.deadline)
                while not self._eof and time.monotonic() < until:
                    self._pump(POLL_S)
                status = self._exit_status(0.5) if self._eof else None
        except EdgeqError:
            return
        paths = remote.missing_paths(status, bytes(self._err).decode("utf-8", "replace")) if status is not None else []
        if paths:
            raise DeviceFilesMissing(self.label, self.name, paths)

    def await_output(self) -> None:
        """Wait for the first output (left to be read); DeviceFilesMissing if the command did not run for want of files."""
        with self._errors("reading output"):
            while not self._out and not self._eof:
                if self._remaining() <= 0:
                    raise self._timed_out()
                self._pump(min(POLL_S * 4, max(self._remaining(), 0)))
        if not self._out:
            self._raise_if_missing()

    def send_file(self, path: str | os.PathLike[str], progress: ProgressCallback | None = None) -> int:
        total = os.path.getsize(path)
        done = 0
        with open(path, "rb") as handle:
            while True:
                chunk = handle.read(CHUNK_BYTES)
                if not chunk:
                    break
                self.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        return done

    def close_stdin(self) -> None:
        if not self._stdin_closed:
            self._stdin_closed = True
            with self._errors("closing the upload"):
                self._shutdown_write()

    def readline(self) -> str | None:
        """The next line of stdout without its newline; None at end of output."""
        with self._errors("reading output"):
            while b"\n" not in self._out and not self._eof:
                if self._remaining() <= 0:
                    raise self._timed_out()
                self._pump(min(POLL_S * 4, max(self._remaining(), 0)))
        # the buffers are changed in place: the local implementation's selector holds references to them
        end = self._out.find(b"\n")
        if end >= 0:
            line = bytes(self._out[:end])
            del self._out[: end + 1]
            return line.decode("utf-8", errors="replace")
        if self._out:
            line = bytes(self._out)
            self._out.clear()
            return line.decode("utf-8", errors="replace")
        return None

    def read_exact(self, size: int) -> bytes:
        with self._errors("reading output"):
            while len(self._out) < size and not self._eof:
                if self._remaining() <= 0:
                    raise self._timed_out()
                self._pump(min(POLL_S * 4, max(self._remaining(), 0)))
        if len(self._out) < size:
            raise RemoteCommandError(
                f"{self.label}: `{self.name}` ended before sending its output; {self._stderr_tail()}"
            )
        data = bytes(self._out[:size])
        del self._out[:size]
        return data

    def wait(self, check: bool = True) -> CommandResult:
        """Drain stdout and stderr to their end, then take the exit status (in that order: see the module doc)."""
        self.close_stdin()
        with self._errors("waiting for a command"):
            while not self._eof:
                if self._remaining() <= 0:
                    raise self._timed_out()
                self._pump(min(POLL_S * 4, max(self._remaining(), 0)))
            status = None
            while status is None:
                if self._remaining() <= 0:
                    raise self._timed_out()
                status = self._exit_status(min(POLL_S, max(self._remaining(), 0)))
                self._pump(0)
        result = CommandResult(
            command=self.command,
            exit_status=status,
            stdout=bytes(self._out).decode("utf-8", errors="replace"),
            stderr=bytes(self._err).decode("utf-8", errors="replace"),
            duration_s=time.monotonic() - self.started,
        )
        self._out.clear()
        paths = remote.missing_paths(status, result.stderr)
        if paths:
            raise DeviceFilesMissing(self.label, self.name, paths)
        if TIMEOUT_MARKER in result.stderr:  # the wrapper's own marker line (edgeq/remote/wrapper.sh)
            raise CommandTimeoutError(
                f"{self.label}: `{self.name}` did not finish within {self.timeout_s:g} s; it was stopped on the device",
                hint="raise --command-timeout / --transfer-timeout if the device is just slow",
            )
        if check and not result.ok:
            raise RemoteCommandError(
                f"{self.label}: `{self.name}` failed with exit status {status}{_tail(result.stderr)}"
            )
        return result

    def _stderr_tail(self) -> str:
        text = bytes(self._err).decode("utf-8", errors="replace").strip()
        return text[-300:] if text else "no error output"

    def close(self) -> None:
        self._abort()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
