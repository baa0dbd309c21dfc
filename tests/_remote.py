"""Helpers shared by the connection and deploy tests: edgeq views of the sshd test devices, models, on-disk checks."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

from edgeq.connection import ConnectOptions, SSHConnection
from edgeq.devices import Device


def options(device=None, **overrides) -> ConnectOptions:
    """Isolated connection options: only the device's own known_hosts; no agent, no ~/.ssh keys; short timeouts."""
    values = dict(
        known_hosts=device.known_hosts if device is not None else None,
        system_known_hosts=None,
        allow_agent=False,
        look_for_keys=False,
        connect_timeout_s=5.0,
        command_timeout_s=20.0,
        transfer_timeout_s=30.0,
    )
    values.update(overrides)
    return ConnectOptions(**values)


def ssh(device, **overrides) -> SSHConnection:
    key_files = overrides.pop("key_files", (str(device.key_path),))
    return SSHConnection(
        device.host,
        port=device.port,
        user=device.user,
        key_files=key_files,
        options=options(device, **overrides),
        name=device.name,
    )


def as_device(device, **overrides) -> Device:
    values = dict(
        name=device.name, address=device.host, user=device.user, port=device.port, key_files=(str(device.key_path),)
    )
    values.update(overrides)
    return Device(**values)


def write_model(path: Path, size: int = 50_000, seed: int = 0) -> Path:
    """A file that passes for a .tflite (TFL3 identifier at offset 4), random otherwise."""
    rng = random.Random(seed)
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + rng.randbytes(size))
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def model_folder(device, name: str) -> Path:
    return Path(device.remote_dir) / "models" / name


def active_on_disk(device, name: str) -> tuple[str | None, str | None]:
    """(version that `current` points to, sha256 of its model file), read straight from the device's disk."""
    folder = model_folder(device, name)
    link = folder / "current"
    if not link.is_symlink():
        return None, None
    version = os.readlink(link)
    model = folder / version / "model.tflite"
    return version, sha256_of(model) if model.exists() else None


def leftovers(device, name: str) -> list[str]:
    """Temporary files of edgeq (uploads, links, manifests in progress) left in the model's folder."""
    folder = model_folder(device, name)
    if not folder.exists():
        return []
    found = [p.name for p in (folder / ".incoming").glob("*")] if (folder / ".incoming").exists() else []
    found += (
        [p.name for p in folder.glob(".current.*")]
        + [p.name for p in folder.glob(".manifest.*")]
        + [p.name for p in folder.glob(".sha256.*")]
    )
    return found
