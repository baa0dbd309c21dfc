"""This machine's facts (architecture, CPU, memory, OS) and the /proc/cpuinfo reading shared with detect."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeAlias

from .errors import InternalError

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
_ARCH_ALIASES = {
    "arm64": "aarch64",
    "amd64": "x86_64",
    "x64": "x86_64",
    "armhf": "armv7l",
    "armv7": "armv7l",
    "armv8": "aarch64",
}

__all__ = ["cpu_facts_from_cpuinfo", "host_value", "machine_arch", "normalize_cpu_features", "userland_arch"]

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


def userland_arch(kernel_arch: str, bits: str | int | None) -> str:
    """The architecture Python and pip run as: ``uname -m`` in the targets' spelling, and a 32-bit
    userland on a 64-bit kernel as what it is (Raspberry Pi OS 32-bit on a Pi 4 boots a 64-bit kernel)."""
    arch = machine_arch(kernel_arch)
    if str(bits) == "32" and arch == "aarch64":
        return "armv7l"
    if str(bits) == "32" and arch == "x86_64":
        return "i686"
    return arch


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


HostValue: TypeAlias = str | int | tuple[str, ...] | None


def host_value(key: str) -> HostValue:
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
        try:
            return platform.freedesktop_os_release()["PRETTY_NAME"]  # "Linux" when the file has no PRETTY_NAME
        except OSError:  # no /etc/os-release nor /usr/lib/os-release: not Linux, or a bare container
            return f"{platform.system()} {platform.release()}".strip()
    if key == "python":
        return sys.executable or "python3"
    if key == "default_threads":
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1
    raise InternalError(f"no host value for {key!r}")  # pragma: no cover
