"""``manifest.json`` as data: what a model folder records of its versions and switches; read, built and pruned here.

The manifest is a JSON object, kept as read (:data:`Manifest`): entries that
are not what edgeq writes are ignored when read and dropped when it is
rewritten, so a damaged or hand-edited manifest never stops a deploy::

    {"format": 1, "model": NAME, "current": VERSION, "updated_at": TIME,
     "versions": {VERSION: {"sha256", "size_bytes", "deployed_at", "source", "edgeq"}},
     "history": [{"at", "action", "version", "previous" | "removed"}, ...]}   (the last 100 events)
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from .model import ModelFile
from .results import VersionInfo

__all__ = [
    "HISTORY_LIMIT",
    "Manifest",
    "known_sha256",
    "manifest_entry",
    "manifest_history",
    "manifest_line",
    "manifest_versions",
    "new_manifest",
    "parse_manifest",
    "utc_now",
    "version_infos",
    "versions_to_prune",
]

Manifest = dict[str, Any]
"""``manifest.json`` as read: any JSON object (the functions below read only what they can trust)."""

HISTORY_LIMIT = 100
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def utc_now() -> str:
    """The time of an event, as the manifest records it (``2030-01-01T00:00:00Z``)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_manifest(raw: bytes) -> Manifest | None:
    """The manifest in ``raw``; ``{}`` when it is JSON but no object, None when it is not JSON at all."""
    try:
        loaded = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return loaded if isinstance(loaded, dict) else {}


def manifest_versions(manifest: Manifest) -> dict[str, dict[str, Any]]:
    """The recorded versions (a copy): version -> its entry."""
    versions = manifest.get("versions")
    return {k: v for k, v in versions.items() if isinstance(v, dict)} if isinstance(versions, dict) else {}


def manifest_history(manifest: Manifest) -> list[dict[str, Any]]:
    """The recorded events, oldest first (each names a ``version``)."""
    history = manifest.get("history")
    return (
        [e for e in history if isinstance(e, dict) and isinstance(e.get("version"), str)]
        if isinstance(history, list)
        else []
    )


def known_sha256(manifest: Manifest, version: str) -> str | None:
    """The sha256 recorded for ``version``, when there is a well-formed one."""
    sha = manifest_versions(manifest).get(version, {}).get("sha256")
    return sha if isinstance(sha, str) and _SHA_RE.match(sha) else None


def manifest_entry(model: ModelFile) -> dict[str, Any]:
    """What the manifest records of a version deployed now from ``model``."""
    return {
        "sha256": model.sha256,
        "size_bytes": model.size_bytes,
        "deployed_at": utc_now(),
        "source": Path(model.path).name,
        "edgeq": __version__,
    }


def new_manifest(
    name: str,
    manifest: Manifest,
    *,
    current: str,
    event: dict[str, Any],
    add: dict[str, Any] | None = None,
    drop: Iterable[str] = (),
) -> Manifest:
    """``manifest`` after ``event``: ``current`` active, ``add`` recorded as its entry, ``drop``'s entries gone."""
    versions = manifest_versions(manifest)
    if add:
        versions[current] = add
    for version in drop:
        versions.pop(version, None)
    history = (manifest_history(manifest) + [event])[-HISTORY_LIMIT:]
    return {
        "format": 1,
        "model": name,
        "current": current,
        "updated_at": event["at"],
        "versions": versions,
        "history": history,
    }


def manifest_line(manifest: Manifest) -> str:
    """The manifest as the device script takes it: one line, ASCII (safe for ``read -r``)."""
    return json.dumps(manifest, separators=(",", ":"), sort_keys=True, ensure_ascii=True)


def versions_to_prune(manifest: Manifest, on_device: Sequence[str], current: str, keep: int) -> list[str]:
    """Versions beyond the ``keep`` most recently activated ones (by the history); never ``current``."""
    rank: dict[str, int] = {}
    for index, event in enumerate(manifest_history(manifest)):
        rank[event["version"]] = index
    rank[current] = 1 << 30
    ranked = sorted(set(on_device) | {current}, key=lambda v: rank.get(v, -1), reverse=True)
    return [v for v in ranked[keep:] if v != current]


def version_infos(manifest: Manifest, on_device: Sequence[str], current: str | None) -> tuple[VersionInfo, ...]:
    """The versions on the device with what the manifest recorded of them, the most recently deployed first."""
    known = manifest_versions(manifest)
    infos = []
    for version in on_device:
        entry = known.get(version, {})
        infos.append(
            VersionInfo(
                version=version,
                sha256=entry.get("sha256"),
                size_bytes=entry.get("size_bytes"),
                deployed_at=entry.get("deployed_at"),
                source=entry.get("source"),
                active=version == current,
            )
        )
    return tuple(sorted(infos, key=lambda i: (i.deployed_at or "", i.version), reverse=True))
