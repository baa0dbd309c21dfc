"""Host keys, OpenSSH-style: known_hosts entries for a server, the accept / refuse / accept-new policy, new lines.

Host keys are verified against the system and user known_hosts files and
``--known-hosts``: an unknown host is refused with its SHA256 fingerprint
(or, with ``trust_new_hosts``, appended to known_hosts like OpenSSH's
``accept-new``); a changed or revoked key is always refused.
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import hashlib
import logging
import os
import threading
from pathlib import Path

import paramiko
from paramiko.pkey import UnknownKeyType

from ..errors import HostKeyError
from .base import ConnectOptions

__all__ = [
    "ChangedHostKey",
    "KnownHostsPolicy",
    "KnownKey",
    "UnknownHostKey",
    "append_known_host",
    "known_hosts_token",
    "known_keys",
    "preferred_key_types",
    "split_token",
]

log = logging.getLogger(__name__)

_WRITE_LOCK = threading.Lock()


def known_hosts_token(host: str, port: int) -> str:
    """How known_hosts names a server: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def split_token(token: str) -> tuple[str, int]:
    """``(host, port)`` of a known_hosts name made by :func:`known_hosts_token`."""
    if token.startswith("[") and "]:" in token:
        host, _, port = token[1:].partition("]:")
        return host, int(port)
    return token, 22


@dataclasses.dataclass(frozen=True)
class KnownKey:
    """One known_hosts entry for a server: its place, key type and key blob, and whether it is ``@revoked``."""

    path: str
    lineno: int
    key_type: str
    blob: bytes
    revoked: bool

    @property
    def where(self) -> str:
        return f"{self.path}:{self.lineno}"

    @property
    def fingerprint(self) -> str:
        """OpenSSH's fingerprint of the key: ``SHA256:`` and the unpadded base64 of its blob's sha256."""
        try:
            return paramiko.PKey.from_type_string(self.key_type, self.blob).fingerprint
        except (UnknownKeyType, paramiko.SSHException, ValueError):
            # Kept for keys paramiko cannot load (ssh-dss since paramiko 4, sk-* security keys, a damaged
            # line), which a changed-key message must still show: the same digest PKey.fingerprint takes.
            digest = hashlib.sha256(self.blob).digest()
            return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("|1|"):
        try:
            return paramiko.HostKeys.hash_host(name, pattern) == pattern
        except Exception:  # a malformed hashed entry matches nothing, as in OpenSSH
            return False
    if "*" not in pattern and "?" not in pattern:
        return pattern.lower() == name.lower()
    import re

    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern.lower())
    return re.fullmatch(regex, name.lower()) is not None


def _host_field_matches(field: str, name: str) -> bool:
    matched = False
    for pattern in field.split(","):
        negated = pattern.startswith("!")
        if _pattern_matches(pattern[1:] if negated else pattern, name):
            if negated:
                return False
            matched = True
    return matched


def known_keys(token: str, files: tuple[Path, ...]) -> list[KnownKey]:
    """Every known_hosts entry for ``token`` in ``files`` (``@cert-authority`` lines are not used)."""
    found: list[KnownKey] = []
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise HostKeyError(f"cannot read known hosts file {path}: {exc.strerror or exc}") from exc
        for lineno, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            revoked = False
            if line.startswith("@"):
                marker, _, line = line.partition(" ")
                if marker != "@revoked":
                    continue
                revoked = True
            fields = line.split()
            if len(fields) < 3 or not _host_field_matches(fields[0], token):
                continue
            try:
                blob = base64.b64decode(fields[2], validate=True)
            except ValueError:
                continue
            found.append(KnownKey(str(path), lineno, fields[1], blob, revoked))
    return found


class UnknownHostKey(paramiko.SSHException):
    """The server's key is in no known_hosts file, and new hosts are not trusted."""

    def __init__(self, token: str, key: paramiko.PKey):
        super().__init__(f"unknown host key for {token}")
        self.token = token
        self.key = key


class ChangedHostKey(paramiko.BadHostKeyException):
    """The server's key is not the one known_hosts has for it (``known``), or is revoked there."""

    def __init__(self, token: str, key: paramiko.PKey, known: KnownKey):
        # paramiko's BadHostKeyException wants a PKey for the expected key; we keep ours aside
        super().__init__(token, key, key)
        self.token = token
        self.known = known


class KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """OpenSSH's host-key check: known -> accept; other key known for the host -> refuse; unknown -> refuse or accept-new.

    paramiko's own host-key dictionaries are left empty, so paramiko hands
    every server key to this policy: all known_hosts entries are considered
    (paramiko would compare against only the first one per key type), hashed
    names and ``@revoked`` markers included.
    """

    def __init__(self, options: ConnectOptions, known: list[KnownKey]):
        self.options = options
        self.known = known

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        blob = key.asbytes()
        for entry in self.known:
            if entry.revoked and entry.blob == blob:
                raise ChangedHostKey(hostname, key, entry)
        if any(entry.blob == blob and not entry.revoked for entry in self.known):
            return
        valid = [entry for entry in self.known if not entry.revoked]
        if valid:
            raise ChangedHostKey(hostname, key, valid[0])
        if not self.options.trust_new_hosts:
            raise UnknownHostKey(hostname, key)
        path = self.options.known_hosts_write_path()
        append_known_host(path, hostname, key)
        shown = f"{key.get_name()} {key.fingerprint}"
        log.info("added host key for %s (%s) to %s", hostname, shown, path)
        if self.options.host_key_added:
            self.options.host_key_added(hostname, shown, str(path))


def append_known_host(path: Path, token: str, key: paramiko.PKey) -> None:
    """Append one known_hosts line, as OpenSSH's accept-new does (never rewriting existing lines)."""
    line = f"{token} {key.get_name()} {key.get_base64()}\n"
    with _WRITE_LOCK:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "r+b") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)  # other edgeq processes appending at the same time
                handle.seek(0, os.SEEK_END)
                if handle.tell() > 0:
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":
                        line = "\n" + line
                handle.write(line.encode("ascii"))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise HostKeyError(f"cannot add the host key of {token} to {path}: {exc.strerror or exc}") from exc


def preferred_key_types(known: list[KnownKey], offered: tuple[str, ...]) -> tuple[str, ...]:
    """Host-key algorithms with those already known for the host first, so the server shows a key we can check."""
    first: list[str] = []
    for entry in known:
        if entry.revoked:
            continue
        names = ("rsa-sha2-512", "rsa-sha2-256") if entry.key_type == "ssh-rsa" else (entry.key_type,)
        first.extend(n for n in names if n in offered and n not in first)
    return tuple(first) + tuple(n for n in offered if n not in first)
