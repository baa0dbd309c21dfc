"""What a device is: its facts read over a connection, the target that matches them, or a target file to save.

One remote command reads ``uname -m`` (and the userland's word size, so a
32-bit OS on a 64-bit kernel is ``armv7l``), /proc/device-tree/model,
/proc/cpuinfo, the CPU count and maximum clock, /proc/meminfo,
/etc/os-release, and asks the device's Python for its version and for the
TFLite runtimes it can import (``ai_edge_litert`` and ``tflite_runtime`` are
imported for real, which catches broken installs such as a NumPy ABI
mismatch; TensorFlow, whose import takes many seconds on a board, is only
looked up). That command is ``edgeq/remote/detect.sh``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import remote
from .errors import ProbeOutputError
from .runtimes import RUNTIMES
from .types import to_jsonable

if TYPE_CHECKING:
    from .connection import Connection
    from .devices import Device
    from .targets import Target

__all__ = [
    "Detection",
    "DeviceFacts",
    "TargetMatch",
    "detect_device",
    "match_targets",
    "parse_facts",
    "read_facts",
    "suggest_target_toml",
]


@dataclasses.dataclass(frozen=True)
class DeviceFacts:
    """What was read on one device."""

    device: str
    arch: str  # userland architecture, in the targets' spelling
    kernel_arch: str  # uname -m
    kernel: str
    board: str | None  # /proc/device-tree/model, e.g. "Raspberry Pi 4 Model B Rev 1.4"
    cpu_model: str | None  # "Cortex-A72", or x86's model name
    cpu_features: tuple[str, ...]
    cores: int | None
    max_clock_mhz: int | None
    memory_mb: int | None  # MemTotal, in MiB (less than the nominal size)
    os: str | None  # PRETTY_NAME
    python: str | None  # path of the device's Python; None: not found
    python_version: str | None
    runtimes: dict[str, str]  # "tflite-runtime" -> "2.14.0"; numpy too (each imported, and ran a tiny model)
    broken_runtimes: dict[str, str]  # installed but failing to import or to run: the error
    numpy_with: dict[str, str] = dataclasses.field(default_factory=dict)  # runtime -> the numpy it imported with
    numpy_abi: tuple[str, ...] = ()  # runtimes built for NumPy 1.x that failed under NumPy 2
    libc: str | None = None  # "glibc 2.36"
    runtime_env: str | None = None  # the folder `edgeq provision` installed a runtime into, when there is one
    disk_free_mb: int | None = None  # free space where edgeq keeps its files
    memory_available_mb: int | None = None  # MemAvailable


@dataclasses.dataclass(frozen=True)
class TargetMatch:
    """How well one target describes the device; ``notes`` says what differs."""

    target: str
    score: int
    specific: bool  # the target names this CPU model and core count (not a generic one)
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Detection:
    """A device's facts, the targets that fit (best first) and a target file to save when none is specific."""

    facts: DeviceFacts
    matches: tuple[TargetMatch, ...]
    toml: str | None  # set when no specific target matches

    @property
    def best(self) -> TargetMatch | None:
        return self.matches[0] if self.matches else None

    def to_dict(self) -> dict[str, Any]:
        data = to_jsonable(self)
        data["best"] = self.best.target if self.best and self.best.specific else None
        return data


def read_facts(conn: Connection, device: Device) -> DeviceFacts:
    """Run the facts script on the device (one command) and parse what it printed."""
    script = remote.script("detect.sh", conn.edgeq_dir)
    command = remote.script_command(script, device.python or "python3", conn.edgeq_dir)
    result = conn.run(command, conn.options.command_timeout_s, label="detect", requires=(script,))
    return parse_facts(result.stdout, device=device.name)


def parse_facts(text: str, device: str = "device") -> DeviceFacts:
    """Parse the facts script's output (``@@section`` markers); ProbeOutputError if it is not that."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@@") and re.fullmatch(r"@@[a-z-]+", line):
            current = line[2:]
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    if "end" not in sections or "uname" not in sections:
        raise ProbeOutputError(
            f"{device}: the device's answer to `targets detect` is incomplete",
            hint="is it a Linux device with a POSIX shell?",
        )
    from .machine import cpu_facts_from_cpuinfo, userland_arch

    uname = sections["uname"] + ["", "", ""]
    kernel_arch = uname[0].strip()
    python_lines = sections.get("python", [])
    python_path = python_lines[0].strip() if python_lines and python_lines[0].strip() != "-" else None
    info: dict[str, Any] = {}
    python_error = None
    if python_path:
        try:
            info = json.loads(python_lines[-1]) if len(python_lines) > 1 else {}
            if not isinstance(info, dict):
                raise ValueError("not an object")
        except ValueError:
            info = {}
            python_error = (python_lines[-1].strip() if len(python_lines) > 1 else "") or "no output"
    arch = userland_arch(kernel_arch, uname[2].strip() or str(info.get("bits") or ""))
    cpuinfo = "\n".join(sections.get("cpuinfo", []))
    cpu_model, features = cpu_facts_from_cpuinfo(cpuinfo, arch)
    cores = _first_int(sections.get("nproc", []))
    khz = _first_int(sections.get("maxfreq", []))
    memory_kb = available_kb = None
    for line in sections.get("meminfo", []):
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable") and rest.split():
            value = _first_int([rest.split()[0]])
            if key == "MemTotal":
                memory_kb = value
            else:
                available_kb = value
    disk_kb = None
    for line in sections.get("disk", []):
        fields = line.split()
        if len(fields) >= 4 and fields[3].isdigit():  # df -P: filesystem, blocks, used, available, ...
            disk_kb = int(fields[3])
    release = dict(_os_release(sections.get("os-release", [])))
    board = " ".join(sections.get("model", [])).strip() or None
    return DeviceFacts(
        device=device,
        arch=arch,
        kernel_arch=kernel_arch,
        kernel=uname[1].strip(),
        board=board,
        cpu_model=cpu_model,
        cpu_features=tuple(features),
        cores=cores,
        max_clock_mhz=khz // 1000 if khz else None,
        memory_mb=memory_kb // 1024 if memory_kb else None,
        os=release.get("PRETTY_NAME") or release.get("NAME"),
        python=python_path,
        python_version=info.get("version"),
        runtimes={k: str(v) for k, v in (info.get("runtimes") or {}).items()},
        broken_runtimes={k: str(v) for k, v in (info.get("broken") or {}).items()}
        | ({"python": python_error[-300:]} if python_error else {}),
        numpy_with={k: str(v) for k, v in (info.get("numpy_with") or {}).items()},
        numpy_abi=tuple(str(k) for k in info.get("numpy_abi") or ()),
        libc=(str(info["libc"]).strip() or None) if info.get("libc") else None,
        runtime_env=info.get("env") or None,
        disk_free_mb=disk_kb // 1024 if disk_kb is not None else None,
        memory_available_mb=available_kb // 1024 if available_kb is not None else None,
    )


def _first_int(lines: Iterable[str]) -> int | None:
    for line in lines:
        text = line.strip()
        if text.isdigit():
            return int(text)
    return None


def _os_release(lines: Iterable[str]) -> Iterable[tuple[str, str]]:
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            yield key.strip(), value.strip().strip('"').strip("'")


def _board_words(text: str) -> str:
    text = re.sub(r"\s+rev\s+[\w.]+$", "", text.strip(), flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", text).lower()


def match_targets(facts: DeviceFacts, targets: Sequence[Target]) -> tuple[TargetMatch, ...]:
    """Targets that can describe the device, best first. A target is out when its arch, CPU or core count differ, or it claims ISA features the device lacks."""
    found: list[TargetMatch] = []
    for target in targets:
        if target.deploy.transport == "local" or target.arch != facts.arch:
            continue
        notes: list[str] = []
        score = 0
        missing = [f for f in target.cpu.features if f not in facts.cpu_features]
        if missing and facts.cpu_features:
            continue
        specific = target.cpu.cores is not None
        if facts.cpu_model and target.cpu.model.lower() == facts.cpu_model.lower():
            score += 4
        elif specific and facts.cpu_model:
            continue
        if target.cpu.cores is not None and facts.cores is not None:
            if target.cpu.cores != facts.cores:
                continue
            score += 2
        if facts.board and _board_words(facts.board) and _board_words(facts.board) in target.description.lower():
            score += 3
        if target.cpu.max_clock_mhz and facts.max_clock_mhz:
            if abs(target.cpu.max_clock_mhz - facts.max_clock_mhz) <= 0.1 * target.cpu.max_clock_mhz:
                score += 1
            else:
                notes.append(f"its clock is {facts.max_clock_mhz} MHz, the target says {target.cpu.max_clock_mhz}")
        if target.memory_mb and facts.memory_mb:
            if facts.memory_mb >= 0.75 * target.memory_mb:
                score += 1
            else:
                notes.append(f"it has {facts.memory_mb} MiB, the target assumes {target.memory_mb}")
        installed = [r for r in target.runtimes if r in facts.runtimes]
        if installed:
            score += 1
        else:
            notes.append("none of the target's runtimes is installed (" + ", ".join(target.runtimes) + ")")
        found.append(TargetMatch(target=target.name, score=score, specific=specific and score >= 6, notes=tuple(notes)))
    return tuple(sorted(found, key=lambda m: (-m.score, not m.specific, m.target)))


def detect_device(conn: Connection, device: Device, targets: Sequence[Target], *, name: str | None = None) -> Detection:
    """Read a device's facts and match them against ``targets`` (``edgeq.targets.list_targets()``).

    When no specific target fits, ``toml`` is a target file named ``name``
    (default: from the board or the device) extending the closest generic one.
    """
    facts = read_facts(conn, device)
    matches = match_targets(facts, targets)
    toml = None
    if not (matches and matches[0].specific):
        generic = next((m.target for m in matches if not m.specific), None)
        toml = suggest_target_toml(facts, extends=generic, name=name)
    return Detection(facts=facts, matches=matches, toml=toml)


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def suggest_target_toml(facts: DeviceFacts, extends: str | None = None, name: str | None = None) -> str:
    """A target file describing the device, to check and save (``~/.config/edgeq/targets/NAME.toml``).

    With ``extends`` (a generic target of the same arch) only what was
    detected is written; the rest (quantization, deploy, delegates) is inherited.
    """
    base = name or _slug(facts.board or facts.device) or "my-device"
    runtimes = [r for r in RUNTIMES if r in facts.runtimes] or list(RUNTIMES)
    today = _dt.date.today().isoformat()
    lines = [
        f"# Written by `edgeq targets detect` from {facts.device} on {today}. Check every value, then save as",
        f"# ~/.config/edgeq/targets/{base}.toml (the file name must be the name below).",
        "",
        f"name = {_toml_string(base)}",
    ]
    if extends:
        lines.append(f"extends = {_toml_string(extends)}")
    description = facts.board or f"{facts.cpu_model or facts.arch} device"
    lines += [
        f"description = {_toml_string(description + ' (detected)')}",
        f"arch = {_toml_string(facts.arch)}",
        f"memory_mb = {facts.memory_mb}" if facts.memory_mb else 'memory_mb = "unknown"',
        f"os = {_toml_string(facts.os or 'Linux')}",
        f"python = {_toml_string(facts.python or 'python3')}",
        "runtimes = ["
        + ", ".join(_toml_string(r) for r in runtimes)
        + "]"
        + ("" if facts.runtimes else "  # none found on the device"),
        f"default_threads = {facts.cores or 1}",
    ]
    if not extends:
        lines.append('delegates = ["xnnpack"]')
    lines += [
        "",
        "[cpu]",
        f"model = {_toml_string(facts.cpu_model or 'unknown')}",
        f"cores = {facts.cores}" if facts.cores else 'cores = "unknown"',
        f"max_clock_mhz = {facts.max_clock_mhz}" if facts.max_clock_mhz else 'max_clock_mhz = "unknown"',
        "features = [" + ", ".join(_toml_string(f) for f in facts.cpu_features) + "]",
    ]
    if not extends:
        lines += [
            "",
            "[quantization]",
            'modes = ["int8", "int16x8", "dynamic", "float16", "float32"]',
            'io_types = ["int8", "uint8", "int16", "float32"]',
            "per_channel = true",
            "",
            "[deploy]",
            'transport = "ssh"',
            'remote_dir = "edgeq"',
            "keep_versions = 3",
        ]
    return "\n".join(lines) + "\n"


def _slug(text: str) -> str:
    text = re.sub(r"\s+rev\s+[\w.]+$", "", text.strip(), flags=re.IGNORECASE)
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48]
