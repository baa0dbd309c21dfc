"""Targets: the TOML files that describe kinds of edge devices, and how they are found, checked and merged.

A target is a kind of device, not an address: its CPU, the TFLite runtimes it
can have, what its quantization must look like, and the defaults for
deploying to it. Files are read strictly: an unknown key, a value of the wrong
type or a missing field is a :class:`~edgeq.errors.TargetFileError` naming the
file and the key (and, for a misspelling, the closest valid key).

Lookup of a name, first match wins (``targets/README.md`` has the details):

1. an explicit path to a ``.toml`` file,
2. ``--targets-dir DIR``,
3. the folders in ``EDGEQ_TARGETS_PATH`` (``os.pathsep``-separated),
4. ``$XDG_CONFIG_HOME/edgeq/targets`` (default ``~/.config/edgeq/targets``),
5. the targets bundled with edgeq.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import TargetFileError
from ..machine import cpu_facts_from_cpuinfo, machine_arch, normalize_cpu_features
from .merge import _build, _check_merged, _load_merged
from .model import (
    ARCHES,
    AUTO,
    CPU,
    CPU_FEATURES,
    DELEGATES,
    RUNTIMES,
    SCHEMA_VERSION,
    TRANSPORTS,
    UNKNOWN,
    Deploy,
    Quantization,
    Target,
)
from .search import SearchDir, TargetSearchPath, bundled_targets_dir, is_target_path, user_targets_dir

__all__ = [
    "ARCHES",
    "AUTO",
    "CPU",
    "CPU_FEATURES",
    "DELEGATES",
    "RUNTIMES",
    "SCHEMA_VERSION",
    "TRANSPORTS",
    "UNKNOWN",
    "Deploy",
    "Quantization",
    "SearchDir",
    "Target",
    "TargetSearchPath",
    "bundled_targets_dir",
    "cpu_facts_from_cpuinfo",
    "is_target_path",
    "list_targets",
    "load_target",
    "machine_arch",
    "normalize_cpu_features",
    "user_targets_dir",
]


# --------------------------------------------------------------------------- the public functions


def load_target(
    name_or_path: str | os.PathLike,
    targets_dir: str | os.PathLike | None = None,
    *,
    search_path: TargetSearchPath | None = None,
) -> Target:
    """Load a target by name (looked up in order) or from a ``.toml`` path; raise TargetFileError if it is not valid.

    ``targets_dir`` is ``--targets-dir``; ``search_path`` replaces the whole
    lookup path (``targets_dir`` is then ignored).
    """
    search = search_path or TargetSearchPath.default(targets_dir)
    if is_target_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise TargetFileError(f"{path}: no such file")
        return _load_path(path, "path", search)
    name = str(name_or_path)
    found = search.find(name)
    if found is None:
        raise search.unknown_target(name)
    return _load_path(found[0], found[1], search)


def _load_path(path: Path, origin: str, search: TargetSearchPath) -> Target:
    merged = _load_merged(path, search, [])
    _check_merged(path, merged)
    return _build(path, origin, merged)


def list_targets(
    targets_dir: str | os.PathLike | None = None,
    *,
    search_path: TargetSearchPath | None = None,
) -> tuple[Target, ...]:
    """Every visible target, by name; where two folders hold the same name, the one found first wins.

    Strict like :func:`load_target`: one invalid file is an error naming it.
    """
    search = search_path or TargetSearchPath.default(targets_dir)
    return tuple(_load_path(path, origin, search) for path, origin in search.entries().values())
