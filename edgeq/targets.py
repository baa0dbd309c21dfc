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

import dataclasses
import difflib
import math
import os
import platform
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConversionError, InternalError, TargetFileError
from .types import IOType, QuantMode, to_jsonable

if TYPE_CHECKING:
    from .convert import ConvertOptions

__all__ = [
    "ARCHES",
    "CPU",
    "CPU_FEATURES",
    "DELEGATES",
    "RUNTIMES",
    "SCHEMA_VERSION",
    "TRANSPORTS",
    "Deploy",
    "Quantization",
    "SearchDir",
    "Target",
    "TargetSearchPath",
    "apply_target",
    "bundled_targets_dir",
    "cpu_facts_from_cpuinfo",
    "is_target_path",
    "list_targets",
    "load_target",
    "machine_arch",
    "normalize_cpu_features",
    "user_targets_dir",
]

SCHEMA_VERSION = 1
"""Version of the JSON that ``edgeq targets list/show --json`` print; bumped only on incompatible changes."""

RUNTIMES = ("ai-edge-litert", "tflite-runtime", "tensorflow")
DELEGATES = ("xnnpack", "edgetpu", "gpu")
TRANSPORTS = ("ssh", "local")
ARCHES = ("aarch64", "armv7l", "armv6l", "x86_64")

# ISA features a target may list, in the spelling of Linux's /proc/cpuinfo, per
# userland architecture. "neon" is Advanced SIMD on every Arm architecture
# (aarch64's cpuinfo calls it "asimd").
_ARM32_FEATURES = ("vfp", "vfpv3", "vfpv4", "neon", "fphp", "asimdhp", "asimddp", "asimdfhm", "asimdbf16", "i8mm")
CPU_FEATURES: Mapping[str, tuple[str, ...]] = {
    "aarch64": ("neon", "fphp", "asimdhp", "asimddp", "asimdfhm", "i8mm", "bf16", "sve", "sve2", "sme"),
    "armv7l": _ARM32_FEATURES,
    "armv6l": _ARM32_FEATURES,
    "x86_64": (
        "sse2",
        "ssse3",
        "sse4_1",
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "amx_tile",
        "amx_int8",
        "amx_bf16",
    ),
}
# Common names that are not cpuinfo's: point at the right spelling.
_FEATURE_ALIASES = {
    "asimd": "neon",
    "simd": "neon",
    "dotprod": "asimddp",
    "dot-product": "asimddp",
    "sdot": "asimddp",
    "fp16": "asimdhp (and fphp for scalar fp16)",
    "vnni": "avx512_vnni or avx_vnni",
}
_ARCH_ALIASES = {
    "arm64": "aarch64",
    "amd64": "x86_64",
    "x64": "x86_64",
    "armhf": "armv7l",
    "armv7": "armv7l",
    "armv8": "aarch64",
}

AUTO = "auto"  # resolved from the machine edgeq runs on; only for transport = "local"
UNKNOWN = "unknown"  # a fact the file cannot state (generic targets)

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")

# --------------------------------------------------------------------------- the target


@dataclasses.dataclass(frozen=True)
class CPU:
    """The device's application CPU."""

    model: str  # "Cortex-A72"
    cores: int | None  # None: unknown (generic targets)
    max_clock_mhz: int | None  # None: unknown
    features: tuple[str, ...]  # ISA features in cpuinfo spelling: ("neon", "asimddp", ...)
    soc: str | None = None  # "BCM2711"
    isa: str | None = None  # "ARMv8-A"


@dataclasses.dataclass(frozen=True)
class Quantization:
    """What a converted model must look like to run on the target. The first mode and I/O type are the defaults."""

    modes: tuple[str, ...]  # QuantMode values the target can run, preferred first
    io_types: tuple[str, ...]  # IOType values its models' inputs/outputs may have, preferred first
    per_channel: bool  # per-channel (per-axis) weights supported
    notes: tuple[str, ...] = ()  # constraints beyond these fields (e.g. the Edge TPU's op limits)

    @property
    def default_mode(self) -> QuantMode:
        return QuantMode(self.modes[0])

    def allows_mode(self, mode: QuantMode | str) -> bool:
        return QuantMode(mode).value in self.modes

    def io_types_for(self, mode: QuantMode | str) -> tuple[IOType, ...]:
        """I/O types that both the target and ``mode`` allow, in the target's order."""
        allowed = QuantMode(mode).allowed_io_types
        return tuple(IOType(t) for t in self.io_types if IOType(t) in allowed)

    def default_io_type(self, mode: QuantMode | str) -> IOType | None:
        choices = self.io_types_for(mode)
        return choices[0] if choices else None


@dataclasses.dataclass(frozen=True)
class Deploy:
    """Defaults for deploying to a device of this kind (an inventory entry may override them)."""

    transport: str  # "ssh" | "local"
    user: str | None = None  # None: from the inventory or the SSH config
    port: int = 22
    remote_dir: str = "edgeq"  # relative to the login user's home directory, or absolute
    keep_versions: int = 3


@dataclasses.dataclass(frozen=True)
class Target:
    """A kind of edge device, as loaded from its TOML file (with ``extends`` merged and ``auto`` resolved)."""

    name: str
    description: str
    arch: str  # userland architecture, as `uname -m` names it under a kernel of the same width
    cpu: CPU
    memory_mb: int | None  # RAM in MiB; None: unknown
    power_w: float | None  # typical board power while running inference, in watts; None: unknown
    os: str
    python: str  # Python command on the device
    runtimes: tuple[str, ...]  # preferred first
    # the newest release of each runtime such a device can install; a runtime not named: its newest release
    runtime_versions: Mapping[str, str] = dataclasses.field(hash=False)
    default_threads: int
    delegates: tuple[str, ...]  # preferred first
    quantization: Quantization
    deploy: Deploy
    source: str  # path of the file it was loaded from
    origin: str  # "path" | "targets-dir" | "env" | "user" | "bundled"
    extends: str | None = None  # the parent named in the file
    parents: tuple[str, ...] = ()  # files merged beneath this one, nearest first
    auto: tuple[str, ...] = ()  # keys written as "auto" and resolved from this machine

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form (``edgeq targets show --json``, documented in targets/README.md)."""
        return to_jsonable(self)


# --------------------------------------------------------------------------- the schema


@dataclasses.dataclass(frozen=True)
class _Field:
    kind: str  # "str" | "int" | "number" | "bool" | "list" | "table" | "versions" (a table of runtime name -> version)
    required: bool = True
    choices: tuple[str, ...] = ()  # for "str" values and "list" items
    special: tuple[str, ...] = ()  # sentinel strings accepted instead of the value: AUTO, UNKNOWN
    minimum: int | None = None  # "number": the value must be greater than this
    maximum: int | None = None
    non_empty: bool = False  # lists
    inherited: bool = True  # merged from the parent by `extends`
    what: str = "value"  # noun for choice errors: "runtime", "delegate", ...


_QUANT_MODES = tuple(m.value for m in QuantMode)
_IO_TYPES = tuple(t.value for t in IOType)

_SCHEMA: dict[str, _Field] = {
    "name": _Field("str", inherited=False),
    "description": _Field("str", inherited=False),
    "extends": _Field("str", required=False, inherited=False),
    "arch": _Field("str", choices=ARCHES, special=(AUTO,), what="architecture"),
    "memory_mb": _Field("int", minimum=1, special=(AUTO, UNKNOWN)),
    "power_w": _Field("number", required=False, minimum=0, maximum=10_000),
    "os": _Field("str", special=(AUTO,)),
    "python": _Field("str", special=(AUTO,)),
    "runtimes": _Field("list", choices=RUNTIMES, non_empty=True, what="runtime"),
    "runtime_versions": _Field("versions", required=False, choices=RUNTIMES, what="runtime"),
    "default_threads": _Field("int", minimum=1, maximum=1024, special=(AUTO,)),
    "delegates": _Field("list", choices=DELEGATES, what="delegate"),
    "cpu": _Field("table"),
    "cpu.model": _Field("str", special=(AUTO,)),
    "cpu.soc": _Field("str", required=False),
    "cpu.isa": _Field("str", required=False),
    "cpu.cores": _Field("int", minimum=1, maximum=4096, special=(AUTO, UNKNOWN)),
    "cpu.max_clock_mhz": _Field("int", minimum=1, maximum=100_000, special=(AUTO, UNKNOWN)),
    "cpu.features": _Field(
        "list", special=(AUTO,), what="feature"
    ),  # vocabulary depends on arch: checked after merging
    "quantization": _Field("table"),
    "quantization.modes": _Field("list", choices=_QUANT_MODES, non_empty=True, what="mode"),
    "quantization.io_types": _Field("list", choices=_IO_TYPES, non_empty=True, what="I/O type"),
    "quantization.per_channel": _Field("bool"),
    "quantization.notes": _Field("list", required=False),
    "deploy": _Field("table"),
    "deploy.transport": _Field("str", choices=TRANSPORTS, what="transport"),
    "deploy.user": _Field("str", required=False),
    "deploy.port": _Field("int", required=False, minimum=1, maximum=65535),
    "deploy.remote_dir": _Field("str", required=False),
    "deploy.keep_versions": _Field("int", required=False, minimum=1, maximum=1000),
}
_DEPLOY_DEFAULTS = {"user": None, "port": 22, "remote_dir": "edgeq", "keep_versions": 3}


def _is_table(key: str) -> bool:
    """Tables merge key by key under `extends` (a "versions" table too: one runtime's version at a time)."""
    spec = _SCHEMA.get(key)
    return spec is not None and spec.kind in ("table", "versions")


def _inherited(key: str) -> bool:
    spec = _SCHEMA.get(key)
    return spec is None or spec.inherited


def _accepts(key: str, sentinel: str) -> bool:
    spec = _SCHEMA.get(key)
    return spec is not None and sentinel in spec.special


def _children(table: str) -> list[str]:
    """Schema keys directly inside ``table`` ("" for the top level), as full key paths."""
    depth = 0 if not table else table.count(".") + 1
    prefix = f"{table}." if table else ""
    return [k for k in _SCHEMA if k.startswith(prefix) and k.count(".") == depth]


# --------------------------------------------------------------------------- where targets live


def bundled_targets_dir() -> Path:
    """The folder of targets shipped with edgeq: inside the installed package, or ``targets/`` of a source checkout."""
    here = Path(__file__).resolve().parent
    installed = here / "_bundled_targets"  # wheel layout: pyproject maps edgeq._bundled_targets onto targets/
    if installed.is_dir():
        return installed
    checkout = here.parent / "targets"  # source checkout or editable install
    if checkout.is_dir() and (here.parent / "pyproject.toml").is_file():
        return checkout
    raise InternalError(
        f"edgeq's bundled targets are missing (looked in {installed} and {checkout}): a broken installation"
    )


def user_targets_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/edgeq/targets``, or ``~/.config/edgeq/targets`` when it is unset or not absolute."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "edgeq" / "targets"


def is_target_path(value: str | os.PathLike) -> bool:
    """True when ``value`` names a file rather than a target: it ends in .toml or contains a path separator."""
    if isinstance(value, os.PathLike):
        return True
    seps = [os.sep] + ([os.altsep] if os.altsep else [])
    return value.endswith(".toml") or any(s in value for s in seps)


@dataclasses.dataclass(frozen=True)
class SearchDir:
    """One folder of the lookup path."""

    path: Path
    origin: str  # "targets-dir" | "env" | "user" | "bundled"

    def file_for(self, name: str) -> Path | None:
        candidate = self.path / f"{name}.toml"
        return candidate if candidate.is_file() else None

    def stems(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.stem for p in self.path.glob("*.toml") if p.is_file())


@dataclasses.dataclass(frozen=True)
class TargetSearchPath:
    """The folders a target name is looked up in, first match first."""

    dirs: tuple[SearchDir, ...]

    @classmethod
    def default(
        cls,
        targets_dir: str | os.PathLike | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> TargetSearchPath:
        """``--targets-dir``, then ``EDGEQ_TARGETS_PATH``, then the user config folder, then the bundled targets.

        A folder given explicitly (``--targets-dir`` or in ``EDGEQ_TARGETS_PATH``)
        must exist; the user config folder is skipped while it does not.
        """
        env = os.environ if environ is None else environ
        dirs: list[SearchDir] = []
        if targets_dir is not None:
            path = Path(targets_dir).expanduser()
            if not path.is_dir():
                raise TargetFileError(f"--targets-dir {targets_dir}: no such directory")
            dirs.append(SearchDir(path, "targets-dir"))
        for entry in env.get("EDGEQ_TARGETS_PATH", "").split(os.pathsep):
            if not entry.strip():
                continue
            path = Path(entry).expanduser()
            if not path.is_dir():
                raise TargetFileError(
                    f"EDGEQ_TARGETS_PATH: {entry}: no such directory",
                    hint=f"fix or unset EDGEQ_TARGETS_PATH (folders separated by '{os.pathsep}')",
                )
            dirs.append(SearchDir(path, "env"))
        dirs.append(SearchDir(user_targets_dir(env), "user"))
        dirs.append(SearchDir(bundled_targets_dir(), "bundled"))
        unique: list[SearchDir] = []
        seen: set[Path] = set()
        for d in dirs:
            key = d.path.resolve()
            if key not in seen:
                seen.add(key)
                unique.append(d)
        return cls(tuple(unique))

    def find(self, name: str, *, below: Path | None = None, exclude: Path | None = None) -> tuple[Path, str] | None:
        """The first file for ``name``: ``(path, origin)``.

        ``below``: only folders after that one (how a target extends the one
        it overrides). ``exclude``: never this file.
        """
        dirs = list(self.dirs)
        if below is not None:
            resolved = [d.path.resolve() for d in dirs]
            below_r = below.resolve()
            if below_r in resolved:
                dirs = dirs[resolved.index(below_r) + 1 :]
        excluded = exclude.resolve() if exclude is not None else None
        for d in dirs:
            found = d.file_for(name)
            if found is not None and found.resolve() != excluded:
                return found, d.origin
        return None

    def entries(self) -> dict[str, tuple[Path, str]]:
        """Every target name visible, mapped to the file that wins: ``{name: (path, origin)}``."""
        result: dict[str, tuple[Path, str]] = {}
        for d in self.dirs:
            for stem in d.stems():
                result.setdefault(stem, (d.path / f"{stem}.toml", d.origin))
        return dict(sorted(result.items()))

    def describe(self) -> str:
        """The folders, in order, for messages: ``--targets-dir /x, user /home/u/.config/edgeq/targets (absent), ...``."""
        labels = {"targets-dir": "--targets-dir", "env": "EDGEQ_TARGETS_PATH", "user": "user", "bundled": "bundled"}
        parts = []
        for d in self.dirs:
            absent = "" if d.path.is_dir() else " (absent)"
            parts.append(f"{labels.get(d.origin, d.origin)} {d.path}{absent}")
        return ", ".join(parts)

    def unknown_target(self, name: str, context: str = "") -> TargetFileError:
        """The error for a name found nowhere, with the closest known name."""
        names = list(self.entries())
        close = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.6)
        message = f"{context}unknown target '{name}'."
        if close:
            message += f" Did you mean '{close[0]}'?"
        return TargetFileError(message, hint=f"looked in: {self.describe()}; `edgeq targets list` shows them all")


# --------------------------------------------------------------------------- reading and checking one file


class _Problems:
    """Problems found in one file; raised together as one TargetFileError."""

    def __init__(self, path: Path):
        self.path = path
        self.items: list[tuple[str, str | None]] = []

    def add(self, message: str, hint: str | None = None) -> None:
        self.items.append((message, hint))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if len(self.items) == 1:
            message, hint = self.items[0]
            raise TargetFileError(f"{self.path}: {message}", hint=hint)
        lines = "\n".join(f"  - {message}" for message, _ in self.items)
        raise TargetFileError(f"{self.path}: {len(self.items)} problems:\n{lines}")


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__  # TOML dates and times


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _suggest(word: str, candidates: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TargetFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TargetFileError(f"{path}: is a directory, not a target file") from None
    except OSError as exc:
        raise TargetFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TargetFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message ends with "(at line L, column C)".
        raise TargetFileError(f"{path}: invalid TOML: {exc}", hint="see https://toml.io for the syntax") from None


def _check_file(path: Path, raw: Mapping[str, Any]) -> None:
    """Everything that can be checked in one file alone: keys, types, values, the name."""
    problems = _Problems(path)
    _check_table(raw, "", problems)
    parent = raw.get("extends")
    if isinstance(parent, str) and parent and not _NAME_RE.match(parent):
        problems.add(
            f"extends: {parent!r} is not a target name",
            hint="extends takes the name of another target (its file name without .toml), not a path",
        )
    name = raw.get("name")
    if isinstance(name, str) and name:
        if not _NAME_RE.match(name):
            problems.add(
                f"name: {name!r} is not a valid target name",
                hint="use lowercase letters, digits, '-' and '_', starting with a letter or digit",
            )
        elif name != path.stem:
            problems.add(
                f"name = {name!r} does not match the file name '{path.name}'",
                hint=f"a target's name must equal its file name without .toml: rename the file to {name}.toml or set name = {path.stem!r}",
            )
    problems.raise_if_any()


def _check_table(table: Mapping[str, Any], prefix: str, problems: _Problems) -> None:
    valid = _children(prefix)
    for key, value in table.items():
        full = f"{prefix}.{key}" if prefix else key
        spec = _SCHEMA.get(full)
        if spec is None:
            problems.add(*_unknown_key(full, valid))
            continue
        if spec.kind == "table":
            if not isinstance(value, dict):
                problems.add(f"{full}: expected a table ([{full}]), got {_type_name(value)} {_shown(value)}")
            else:
                _check_table(value, full, problems)
            continue
        problem = _check_value(full, spec, value)
        if problem:
            problems.add(*problem)


def _unknown_key(full: str, valid: list[str]) -> tuple[str, str | None]:
    leaf = full.rsplit(".", 1)[-1]
    close = _suggest(full, valid)
    if close is None:
        # A key in the wrong table: `cores = 4` at the top instead of under [cpu].
        elsewhere = [k for k in _SCHEMA if k.rsplit(".", 1)[-1] == leaf and k != full]
        close = elsewhere[0] if elsewhere else None
    message = f"unknown key '{full}'."
    if close:
        message += f" Did you mean '{close}'?"
    table = full.rsplit(".", 1)[0] if "." in full else ""
    where = f"[{table}]" if table else "the top level"
    names = ", ".join(k.rsplit(".", 1)[-1] for k in valid)
    return message, f"valid keys at {where}: {names}"


def _check_value(key: str, spec: _Field, value: Any) -> tuple[str, str | None] | None:
    if isinstance(value, str) and value in spec.special:
        return None
    specials = " or ".join(repr(s) for s in spec.special)
    also = f" (or {specials})" if specials else ""
    if spec.kind == "str":
        if not isinstance(value, str):
            return f"{key}: expected a string{also}, got {_type_name(value)} {_shown(value)}", None
        if not value.strip():
            return f"{key}: must not be empty", None
        if spec.choices and value not in spec.choices:
            return _bad_choice(key, spec, value)
        return None
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{key}: expected an integer{also}, got {_type_name(value)} {_shown(value)}", None
        if spec.minimum is not None and value < spec.minimum:
            return f"{key}: must be at least {spec.minimum}, got {value}", None
        if spec.maximum is not None and value > spec.maximum:
            return f"{key}: must be at most {spec.maximum}, got {value}", None
        return None
    if spec.kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{key}: expected a number, got {_type_name(value)} {_shown(value)}", None
        if not math.isfinite(value):
            return f"{key}: must be a finite number, got {_shown(value)}", None
        if spec.minimum is not None and value <= spec.minimum:
            return f"{key}: must be greater than {spec.minimum}, got {_shown(value)}", None
        if spec.maximum is not None and value > spec.maximum:
            return f"{key}: must be at most {spec.maximum}, got {_shown(value)}", None
        return None
    if spec.kind == "versions":
        if not isinstance(value, dict):
            return (
                f'{key}: expected a table of {spec.what} = "version" ([{key}]), got {_type_name(value)} {_shown(value)}',
                None,
            )
        for name, version in value.items():
            if name not in spec.choices:
                return _bad_choice(key, spec, name)
            if not isinstance(version, str):
                return (
                    f'{key}.{name}: expected a version string such as "2.14.0", got {_type_name(version)} {_shown(version)}',
                    None,
                )
            if not _VERSION_RE.match(version):
                return (
                    f"{key}.{name}: {version!r} is not a version",
                    'write digits separated by dots, such as "2.14.0" (a suffix like .post1 is left out)',
                )
        return None
    if spec.kind == "bool":
        if not isinstance(value, bool):
            return f"{key}: expected true or false, got {_type_name(value)} {_shown(value)}", None
        return None
    if spec.kind == "list":
        if not isinstance(value, list):
            return f"{key}: expected an array of strings{also}, got {_type_name(value)} {_shown(value)}", None
        for item in value:
            if not isinstance(item, str):
                return f"{key}: expected an array of strings, but it holds {_type_name(item)} {_shown(item)}", None
            if spec.choices and item not in spec.choices:
                return _bad_choice(key, spec, item)
        duplicates = sorted({item for item in value if value.count(item) > 1})
        if duplicates:
            return f"{key}: lists {', '.join(repr(d) for d in duplicates)} more than once", None
        if spec.non_empty and not value:
            return f"{key}: must not be empty", None
        return None
    raise InternalError(f"schema kind {spec.kind!r}")  # pragma: no cover


def _bad_choice(key: str, spec: _Field, value: str) -> tuple[str, str]:
    message = f"{key}: unknown {spec.what} {value!r}."
    alias = _ARCH_ALIASES.get(value.lower()) if key == "arch" else None
    close = alias if alias in spec.choices else _suggest(value, spec.choices)
    if close:
        message += f" Did you mean {close!r}?"
    return message, f"valid values: {', '.join(spec.choices)}"


# --------------------------------------------------------------------------- extends, merging, resolving


@dataclasses.dataclass
class _Merged:
    data: dict[str, Any]
    origin_of: dict[str, Path]  # leaf key path -> the file that set it
    parents: list[Path]  # files merged beneath, nearest first
    extends: str | None  # the parent named in this file


def _leaves(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in table.items():
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and _is_table(full):
            yield from _leaves(value, full)
        else:
            yield full, value


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: tables merge key by key, everything else (arrays too) is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _load_merged(path: Path, search: TargetSearchPath, chain: list[tuple[str, Path]]) -> _Merged:
    raw = _read_toml(path)
    _check_file(path, raw)
    name = str(raw.get("name") or path.stem)
    resolved = path.resolve()
    for i, (_, seen) in enumerate(chain):
        if seen == resolved:
            names = [n for n, _ in chain[i:]] + [name]
            first = chain[i][1]
            raise TargetFileError(
                f"{first}: 'extends' makes a cycle: {' -> '.join(names)}",
                hint="a target cannot inherit from itself; remove one of the 'extends' keys",
            )
    chain = chain + [(name, resolved)]
    own = {k: v for k, v in raw.items() if k != "extends"}
    parent_name = raw.get("extends")
    if parent_name is None:
        return _Merged(own, {k: path for k, _ in _leaves(own)}, [], None)

    if parent_name == name:
        # "extends" its own name: the target of that name further down the lookup path (what it overrides).
        found = search.find(parent_name, below=path.parent, exclude=path)
        if found is None:
            raise TargetFileError(
                f"{path}: extends = {parent_name!r} names the target itself, and no other target '{parent_name}' "
                "comes after it in the lookup path",
                hint=f"looked in: {search.describe()}",
            )
    else:
        found = search.find(parent_name)
        if found is None:
            err = search.unknown_target(parent_name)
            raise TargetFileError(f"{path}: extends = {parent_name!r}: {err.message}", hint=err.hint)
    parent = _load_merged(found[0], search, chain)
    inherited = {k: v for k, v in parent.data.items() if _inherited(k)}
    origin_of = {k: p for k, p in parent.origin_of.items() if _inherited(k)}
    origin_of.update({k: path for k, _ in _leaves(own)})
    return _Merged(_deep_merge(inherited, own), origin_of, [found[0]] + parent.parents, parent_name)


def _check_merged(path: Path, merged: _Merged) -> None:
    """Checks that need the whole target: required keys, features against arch, "auto", consistency."""
    data, problems = merged.data, _Problems(path)
    chain = ", ".join(p.name for p in merged.parents)

    def get(key: str) -> Any:
        node: Any = data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def where(key: str) -> str:
        origin = merged.origin_of.get(key)
        return f" (set in {origin.name})" if origin is not None and origin.resolve() != path.resolve() else ""

    for key, spec in _SCHEMA.items():
        parent_key = key.rsplit(".", 1)[0] if "." in key else None
        if not spec.required or get(key) is not None:
            continue
        if parent_key is not None and not isinstance(get(parent_key), dict):
            continue  # the missing table is the problem reported
        in_parents = f", nor in what it extends ({chain})" if chain and spec.inherited else ""
        if spec.kind == "table":
            problems.add(f"missing required table [{key}]{in_parents}", hint="targets/README.md describes every key")
            continue
        table = f"[{parent_key}]" if parent_key else "the top level"
        problems.add(
            f"missing required key '{key}'{in_parents}",
            hint=f"add `{key.rsplit('.', 1)[-1]} = ...` at {table}; targets/README.md describes every key",
        )
    if problems.items:
        problems.raise_if_any()

    local = get("deploy.transport") == "local"
    autos = [k for k, v in _leaves(data) if v == AUTO and _accepts(k, AUTO)]
    if autos and not local:
        keys = ", ".join(f"{k}{where(k)}" for k in autos)
        problems.add(
            f"{keys}: 'auto' reads this machine, so it is only allowed when deploy.transport = 'local'",
            hint="write the device's real value, or 'unknown' where the schema allows it",
        )

    arch = get("arch")
    features = get("cpu.features")
    if isinstance(features, list) and arch in CPU_FEATURES:
        vocabulary = CPU_FEATURES[arch]
        for feature in features:
            if feature not in vocabulary:
                hint_to = _FEATURE_ALIASES.get(feature) or _suggest(feature, vocabulary)
                message = f"cpu.features{where('cpu.features')}: {feature!r} is not a known {arch} feature."
                if hint_to:
                    message += f" Did you mean {hint_to!r}?" if hint_to in vocabulary else f" Did you mean {hint_to}?"
                problems.add(message, hint=f"{arch} features (Linux /proc/cpuinfo names): {', '.join(vocabulary)}")

    runtimes, versions = get("runtimes"), get("runtime_versions")
    if isinstance(runtimes, list) and isinstance(versions, dict):
        for runtime in versions:
            origin = merged.origin_of.get(f"runtime_versions.{runtime}")
            # a version inherited for a runtime this target dropped is simply unused; one written here is a mistake
            if runtime not in runtimes and origin is not None and origin.resolve() == path.resolve():
                problems.add(
                    f"runtime_versions.{runtime}: {runtime!r} is not among this target's runtimes ({', '.join(runtimes)})",
                    hint=f"add {runtime!r} to runtimes, or remove runtime_versions.{runtime}",
                )

    cores, threads = get("cpu.cores"), get("default_threads")
    if isinstance(cores, int) and isinstance(threads, int) and threads > cores:
        problems.add(
            f"default_threads = {threads}{where('default_threads')} is more than cpu.cores = {cores}{where('cpu.cores')}"
        )

    modes, io_types = get("quantization.modes"), get("quantization.io_types")
    if isinstance(modes, list) and isinstance(io_types, list):
        for mode in modes:
            allowed = [t.value for t in QuantMode(mode).allowed_io_types]
            if not any(t in allowed for t in io_types):
                problems.add(
                    f"quantization: mode {mode!r} needs one of the I/O types {', '.join(allowed)}, "
                    f"and quantization.io_types has none of them",
                    hint=f"add one of {', '.join(allowed)} to quantization.io_types, or remove {mode!r} from quantization.modes",
                )
    problems.raise_if_any()


# --------------------------------------------------------------------------- this machine ("auto")

_ARM_PARTS = {
    "0xc07": "Cortex-A7",
    "0xc08": "Cortex-A8",
    "0xc09": "Cortex-A9",
    "0xc0f": "Cortex-A15",
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd0d": "Cortex-A77",
    "0xd40": "Neoverse-V1",
    "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510",
    "0xd47": "Cortex-A710",
    "0xd48": "Cortex-X2",
    "0xd49": "Neoverse-N2",
}


def machine_arch(machine: str | None = None) -> str:
    """``platform.machine()`` in Linux's spelling (``arm64`` -> ``aarch64``, ``AMD64`` -> ``x86_64``)."""
    value = (machine if machine is not None else platform.machine()).lower()
    return _ARCH_ALIASES.get(value, value)


def normalize_cpu_features(flags: Iterable[str], arch: str) -> tuple[str, ...]:
    """Raw /proc/cpuinfo flags -> the features a target lists for ``arch``, in vocabulary order."""
    raw = {f.strip().lower() for f in flags if f.strip()}
    if arch == "aarch64" and "asimd" in raw:
        raw.add("neon")
    return tuple(f for f in CPU_FEATURES.get(arch, ()) if f in raw)


def cpu_facts_from_cpuinfo(text: str, arch: str) -> tuple[str | None, tuple[str, ...]]:
    """CPU model and features from the text of /proc/cpuinfo (of this machine or a device)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    model = None
    part = fields.get("cpu part", "").lower()
    if fields.get("cpu implementer", "").lower() == "0x41" and part in _ARM_PARTS:
        model = _ARM_PARTS[part]
    model = model or fields.get("model name") or None
    flags = (fields.get("flags") or fields.get("features") or "").split()
    return model, normalize_cpu_features(flags, arch)


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _host_value(key: str) -> Any:
    """The value of ``key`` on the machine edgeq runs on (None when it cannot be known)."""
    arch = machine_arch()
    if key == "arch":
        return arch
    if key in ("cpu.model", "cpu.features"):
        model, features = cpu_facts_from_cpuinfo(_read_text("/proc/cpuinfo") or "", arch)
        if key == "cpu.model":
            return model or platform.processor() or "unknown"
        return features
    if key == "cpu.cores":
        return os.cpu_count()
    if key == "cpu.max_clock_mhz":
        khz = _read_text("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
        return int(khz.strip()) // 1000 if khz and khz.strip().isdigit() else None
    if key == "memory_mb":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
        except (ValueError, OSError, AttributeError):
            return None
    if key == "os":
        release = _read_text("/etc/os-release") or ""
        match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', release, re.MULTILINE)
        return match.group(1) if match else f"{platform.system()} {platform.release()}".strip()
    if key == "python":
        return sys.executable or "python3"
    if key == "default_threads":
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1
    raise InternalError(f"no host value for {key!r}")  # pragma: no cover


# --------------------------------------------------------------------------- building the Target


def _build(path: Path, origin: str, merged: _Merged) -> Target:
    data = merged.data
    auto: list[str] = []

    def value(key: str) -> Any:
        node: Any = data
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node == AUTO and _accepts(key, AUTO):
            auto.append(key)
            return _host_value(key)
        if node == UNKNOWN and _accepts(key, UNKNOWN):
            return None
        return node

    deploy = {k: data.get("deploy", {}).get(k, default) for k, default in _DEPLOY_DEFAULTS.items()}
    runtimes = tuple(value("runtimes"))
    versions = data.get("runtime_versions") or {}
    power = value("power_w")
    return Target(
        name=data["name"],
        description=data["description"],
        arch=value("arch"),
        cpu=CPU(
            model=value("cpu.model"),
            cores=value("cpu.cores"),
            max_clock_mhz=value("cpu.max_clock_mhz"),
            features=tuple(value("cpu.features")),
            soc=value("cpu.soc"),
            isa=value("cpu.isa"),
        ),
        memory_mb=value("memory_mb"),
        power_w=float(power) if power is not None else None,
        os=value("os"),
        python=value("python"),
        runtimes=runtimes,
        runtime_versions={r: versions[r] for r in runtimes if r in versions},  # in the order of preference
        default_threads=value("default_threads"),
        delegates=tuple(value("delegates")),
        quantization=Quantization(
            modes=tuple(value("quantization.modes")),
            io_types=tuple(value("quantization.io_types")),
            per_channel=value("quantization.per_channel"),
            notes=tuple(value("quantization.notes") or ()),
        ),
        deploy=Deploy(transport=value("deploy.transport"), **deploy),
        source=str(path),
        origin=origin,
        extends=merged.extends,
        parents=tuple(str(p) for p in merged.parents),
        auto=tuple(auto),
    )


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


def apply_target(target: Target, options: ConvertOptions, *, mode_given: bool = True) -> ConvertOptions:
    """``options`` adjusted to what ``target`` can run, or ConversionError saying why it cannot.

    Fills what the user did not give (the target's first mode when
    ``mode_given`` is false; its first I/O type that suits the mode when
    ``options.io_type`` is None), turns per-channel weights off where the
    target lacks them, and records the target's name. Runs before any
    TensorFlow work.
    """
    q = target.quantization
    mode = options.mode if mode_given else q.default_mode
    if not q.allows_mode(mode):
        reason = f" {q.notes[0]}" if q.notes else ""
        raise ConversionError(
            f"target {target.name} cannot run --mode {mode.value} models: it runs {', '.join(q.modes)} only.{reason}",
            hint=f"use --mode {' or --mode '.join(q.modes)}, or convert without --target",
        )
    io_type = options.io_type
    if io_type is None:
        io_type = q.default_io_type(mode)
        if io_type is None:  # _check_merged guarantees one for every listed mode
            raise InternalError(f"target {target.name}: no I/O type for mode {mode.value}")
    elif io_type.value not in q.io_types:
        usable = [t.value for t in q.io_types_for(mode)]
        raise ConversionError(
            f"target {target.name} cannot take models with --io-type {io_type.value}: "
            f"its models' inputs and outputs must be {' or '.join(q.io_types)}",
            hint=f"use --io-type {' or '.join(usable)}, or leave --io-type out (the default for {target.name} "
            f"with --mode {mode.value} is {usable[0]})",
        )
    adjusted = dataclasses.replace(
        options,
        mode=mode,
        io_type=io_type,
        per_channel=options.per_channel and q.per_channel,
        target=target.name,
    )
    adjusted.resolved_io_type()  # a mode/io-type mismatch fails here, before any conversion work
    return adjusted
