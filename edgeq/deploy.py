"""Versioned, verified, atomic model deploys to devices and fleets; status, rollback and removal.

Layout on a device (``remote_dir`` is relative to the login user's home
unless absolute; the default is ``edgeq``)::

    <remote_dir>/models/<name>/
        current -> 3f2a9c0d1b7e          symlink to the active version, switched atomically
        3f2a9c0d1b7e/model.tflite        a version: its name is the first 12 hex digits of the sha256
        3f2a9c0d1b7e/model.tflite.sha256 the full sha256, written before the model is moved in
        manifest.json                    what was deployed, when, its hash; the history of switches
        .incoming/                       uploads in progress (temporary names, never active)
        .lock                            flock(1) lock while a deploy, rollback or removal runs

A deploy is ONE remote script on ONE channel (one round trip fewer than
"inspect, then upload": on loopback a session costs as much as sending 9 MB).
The script reports the device's state; edgeq answers; the model is streamed
into a temporary file, its size and sha256 are checked ON THE DEVICE, it is
flushed (fsync), renamed into its version folder and reported ``verified``;
only when edgeq then sends ``commit`` does ``current`` switch: a temporary
symlink renamed over it (``mv -T``, else Python's ``os.replace``). A cut
connection at any point leaves the previous model active and intact: before
``commit`` nothing active has changed, and the switch itself is one rename.

The manifest is written (temp file, fsync, rename) after the switch; the last
``keep`` versions by activation are kept and the active one never removed.
Fleets run in threads with bounded concurrency; transport errors (only those)
are retried with exponential backoff; ``canary`` devices go first.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as _dt
import enum
import hashlib
import json
import logging
import posixpath
import re
import secrets
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from . import __version__
from .errors import DeviceUnreachableError, EdgeqError, InternalError, ModelError, RemoteCommandError
from .types import to_jsonable

if TYPE_CHECKING:  # the connection module imports paramiko: only when a connection is really made
    from .connection import Connection
    from .inventory import Device

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_KEEP_VERSIONS",
    "DeviceResult",
    "DeviceStatus",
    "FleetEvents",
    "FleetOptions",
    "FleetResult",
    "ModelFile",
    "ModelState",
    "VersionInfo",
    "deploy_fleet",
    "deploy_to_device",
    "device_result",
    "model_dir",
    "prepare_model",
    "remove_fleet",
    "remove_from_device",
    "rollback_device",
    "rollback_fleet",
    "run_fleet",
    "status_fleet",
    "status_of_device",
    "validate_model_name",
]

log = logging.getLogger(__name__)

DEFAULT_KEEP_VERSIONS = 3
DEFAULT_CONCURRENCY = 16
_HISTORY_LIMIT = 100
_FREE_MARGIN_BYTES = 64 * 1024  # the sha256 file, the manifest, file-system slack
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION_RE = re.compile(r"^[0-9a-f]{12}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------- results


class DeviceStatus(str, enum.Enum):
    """How one device came out of a fleet operation."""

    OK = "ok"  # done (or, for status: active model present and intact)
    UNCHANGED = "unchanged"  # nothing to do: already in the wanted state
    FAILED = "failed"  # reached, but the operation failed (reason says why); nothing active changed
    UNREACHABLE = "unreachable"  # could not connect, or the connection was lost (after retries)
    SKIPPED = "skipped"  # not attempted: the canary devices failed

    @property
    def succeeded(self) -> bool:
        return self in (DeviceStatus.OK, DeviceStatus.UNCHANGED)


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


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    """One version of a model on a device, from its folder and the manifest."""

    version: str
    sha256: str | None = None
    size_bytes: int | None = None
    deployed_at: str | None = None
    source: str | None = None
    active: bool = False


@dataclasses.dataclass(frozen=True)
class ModelState:
    """A model on one device: the active version, whether its file matches its hash, the versions kept."""

    name: str
    current: str | None
    intact: bool | None  # None: no active version to check
    detail: str | None  # why it is not intact
    versions: tuple[VersionInfo, ...]
    free_bytes: int | None = None


@dataclasses.dataclass(frozen=True)
class DeviceResult:
    """What one operation did on one device."""

    device: str
    destination: str
    action: str  # "deploy" | "status" | "rollback" | "remove"
    model: str
    status: DeviceStatus
    version: str | None = None  # active version afterwards
    previous: str | None = None  # active version before
    reason: str | None = None
    hint: str | None = None
    error_code: int | None = None  # the exit code of the edgeq error behind a failure
    bytes_sent: int = 0
    seconds: float = 0.0
    attempts: int = 0
    state: ModelState | None = None
    removed: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    data: Any = None  # what other fleet operations return per device (targets detect: a Detection)


@dataclasses.dataclass(frozen=True)
class FleetResult:
    """Every device of a fleet operation, in the order given."""

    action: str
    model: str
    version: str | None
    results: tuple[DeviceResult, ...]
    seconds: float
    stopped_by_canary: bool = False

    @property
    def ok(self) -> bool:
        return all(r.status.succeeded for r in self.results)

    @property
    def failures(self) -> tuple[DeviceResult, ...]:
        return tuple(r for r in self.results if not r.status.succeeded)

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for r in self.results if r.status is s) for s in DeviceStatus}

    def to_dict(self) -> dict[str, Any]:
        data = to_jsonable(self)
        data["ok"] = self.ok
        data["counts"] = self.counts()
        return data


# --------------------------------------------------------------------------- names and models


def validate_model_name(name: str) -> str:
    """A model name is one safe file name: letters, digits, ``.``, ``_``, ``-``; at most 64; not starting with a dot."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise EdgeqError(
            f"model name {name!r} is not a safe file name",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. --name digits-int8)",
        )
    return name


def prepare_model(path: str | Path, name: str | None = None) -> ModelFile:
    """Check a local .tflite file, hash it and name it (``name`` defaults to the file's stem)."""
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
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            digest.update(head)
            size += len(head)
            while block := handle.read(1 << 20):
                digest.update(block)
                size += len(block)
    except OSError as exc:
        raise ModelError(f"{path}: {exc.strerror or exc}") from exc
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise ModelError(
            f"{path} is not a TFLite model (no TFL3 identifier)",
            hint="deploy the .tflite file that edgeq convert wrote",
        )
    return ModelFile(path=str(path), name=model_name, sha256=digest.hexdigest(), size_bytes=size)


def model_dir(device: Device, name: str) -> str:
    """Where ``name``'s versions live on ``device`` (relative paths are under the login user's home)."""
    base = device.remote_dir
    if not base.startswith("/") and not base.startswith("./"):
        base = "./" + base  # never let a path start with "-" in a command
    return posixpath.join(base, "models", validate_model_name(name))


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- the remote scripts

# Functions shared by the scripts. Arguments: $1 model folder, $2 device Python (fallbacks), $3 a random token.
# Lines on stdout are the protocol ("error ..." on failure); stderr is only for diagnostics.
_COMMON_SH = r"""
set -u
umask 022
d=$1; py=$2; tok=$3
say() { printf '%s\n' "$*"; }
cleanup() { :; }
die() { cleanup; say "error $*"; exit 3; }  # clean up first: edgeq may act on the error line at once
sha() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum < "$1" | cut -c1-64
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256 < "$1" | cut -c1-64
  else "$py" -c 'import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())' "$1"
  fi
}
flush() {
  sync -- "$1" 2>/dev/null || "$py" -c 'import os, sys; os.fsync(os.open(sys.argv[1], os.O_RDONLY))' "$1" 2>/dev/null || sync
}
replace() {
  mv -T -- "$1" "$2" 2>/dev/null || "$py" -c 'import os, sys; os.replace(sys.argv[1], sys.argv[2])' "$1" "$2"
}
locked=""
lock() {
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$d/.lock" || die "cannot create $d/.lock"
    flock -w 30 9 || die "another edgeq has been working on $d for 30 s (lock $d/.lock)"
    locked=1
  fi
}
is_version() { case $1 in *[!0-9a-f]*|"") return 1;; esac; [ ${#1} -eq 12 ]; }
versions() {
  vs=""
  for p in "$d"/*; do
    b=${p##*/}
    case $b in *[!0-9a-f]*|"") continue;; esac
    [ ${#b} -eq 12 ] && [ -f "$p/model.tflite" ] && vs="$vs $b"
  done
  printf '%s' "${vs# }"
}
state() {
  say "edgeq-state 1"
  cur=$(readlink -- "$d/current" 2>/dev/null) || cur=""
  say "current ${cur:--}"
  vs=$(versions); say "versions ${vs:--}"
  free=$(df -Pk -- "$d" 2>/dev/null | awk 'NR==2 {print $4}') || free=""
  say "free_kb ${free:--}"
  if [ -f "$d/manifest.json" ]; then
    say "manifest $(wc -c < "$d/manifest.json" | tr -d ' ')"; cat -- "$d/manifest.json"
  else
    say "manifest 0"
  fi
}
verify() {
  f="$d/$1/model.tflite"
  [ -f "$f" ] || { say "damaged $1 has no model file"; return 1; }
  got=$(sha "$f")
  side=$(cat -- "$f.sha256" 2>/dev/null) || side=""
  case $got in "$1"*) ;; *) say "damaged the sha256 of $1/model.tflite is now $got"; return 1;; esac
  if [ "$2" != - ] && [ "$got" != "$2" ]; then say "damaged the sha256 of $1/model.tflite is $got, expected $2"; return 1; fi
  if [ -n "$side" ] && [ "$got" != "$side" ]; then say "damaged the sha256 of $1/model.tflite is $got, its .sha256 file says $side"; return 1; fi
  say "verified $got"
}
"""

# deploy and rollback: state -> instructions (upload / activate / quit) -> verified -> commit -> done
_SWITCH_SH = (
    _COMMON_SH
    + r"""
err=$(mkdir -p -- "$d/.incoming" 2>&1) || die "cannot create $d/.incoming: $err"
lock
# uploads of sessions that died (killed, cut off): every writer holds the lock, so with it they are all stale
if [ -n "$locked" ]; then rm -f -- "$d/.incoming/"*.part "$d/".current.* "$d/".manifest.* "$d/".sha256.* 2>/dev/null
else find "$d/.incoming" -type f -name '*.part' -mmin +60 -exec rm -f {} + 2>/dev/null; fi
tmp=""
cleanup() { rm -f -- ${tmp:+"$tmp"} "$d/.current.$tok" "$d/.manifest.$tok" "$d/.sha256.$tok"; }
trap cleanup EXIT
trap 'exit 143' TERM HUP INT PIPE
state
say ready
v=""
while :; do
  IFS=' ' read -r cmd a1 a2 a3 || die "edgeq closed the session"
  case $cmd in
    quit) exit 0;;
    activate)
      v=$a1
      is_version "$v" || die "not a version: $v"
      verify "$v" "$a2" && break;;
    upload)
      v=$a1; want=$a2; size=$a3
      is_version "$v" || die "not a version: $v"
      case $size in *[!0-9]*|"") die "not a size: $size";; esac
      tmp="$d/.incoming/$v.$tok.part"
      err=$(head -c "$size" 2>&1 >"$tmp"); rc=$?
      [ "$rc" -eq 0 ] || die "writing the model into $d failed: ${err:-exit status $rc}"
      n=$(wc -c < "$tmp" | tr -d ' ')
      [ "$n" = "$size" ] || die "received $n of $size bytes: the upload was cut short"
      chmod 0644 "$tmp"
      flush "$tmp" & f=$!  # the flush (I/O) runs while the hash (CPU) is computed; both end before the rename
      got=$(sha "$tmp")
      wait "$f"
      [ "$got" = "$want" ] || die "the device computed sha256 $got, expected $want: the upload was damaged"
      err=$(mkdir -p -- "$d/$v" 2>&1) || die "cannot create $d/$v: $err"
      err=$({ printf '%s\n' "$got" > "$d/.sha256.$tok" && mv -f -- "$d/.sha256.$tok" "$d/$v/model.tflite.sha256"; } 2>&1) || die "cannot write $d/$v/model.tflite.sha256: $err"
      err=$(mv -f -- "$tmp" "$d/$v/model.tflite" 2>&1) || die "cannot move the model into $d/$v: $err"
      tmp=""
      flush "$d/$v"
      say "verified $got"
      break;;
    *) die "unknown instruction: $cmd";;
  esac
done
IFS= read -r step || die "edgeq closed the session before the switch: $v is on the device, not active"
case $step in
  commit) ;;
  skip) exit 0;;
  *) die "unexpected instruction: $step";;
esac
IFS= read -r manifest || die "edgeq closed the session before the switch: $v is on the device, not active"
IFS= read -r prune || prune=""
cur=$(readlink -- "$d/current" 2>/dev/null) || cur=""
if [ "$cur" != "$v" ]; then
  ln -s -- "$v" "$d/.current.$tok" || die "cannot create $d/.current.$tok"
  replace "$d/.current.$tok" "$d/current" || die "cannot switch $d/current to $v"
  flush "$d"
fi
say "switched $v"
if { printf '%s\n' "$manifest" > "$d/.manifest.$tok" && flush "$d/.manifest.$tok" && mv -f -- "$d/.manifest.$tok" "$d/manifest.json"; }; then :
else say "warning the manifest could not be written"; fi
set -f
for p in $prune; do
  is_version "$p" && [ "$p" != "$v" ] || continue
  rm -rf -- "$d/$p" || say "warning cannot remove $d/$p"
done
say "done"
"""
)

# status: read-only, takes no lock (a rollout in progress never blocks it)
_STATUS_SH = (
    _COMMON_SH
    + r"""
if [ ! -d "$d" ]; then say "edgeq-state 1"; say "absent"; exit 0; fi
state
cur=$(readlink -- "$d/current" 2>/dev/null) || cur=""
if [ -n "$cur" ]; then verify "$cur" - || true; else say "inactive"; fi
"""
)

# remove: state -> "all" or "versions V..." + manifest -> done
_REMOVE_SH = (
    _COMMON_SH
    + r"""
if [ ! -d "$d" ]; then say "edgeq-state 1"; say "absent"; exit 0; fi
lock
state
say ready
IFS=' ' read -r cmd rest || die "edgeq closed the session"
case $cmd in
  quit) exit 0;;
  all)
    err=$(rm -rf -- "$d" 2>&1) || die "cannot remove $d: $err"
    say "done";;
  versions)
    IFS= read -r manifest || die "edgeq closed the session"
    cur=$(readlink -- "$d/current" 2>/dev/null) || cur=""
    set -f
    for p in $rest; do
      is_version "$p" || continue
      [ "$p" = "$cur" ] && die "$p is the active version"
      rm -rf -- "$d/$p" || die "cannot remove $d/$p"
    done
    if { printf '%s\n' "$manifest" > "$d/.manifest.$tok" && mv -f -- "$d/.manifest.$tok" "$d/manifest.json"; }; then :
    else rm -f -- "$d/.manifest.$tok"; say "warning the manifest could not be written"; fi
    say "done";;
  *) die "unknown instruction: $cmd";;
esac
"""
)


@dataclasses.dataclass(frozen=True)
class _State:
    current: str | None
    versions: tuple[str, ...]
    free_bytes: int | None
    manifest: dict


class _Session:
    """One remote script speaking the line protocol above, on one channel."""

    def __init__(self, conn: Connection, script: str, directory: str, python: str, timeout_s: float):
        self.label = conn.label
        args = [directory, python or "python3", secrets.token_hex(6)]
        command = "sh -c " + shlex.quote(script) + " edgeq " + " ".join(shlex.quote(a) for a in args)
        self.process = conn.start(command, timeout_s)

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc) -> None:
        self.process.close()

    def line(self) -> str:
        """The next protocol line; a closed stream or an ``error`` line becomes an edgeq error."""
        line = self.process.readline()
        if line is None:
            result = self.process.wait(check=False)  # raises if the connection was lost or the command timed out
            detail = result.stderr.strip()[-400:] or f"exit status {result.exit_status}"
            raise RemoteCommandError(f"{self.label}: the remote script ended early: {detail}")
        if line.startswith("error "):
            raise RemoteCommandError(f"{self.label}: {line[6:]}")
        return line

    def expect(self, *kinds: str) -> tuple[str, str]:
        line = self.line()
        kind, _, rest = line.partition(" ")
        if kind not in kinds:
            raise RemoteCommandError(
                f"{self.label}: unexpected answer from the device: {line[:200]!r} (expected {' or '.join(kinds)})"
            )
        return kind, rest

    def send(self, *lines: str) -> None:
        self.process.write("".join(line + "\n" for line in lines).encode("utf-8"))

    def state(self, ready: bool = True) -> _State | None:
        """The state report (and the ``ready`` after it); None when the model folder does not exist (status and remove only)."""
        first = self.line()
        if first != "edgeq-state 1":
            raise RemoteCommandError(f"{self.label}: unexpected answer from the device: {first[:200]!r}")
        values: dict[str, str] = {}
        while True:
            kind, rest = self.expect("current", "versions", "free_kb", "manifest", "absent")
            if kind == "absent":
                return None
            values[kind] = rest
            if kind == "manifest":
                break
        size = int(values["manifest"]) if values["manifest"].isdigit() else 0
        manifest: dict = {}
        if size:
            raw = self.process.read_exact(size)
            try:
                loaded = json.loads(raw.decode("utf-8"))
                manifest = loaded if isinstance(loaded, dict) else {}
            except (UnicodeDecodeError, json.JSONDecodeError):
                log.warning("%s: manifest.json is not valid JSON; starting a new one", self.label)
        if ready:
            self.expect("ready")
        current = values.get("current", "-")
        free = values.get("free_kb", "-")
        return _State(
            current=None if current == "-" else current,
            versions=tuple(v for v in values.get("versions", "-").split() if _VERSION_RE.match(v)),
            free_bytes=int(free) * 1024 if free.isdigit() else None,
            manifest=manifest,
        )

    def finish(self) -> None:
        self.process.wait(check=True)


def _session_timeout(conn: Connection, transfer: bool) -> float:
    options = conn.options
    return options.command_timeout_s + (options.transfer_timeout_s if transfer else 0.0)


# --------------------------------------------------------------------------- the manifest


def _manifest_versions(manifest: dict) -> dict[str, dict]:
    versions = manifest.get("versions")
    return {k: v for k, v in versions.items() if isinstance(v, dict)} if isinstance(versions, dict) else {}


def _manifest_history(manifest: dict) -> list[dict]:
    history = manifest.get("history")
    return (
        [e for e in history if isinstance(e, dict) and isinstance(e.get("version"), str)]
        if isinstance(history, list)
        else []
    )


def _new_manifest(
    name: str, manifest: dict, *, current: str, event: dict, add: dict | None = None, drop: Iterable[str] = ()
) -> dict:
    versions = _manifest_versions(manifest)
    if add:
        versions[current] = add
    for version in drop:
        versions.pop(version, None)
    history = (_manifest_history(manifest) + [event])[-_HISTORY_LIMIT:]
    return {
        "format": 1,
        "model": name,
        "current": current,
        "updated_at": event["at"],
        "versions": versions,
        "history": history,
    }


def _manifest_line(manifest: dict) -> str:
    return json.dumps(
        manifest, separators=(",", ":"), sort_keys=True, ensure_ascii=True
    )  # one line, ASCII: safe for `read -r`


def _versions_to_prune(state: _State, current: str, keep: int) -> list[str]:
    """Versions beyond the ``keep`` most recently activated ones; never ``current``."""
    rank: dict[str, int] = {}
    for index, event in enumerate(_manifest_history(state.manifest)):
        rank[event["version"]] = index
    rank[current] = 1 << 30
    on_device = sorted(set(state.versions) | {current}, key=lambda v: rank.get(v, -1), reverse=True)
    return [v for v in on_device[keep:] if v != current]


def _version_infos(state: _State) -> tuple[VersionInfo, ...]:
    known = _manifest_versions(state.manifest)
    infos = []
    for version in state.versions:
        entry = known.get(version, {})
        infos.append(
            VersionInfo(
                version=version,
                sha256=entry.get("sha256"),
                size_bytes=entry.get("size_bytes"),
                deployed_at=entry.get("deployed_at"),
                source=entry.get("source"),
                active=version == state.current,
            )
        )
    return tuple(sorted(infos, key=lambda i: (i.deployed_at or "", i.version), reverse=True))


# --------------------------------------------------------------------------- one device


ProgressCallback = Callable[[int, int], None]


def device_result(device: Device, action: str, model: str, status: DeviceStatus, **kwargs: Any) -> DeviceResult:
    """A :class:`DeviceResult` for ``device`` (for operations passed to :func:`run_fleet`)."""
    return DeviceResult(
        device=device.name, destination=device.destination, action=action, model=model, status=status, **kwargs
    )


def deploy_to_device(
    conn: Connection,
    device: Device,
    model: ModelFile,
    *,
    keep: int | None = None,
    progress: ProgressCallback | None = None,
) -> DeviceResult:
    """Deploy ``model`` to one device over ``conn``: upload (unless the version is there), verify, flush, switch."""
    keep = keep or device.keep_versions or DEFAULT_KEEP_VERSIONS
    version = model.version
    warnings: list[str] = []
    sent = 0
    with _Session(
        conn, _SWITCH_SH, model_dir(device, model.name), device.python, _session_timeout(conn, transfer=True)
    ) as session:
        state = session.state()
        if state is None:  # the switch script creates the folder: it never reports it absent
            raise InternalError(f"{device.name}: the device reported no model folder")
        previous = state.current
        verified = False
        if version in state.versions:
            session.send(f"activate {version} {model.sha256}")
            kind, rest = session.expect("verified", "damaged")
            verified = kind == "verified"
            if not verified:
                warnings.append(f"version {version} on the device was damaged ({rest}); uploaded again")
                if previous == version:
                    warnings.append("the active model was damaged and has been replaced")
        if verified and previous == version:
            session.send("skip")
            session.finish()
            return device_result(
                device,
                "deploy",
                model.name,
                DeviceStatus.UNCHANGED,
                version=version,
                previous=previous,
                warnings=tuple(warnings),
            )
        if not verified:
            needed = model.size_bytes + _FREE_MARGIN_BYTES
            if state.free_bytes is not None and state.free_bytes < needed:
                session.send("quit")
                raise RemoteCommandError(
                    f"{device.name}: not enough space for {model.name}: it needs {_mb(needed)}, {_mb(state.free_bytes)} free in {device.remote_dir}",
                    hint="free some space on the device (edgeq remove), or lower keep_versions",
                )
            session.send(f"upload {version} {model.sha256} {model.size_bytes}")
            try:
                sent = session.process.send_file(model.path, progress)
            except EdgeqError as exc:
                # The device may have stopped reading because the write failed (disk full): its reason comes first.
                reason = _early_error(session)
                if reason:
                    raise RemoteCommandError(f"{device.name}: {reason}") from exc
                raise
            session.expect("verified")
        manifest = state.manifest
        entry = {
            "sha256": model.sha256,
            "size_bytes": model.size_bytes,
            "deployed_at": _now(),
            "source": Path(model.path).name,
            "edgeq": __version__,
        }
        prune = _versions_to_prune(state, version, keep)
        event = {"at": entry["deployed_at"], "action": "deploy", "version": version, "previous": previous}
        new_manifest = _new_manifest(model.name, manifest, current=version, event=event, add=entry, drop=prune)
        session.send("commit", _manifest_line(new_manifest), " ".join(prune))
        warnings.extend(_until_done(session))
        session.finish()
    return device_result(
        device,
        "deploy",
        model.name,
        DeviceStatus.OK,
        version=version,
        previous=previous,
        bytes_sent=sent,
        removed=tuple(prune),
        warnings=tuple(warnings),
    )


def _early_error(session: _Session) -> str | None:
    try:
        for _ in range(20):
            line = session.process.readline()
            if line is None:
                return None
            if line.startswith("error "):
                return line[6:]
    except EdgeqError:
        return None
    return None


def _until_done(session: _Session) -> list[str]:
    warnings = []
    while True:
        kind, rest = session.expect("switched", "warning", "done")
        if kind == "warning":
            warnings.append(rest)
        if kind == "done":
            return warnings


def status_of_device(conn: Connection, device: Device, name: str) -> DeviceResult:
    """The active version of ``name`` on one device and whether its file still matches its sha256."""
    validate_model_name(name)
    with _Session(
        conn, _STATUS_SH, model_dir(device, name), device.python, _session_timeout(conn, transfer=False)
    ) as session:
        state = session.state(ready=False)
        if state is None:
            session.finish()
            return device_result(
                device, "status", name, DeviceStatus.FAILED, reason=f"no model named {name!r} on the device"
            )
        kind, rest = session.expect("verified", "damaged", "inactive")
        session.finish()
    intact = None if kind == "inactive" else kind == "verified"
    model_state = ModelState(
        name=name,
        current=state.current,
        intact=intact,
        detail=rest if kind == "damaged" else None,
        versions=_version_infos(state),
        free_bytes=state.free_bytes,
    )
    if kind == "inactive":
        return device_result(device, "status", name, DeviceStatus.FAILED, reason="no active version", state=model_state)
    if not intact:
        return device_result(
            device,
            "status",
            name,
            DeviceStatus.FAILED,
            version=state.current,
            reason=f"active version {state.current} does not match its sha256: {rest}",
            hint=f"re-deploy it (edgeq deploy) or roll back (edgeq rollback --name {name})",
            state=model_state,
        )
    return device_result(device, "status", name, DeviceStatus.OK, version=state.current, state=model_state)


def rollback_device(conn: Connection, device: Device, name: str, to: str | None = None) -> DeviceResult:
    """Switch ``name`` back to the previously active version (or to the version ``to``, a unique prefix) after verifying it."""
    validate_model_name(name)
    with _Session(
        conn, _SWITCH_SH, model_dir(device, name), device.python, _session_timeout(conn, transfer=False)
    ) as session:
        state = session.state()
        if state is None:  # the switch script creates the folder: it never reports it absent
            raise InternalError(f"{device.name}: the device reported no model folder")
        previous = state.current
        try:
            target = _rollback_target(state, to)
        except EdgeqError:
            session.send("quit")
            raise
        if target == previous:
            session.send("quit")
            session.finish()
            return device_result(device, "rollback", name, DeviceStatus.UNCHANGED, version=target, previous=previous)
        known = _manifest_versions(state.manifest).get(target, {})
        expected = (
            known.get("sha256") if isinstance(known.get("sha256"), str) and _SHA_RE.match(known["sha256"]) else "-"
        )
        session.send(f"activate {target} {expected}")
        kind, rest = session.expect("verified", "damaged")
        if kind == "damaged":
            session.send("quit")
            raise RemoteCommandError(
                f"{device.name}: not rolling back to {target}: {rest}", hint="deploy that model again instead"
            )
        event = {"at": _now(), "action": "rollback", "version": target, "previous": previous}
        new_manifest = _new_manifest(name, state.manifest, current=target, event=event)
        session.send("commit", _manifest_line(new_manifest), "")
        warnings = _until_done(session)
        session.finish()
    return device_result(
        device, "rollback", name, DeviceStatus.OK, version=target, previous=previous, warnings=tuple(warnings)
    )


def _rollback_target(state: _State, to: str | None) -> str:
    if to:
        matches = [v for v in state.versions if v.startswith(to.lower())]
        if len(matches) == 1:
            return matches[0]
        listed = ", ".join(state.versions) or "none"
        if not matches:
            raise EdgeqError(f"no version {to!r} on the device (it has: {listed})")
        raise EdgeqError(f"version {to!r} is ambiguous on the device (it has: {listed})", hint="give more digits")
    for event in reversed(_manifest_history(state.manifest)):
        version = event["version"]
        if version != state.current and version in state.versions:
            return version
    others = [v for v in state.versions if v != state.current]
    if others:
        raise EdgeqError(
            f"the device has no history of earlier activations; choose one of {', '.join(others)}",
            hint="edgeq rollback --to VERSION",
        )
    raise EdgeqError("no earlier version on the device to roll back to")


def remove_from_device(conn: Connection, device: Device, name: str, versions: Sequence[str] = ()) -> DeviceResult:
    """Delete ``name`` from one device: all of it, or only ``versions`` (never the active one)."""
    validate_model_name(name)
    with _Session(
        conn, _REMOVE_SH, model_dir(device, name), device.python, _session_timeout(conn, transfer=False)
    ) as session:
        state = session.state()
        if state is None:
            session.finish()
            return device_result(
                device, "remove", name, DeviceStatus.UNCHANGED, reason=f"no model named {name!r} on the device"
            )
        previous = state.current
        if not versions:
            session.send("all")
            session.expect("done")
            session.finish()
            return device_result(device, "remove", name, DeviceStatus.OK, previous=previous, removed=state.versions)
        chosen: list[str] = []
        for wanted in versions:
            matches = [v for v in state.versions if v.startswith(wanted.lower())]
            if len(matches) > 1:
                session.send("quit")
                raise EdgeqError(
                    f"{device.name}: version {wanted!r} is ambiguous (it has: {', '.join(state.versions)})"
                )
            chosen.extend(m for m in matches if m not in chosen)
        if previous in chosen:
            session.send("quit")
            raise EdgeqError(
                f"{device.name}: {previous} is the active version of {name}; not removing it",
                hint=f"roll back first (edgeq rollback --name {name}), or remove the whole model",
            )
        if not chosen:
            session.send("quit")
            session.finish()
            return device_result(
                device,
                "remove",
                name,
                DeviceStatus.UNCHANGED,
                version=previous,
                reason="none of those versions is on the device",
            )
        event = {"at": _now(), "action": "remove", "version": previous or "-", "removed": chosen}
        manifest = _new_manifest(name, state.manifest, current=previous or "", event=event, drop=chosen)
        session.send("versions " + " ".join(chosen), _manifest_line(manifest))
        warnings = []
        while True:
            kind, rest = session.expect("warning", "done")
            if kind == "done":
                break
            warnings.append(rest)
        session.finish()
    return device_result(
        device,
        "remove",
        name,
        DeviceStatus.OK,
        version=previous,
        previous=previous,
        removed=tuple(chosen),
        warnings=tuple(warnings),
    )


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


# --------------------------------------------------------------------------- fleets


class FleetEvents(Protocol):
    """What a progress display hears from :func:`run_fleet` (called from worker threads)."""

    def started(self, device: Any) -> None: ...

    def transferred(self, device: Any, done: int, total: int) -> None: ...

    def retrying(self, device: Any, attempt: int, error: EdgeqError, delay_s: float) -> None: ...

    def finished(self, result: DeviceResult) -> None: ...


@dataclasses.dataclass(frozen=True)
class FleetOptions:
    """How a fleet is worked through."""

    concurrency: int = DEFAULT_CONCURRENCY
    retries: int = 2  # extra attempts after a transport error (DeviceUnreachableError) only
    backoff_s: float = 1.0  # first retry delay; doubled for each further one, capped at 30 s
    canary: int = 0  # this many devices first; the rest only if all of them succeeded


Operation = Callable[
    ["Connection", "Device", ProgressCallback], DeviceResult
]  # (connection, device, progress) -> result
Connector = Callable[["Device"], "Connection"]  # device -> an unopened connection


class _Registry:
    """Open connections, so that an interrupt can close them and free the worker threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._open: set = set()
        self.cancelled = threading.Event()

    def add(self, conn) -> None:
        with self._lock:
            self._open.add(conn)

    def discard(self, conn) -> None:
        with self._lock:
            self._open.discard(conn)

    def cancel(self) -> None:
        self.cancelled.set()
        with self._lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.close()
            except Exception:  # closing during an interrupt: best effort
                pass


def run_fleet(
    devices: Sequence[Device],
    operation: Operation,
    *,
    connect: Connector,
    action: str,
    model: str,
    version: str | None = None,
    options: FleetOptions = FleetOptions(),
    events: FleetEvents | None = None,
) -> FleetResult:
    """Run ``operation`` on every device with bounded concurrency; one device's failure never stops the others.

    Each attempt on a device uses ONE connection for everything. A
    :class:`DeviceUnreachableError` is retried up to ``options.retries`` times
    with exponential backoff; any other edgeq error fails the device at once.
    """
    started = time.monotonic()
    registry = _Registry()
    results: dict[int, DeviceResult] = {}
    devices = list(devices)
    canary = min(max(options.canary, 0), len(devices))
    waves = [list(range(canary)), list(range(canary, len(devices)))] if canary else [list(range(len(devices)))]
    stopped = False
    for wave_number, wave in enumerate(waves):
        if not wave:
            continue
        if stopped:
            failed = ", ".join(r.device for r in results.values() if not r.status.succeeded)
            for index in wave:
                results[index] = device_result(
                    devices[index],
                    action,
                    model,
                    DeviceStatus.SKIPPED,
                    reason=f"not attempted: the canary failed ({failed})",
                )
                if events:
                    events.finished(results[index])
            continue
        workers = max(1, min(options.concurrency, len(wave)))
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"edgeq-{action}")
        try:
            futures = {
                executor.submit(_attempts, devices[i], operation, connect, action, model, options, events, registry): i
                for i in wave
            }
            for future in concurrent.futures.as_completed(futures):
                results[futures[future]] = future.result()
        except BaseException:
            registry.cancel()
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        executor.shutdown(wait=True)
        if canary and wave_number == 0:
            stopped = any(not results[i].status.succeeded for i in wave)
    ordered = tuple(results[i] for i in range(len(devices)))
    return FleetResult(
        action=action,
        model=model,
        version=version,
        results=ordered,
        seconds=time.monotonic() - started,
        stopped_by_canary=stopped,
    )


def _attempts(
    device, operation, connect, action, model, options: FleetOptions, events, registry: _Registry
) -> DeviceResult:
    started = time.monotonic()
    if events:
        events.started(device)
    attempt = 0
    while True:
        attempt += 1
        conn = None
        try:
            if registry.cancelled.is_set():
                raise EdgeqError("interrupted")
            conn = connect(device)
            registry.add(conn)

            def progress(done: int, total: int) -> None:
                if events:
                    events.transferred(device, done, total)

            with conn:
                result = operation(conn, device, progress)
            result = dataclasses.replace(result, attempts=attempt, seconds=time.monotonic() - started)
        except DeviceUnreachableError as exc:
            if attempt <= options.retries and not registry.cancelled.is_set():
                delay = min(options.backoff_s * (2 ** (attempt - 1)), 30.0)
                if events:
                    events.retrying(device, attempt, exc, delay)
                log.info("%s; retrying in %.1f s", exc, delay)
                registry.cancelled.wait(delay)
                continue
            result = _failure(device, action, model, DeviceStatus.UNREACHABLE, exc, attempt, started)
        except EdgeqError as exc:
            result = _failure(device, action, model, DeviceStatus.FAILED, exc, attempt, started)
        except Exception as exc:  # a bug: the other devices go on; the traceback goes to the log (--debug)
            log.exception("%s: internal error during %s", device.name, action)
            result = device_result(
                device,
                action,
                model,
                DeviceStatus.FAILED,
                reason=f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                error_code=1,
                attempts=attempt,
                seconds=time.monotonic() - started,
            )
        finally:
            if conn is not None:
                registry.discard(conn)
        if events:
            events.finished(result)
        return result


def _failure(
    device, action: str, model: str, status: DeviceStatus, exc: EdgeqError, attempt: int, started: float
) -> DeviceResult:
    reason = exc.message
    prefix = f"{device.name}: "
    if reason.startswith(prefix):
        reason = reason[len(prefix) :]
    return device_result(
        device,
        action,
        model,
        status,
        reason=reason,
        hint=exc.hint,
        error_code=exc.exit_code,
        attempts=attempt,
        seconds=time.monotonic() - started,
    )


# --------------------------------------------------------------------------- the fleet operations


def deploy_fleet(
    devices: Sequence[Device],
    model: ModelFile,
    *,
    connect: Connector,
    keep: int | None = None,
    options: FleetOptions = FleetOptions(),
    events: FleetEvents | None = None,
) -> FleetResult:
    """Deploy ``model`` to every device (see :func:`deploy_to_device` and :func:`run_fleet`)."""

    def operation(conn, device, progress):
        return deploy_to_device(conn, device, model, keep=keep, progress=progress)

    return run_fleet(
        devices,
        operation,
        connect=connect,
        action="deploy",
        model=model.name,
        version=model.version,
        options=options,
        events=events,
    )


def status_fleet(
    devices: Sequence[Device],
    name: str,
    *,
    connect: Connector,
    options: FleetOptions = FleetOptions(),
    events: FleetEvents | None = None,
) -> FleetResult:
    validate_model_name(name)
    return run_fleet(
        devices,
        lambda c, d, p: status_of_device(c, d, name),
        connect=connect,
        action="status",
        model=name,
        options=options,
        events=events,
    )


def rollback_fleet(
    devices: Sequence[Device],
    name: str,
    *,
    to: str | None = None,
    connect: Connector,
    options: FleetOptions = FleetOptions(),
    events: FleetEvents | None = None,
) -> FleetResult:
    validate_model_name(name)
    if to is not None and not re.fullmatch(r"[0-9a-fA-F]{4,12}", to):
        raise EdgeqError(f"--to {to!r} is not a version (4 to 12 hex digits, as edgeq status shows them)")
    return run_fleet(
        devices,
        lambda c, d, p: rollback_device(c, d, name, to),
        connect=connect,
        action="rollback",
        model=name,
        version=to,
        options=options,
        events=events,
    )


def remove_fleet(
    devices: Sequence[Device],
    name: str,
    *,
    versions: Sequence[str] = (),
    connect: Connector,
    options: FleetOptions = FleetOptions(),
    events: FleetEvents | None = None,
) -> FleetResult:
    validate_model_name(name)
    for version in versions:
        if not re.fullmatch(r"[0-9a-fA-F]{4,12}", version):
            raise EdgeqError(f"--version {version!r} is not a version (4 to 12 hex digits)")
    return run_fleet(
        devices,
        lambda c, d, p: remove_from_device(c, d, name, versions),
        connect=connect,
        action="remove",
        model=name,
        options=options,
        events=events,
    )
