"""The target as a value: its constants, vocabularies and frozen dataclasses."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from ..machine import _ARCH_ALIASES, CPU_FEATURES  # noqa: F401  (re-exported: the target vocabulary)
from ..runtimes import RUNTIMES  # noqa: F401  (re-exported: the target vocabulary)
from ..types import IOType, QuantMode, to_jsonable

SCHEMA_VERSION = 1
"""Version of the JSON that ``edgeq targets list/show --json`` print; bumped only on incompatible changes."""

DELEGATES = ("xnnpack", "edgetpu", "gpu")
TRANSPORTS = ("ssh", "local")
ARCHES = ("aarch64", "armv7l", "armv6l", "x86_64")

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
    prometheus_dir: str | None = None  # where the device's node_exporter reads textfiles (edgeq check --on-device)


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
