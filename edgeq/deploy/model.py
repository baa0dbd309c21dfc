"""The model about to be deployed: its name on devices, its hash and version, and where it lives on a device."""

from __future__ import annotations

import dataclasses
import posixpath
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import EdgeqError, ModelError
from ..files import BackgroundDigest, sha256_file

if TYPE_CHECKING:
    from ..devices import Device

__all__ = ["ModelFile", "model_dir", "prepare_model", "validate_model_name"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """A local model about to be deployed: its name on devices, its hash and version."""

    path: str
    name: str
    sha256: str
    size_bytes: int

    @property
    def version(self) -> str:
        return self.sha256[:12]


def validate_model_name(name: str) -> str:
    """A model name is one safe file name: letters, digits, ``.``, ``_``, ``-``; at most 64; not starting with a dot."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise EdgeqError(
            f"model name {name!r} is not a safe file name",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. --name digits-int8)",
        )
    return name


def prepare_model(path: str | Path, name: str | None = None, *, digest: BackgroundDigest | None = None) -> ModelFile:
    """Check a local .tflite file, hash it and name it (``name`` defaults to the file's stem).

    ``digest``: the file's hash already under way (:class:`edgeq.files.BackgroundDigest`), else it is hashed here.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file" if not path.exists() else f"{path} is not a file")
    model_name = name if name is not None else path.stem
    if name is None and not _NAME_RE.match(model_name):
        raise EdgeqError(
            f"the file name {path.name!r} does not make a safe model name",
            hint="give one with --name (letters, digits, '.', '_', '-')",
        )
    validate_model_name(model_name)
    try:
        found = digest.result() if digest is not None else sha256_file(path)
    except OSError as exc:
        raise ModelError(f"{path}: {exc.strerror or exc}") from exc
    if len(found.head) < 8 or found.head[4:8] != b"TFL3":
        raise ModelError(
            f"{path} is not a TFLite model (no TFL3 identifier)",
            hint="deploy the .tflite file that edgeq convert wrote",
        )
    return ModelFile(path=str(path), name=model_name, sha256=found.sha256, size_bytes=found.size)


def model_dir(device: Device, name: str) -> str:
    """Where ``name``'s versions live on ``device`` (relative paths are under the login user's home)."""
    base = device.remote_dir
    if not base.startswith("/") and not base.startswith("./"):
        base = "./" + base  # never let a path start with "-" in a command
    return posixpath.join(base, "models", validate_model_name(name))
