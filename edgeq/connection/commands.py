"""Commands under edgeq's wrapper script: ``start``, ``run`` and ``put``, and installing the device files they need.

Every command runs under the wrapper script ``edgeq/remote/wrapper.sh``
(kept on the device once per version, see :mod:`edgeq.remote`) that puts it
in its own session / process group and kills that group when the command
overruns its timeout, so a timed-out command ends on the device, not only on
our side. The client also keeps its own deadline (timeout + a grace period)
and closes the channel after it. A command has a short label ("deploy",
"probe", ...) that its error messages name; it may need device files
(scripts, the probe program): the wrapper checks for them and the connection
uploads the missing ones and runs the command again.
"""

from __future__ import annotations

import logging
import os
import posixpath
import secrets
import shlex
from collections.abc import Callable, Sequence
from typing import Self, TypeVar

from .. import remote
from ..errors import RemoteCommandError
from .base import CommandResult, ConnectOptions, DeviceFilesMissing, ProgressCallback, RemoteProcess
from .process import BufferedProcess, short_command, whole_seconds

__all__ = ["CommandRunner"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class CommandRunner:
    """What :class:`SSHConnection` and :class:`LocalConnection` share: all but starting a shell command line."""

    label: str
    options: ConnectOptions
    edgeq_dir: str

    def _spawn(self, line: str, command: str, name: str | None, timeout_s: float) -> BufferedProcess:
        """Run the shell command line ``line`` on the device (``command`` and ``name`` are for messages)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _script(self, name: str) -> remote.DeviceFile:
        return remote.script(name, self.edgeq_dir)

    def start(
        self,
        command: str,
        timeout_s: float | None = None,
        *,
        label: str | None = None,
        requires: Sequence[remote.DeviceFile] = (),
        await_output: bool = False,
    ) -> RemoteProcess:
        """Start ``command`` (a POSIX shell command line) under the wrapper; see :class:`Connection`."""
        timeout = timeout_s or self.options.command_timeout_s
        line = remote.launcher(
            self._script("wrapper.sh"), whole_seconds(timeout), label or short_command(command), command, requires
        )

        def attempt() -> RemoteProcess:
            process = self._spawn(line, command, label, timeout)
            if await_output:
                try:
                    process.await_output()
                except BaseException:
                    process.close()
                    raise
            return process

        return self._with_files(requires, attempt) if await_output else attempt()

    def _with_files(self, requires: Sequence[remote.DeviceFile], attempt: Callable[[], _T]) -> _T:
        """``attempt()``; if it reports missing device files, upload them and ``attempt()`` once more."""
        try:
            return attempt()
        except DeviceFilesMissing as exc:
            self._install(exc.paths, requires)
        return attempt()

    def _install(self, paths: Sequence[str], requires: Sequence[remote.DeviceFile]) -> None:
        """Upload the device files at ``paths`` (all of them when the wrapper itself was missing) in one command."""
        wrapper = self._script("wrapper.sh")
        if wrapper.path in paths:
            files = [wrapper, *requires]
        else:
            known = {f.path: f for f in requires}
            unknown = [p for p in paths if p not in known]
            if unknown:
                raise RemoteCommandError(
                    f"{self.label}: the device asked for files edgeq did not send: {', '.join(unknown)}"
                )
            files = [known[p] for p in paths]
        log.debug("%s: installing %s", self.label, ", ".join(f.path for f in files))
        token = secrets.token_hex(4)
        processes: list[BufferedProcess] = []
        try:  # one command per file, all under way at once: one round trip
            for file in files:
                line = remote.install_command(file, token)
                processes.append(self._spawn(line, line, "install edgeq's files", self.options.transfer_timeout_s))
                processes[-1].write(file.data)
                processes[-1].close_stdin()
            results = [process.wait(check=False) for process in processes]
        finally:
            for process in processes:
                process.close()
        failed = [r for r in results if not r.ok]
        if failed:
            folders = ", ".join(dict.fromkeys(posixpath.dirname(f.path) for f in files))
            detail = (failed[0].stderr.strip().splitlines() or [f"exit status {failed[0].exit_status}"])[0]
            raise RemoteCommandError(
                f"{self.label}: cannot write edgeq's files into {folders}: {detail}",
                hint="check the device's remote_dir (edgeq_remote_dir, the target's [deploy] table) and its free space",
            )

    def run(
        self,
        command: str,
        timeout_s: float | None = None,
        *,
        stdin: bytes | None = None,
        check: bool = True,
        label: str | None = None,
        requires: Sequence[remote.DeviceFile] = (),
    ) -> CommandResult:
        """Run ``command`` (a POSIX shell command line) and return its result; raise RemoteCommandError if it fails and ``check``."""

        def attempt() -> CommandResult:
            process = self.start(command, timeout_s, label=label, requires=requires)
            try:
                if stdin:
                    process.write(stdin)
                process.close_stdin()
                return process.wait(check=check)
            finally:
                process.close()

        return self._with_files(requires, attempt)

    def put(self, local: str | os.PathLike[str], remote: str, progress: ProgressCallback | None = None) -> int:
        """Copy ``local`` to ``remote`` (relative paths: under the home directory); atomic, returns the bytes sent.

        The file goes to a temporary name beside ``remote``, its size is
        checked on the device, then it is renamed over ``remote`` (``put.sh``).
        """
        script = self._script("put.sh")
        command = f"sh {shlex.quote(script.path)} {shlex.quote(remote)} {os.path.getsize(local)}"

        def attempt() -> int:
            process = self.start(command, self.options.transfer_timeout_s, label="upload", requires=(script,))
            try:
                sent = process.send_file(local, progress)
                process.wait(check=True)
                return sent
            finally:
                process.close()

        return self._with_files((script,), attempt)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
