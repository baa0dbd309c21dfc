"""Files: written atomically (a temporary file beside the target, fsync, rename); hashed, also in the background."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

__all__ = ["BackgroundDigest", "FileDigest", "atomic_write_bytes", "atomic_writer", "sha256_file"]


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only if the block ends without error.

    On error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_writer(path) as handle:
        handle.write(data)


class FileDigest(NamedTuple):
    """A file's sha256 (hex), its size, and its first bytes (for a format check without a second read)."""

    sha256: str
    size: int
    head: bytes


def sha256_file(path: str | os.PathLike, head_size: int = 8) -> FileDigest:
    """Hash the file at ``path`` in one read; raises OSError."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        head = handle.read(head_size)
        digest.update(head)
        size += len(head)
        while block := handle.read(1 << 20):
            digest.update(block)
            size += len(block)
    return FileDigest(digest.hexdigest(), size, head)


class BackgroundDigest:
    """:func:`sha256_file` computed in a thread, started now; :meth:`result` waits for it.

    Reading and hashing release the GIL, so the hash overlaps whatever the
    caller does meanwhile: the CLI starts it before importing the deployer
    and paramiko, which hides it (14 MB: ~10 ms here; larger models more).
    """

    def __init__(self, path: str | os.PathLike):
        self._path = path
        self._digest: FileDigest | None = None
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="edgeq-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._digest = sha256_file(self._path)
        except OSError as exc:
            self._error = exc

    def result(self) -> FileDigest:
        """The digest, or the OSError that reading the file raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._digest is not None  # set by _run unless it raised
        return self._digest
