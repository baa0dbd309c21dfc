"""This machine as a device (the ``host`` target, whose transport is ``local``): the same wrapper, run by subprocess.

Commands run from a home directory of the connection's own, with the same
device files under its edgeq folder as on a device.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
from pathlib import Path
from typing import IO

from ..errors import RemoteCommandError
from .base import ConnectOptions
from .commands import CommandRunner
from .process import BufferedProcess

__all__ = ["LocalConnection"]


class LocalConnection(CommandRunner):
    """This machine, with the same interface: commands run under the same wrapper, from ``home``.

    ``shell`` reads the command lines (the login shell's part on a device);
    the scripts run under the ``sh`` found in ``PATH``, as on a device.
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        options: ConnectOptions | None = None,
        name: str = "local",
        *,
        edgeq_dir: str = "edgeq",
        shell: str = "/bin/sh",
    ):
        self.home = Path(home).expanduser() if home else Path.home()
        self.options = options or ConnectOptions()
        self.name = name
        self.label = name
        self.edgeq_dir = edgeq_dir
        self.shell = shell

    def __repr__(self) -> str:
        return f"LocalConnection({self.home})"

    def _spawn(self, line: str, command: str, name: str | None, timeout_s: float) -> BufferedProcess:
        env = dict(os.environ, HOME=str(self.home))
        try:
            popen = subprocess.Popen(
                [self.shell, "-c", line],
                cwd=self.home,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # lets the client kill the whole group if even the watchdog hangs
            )
        except OSError as exc:
            raise RemoteCommandError(
                f"{self.label}: cannot start a shell in {self.home}: {exc.strerror or exc}"
            ) from exc
        return _LocalProcess(self.label, popen, command, timeout_s, name)

    def close(self) -> None:
        pass


class _LocalProcess(BufferedProcess):
    """A command in a child process of ours, its pipes read without blocking."""

    def __init__(self, label: str, popen: subprocess.Popen[bytes], command: str, timeout_s: float, name: str | None):
        super().__init__(label, command, timeout_s, name)
        assert popen.stdin is not None and popen.stdout is not None and popen.stderr is not None  # all three piped
        self._popen = popen
        self._stdin: IO[bytes] = popen.stdin
        self._streams: tuple[IO[bytes], ...] = (popen.stdin, popen.stdout, popen.stderr)
        self._selector = selectors.DefaultSelector()
        self._open: set[IO[bytes]] = set()  # the output streams not at their end yet
        for stream, buffer in ((popen.stdout, self._out), (popen.stderr, self._err)):
            os.set_blocking(stream.fileno(), False)
            self._selector.register(stream, selectors.EVENT_READ, (stream, buffer))
            self._open.add(stream)
        os.set_blocking(self._stdin.fileno(), False)

    def _pump(self, wait_s: float) -> None:
        if not self._open or self._closed:
            self._eof = True
            return
        for key, _ in self._selector.select(max(wait_s, 0)):
            stream: IO[bytes]
            buffer: bytearray
            stream, buffer = key.data
            try:
                data = os.read(stream.fileno(), 65536)
            except BlockingIOError:
                continue
            if data:
                buffer.extend(data)
            else:
                self._selector.unregister(stream)
                stream.close()
                self._open.discard(stream)
        if not self._open:
            self._eof = True

    def _send(self, data: memoryview) -> int:
        fd = self._stdin.fileno()
        while True:
            try:
                return os.write(fd, data)
            except BlockingIOError:
                if self._remaining() <= 0:
                    raise self._timed_out() from None
                self._pump(0.01)
            except BrokenPipeError:
                raise RemoteCommandError(
                    f"{self.label}: `{self.name}` stopped reading its input; {self._stderr_tail()}"
                ) from None

    def _shutdown_write(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._stdin.close()

    def _exit_status(self, wait_s: float) -> int | None:
        try:
            return self._popen.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return None

    def _abort(self) -> None:
        self._closed = True
        self._open.clear()
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._popen.pid, 9)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=5)
        for stream in self._streams:
            with contextlib.suppress(Exception):
                stream.close()
        with contextlib.suppress(Exception):
            self._selector.close()
