"""Can this device run this model? The checks ``edgeq doctor`` prints and deploy, probe, bench and tune run first.

One command on the device (the facts script, :func:`edgeq.detect.read_facts`)
says what it is: ISA and OS, the Python, every TFLite runtime imported and
run on a tiny model in a process of its own (so a runtime built for NumPy
1.x that fails under NumPy 2 is caught, and a crash loses nothing else),
the numpy each one imported with, free disk where edgeq keeps models and
available memory. The host says what the model needs
(:func:`model_needs`): its kernel features (:mod:`edgeq.kernels`), the
converter's ``min_runtime_version``, custom and Flex ops, its size, and
the memory it took on the host interpreter to load, allocate and run once.
:func:`diagnose` compares the two, and the device's target file with the
device, and gives one :class:`Problem` per thing wrong, each with the exact
fix. It is a pure function: the tests feed it facts.

A deploy does not need a runtime on the device: it checks the free disk
and the target's ISA from the state report it reads anyway (no round trip
of its own, :mod:`edgeq.deploy.device`); probe, bench and tune run every
check here first (:func:`preflight`).
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DeviceNotReady, ModelError
from .runtimes import RUNTIMES

if TYPE_CHECKING:
    from .connection import Connection
    from .detect import DeviceFacts
    from .devices import Device
    from .kernels import KernelFeature
    from .targets import Target

__all__ = [
    "Checks",
    "Checkup",
    "ModelNeeds",
    "Problem",
    "checkup",
    "diagnose",
    "model_needs",
    "pick_runtime",
    "preflight",
]

MIN_PYTHON = (3, 7)  # what the probe program runs on
DISK_MARGIN_MB = 1  # the manifest, the checksum file, file-system slack
# Custom ops the runtimes' builtin op resolvers register themselves (tflite-runtime and ai-edge-litert alike).
KNOWN_CUSTOM_OPS = frozenset({"TFLite_Detection_PostProcess", "AudioSpectrogram", "Mfcc"})
# ai-edge-litert numbers its releases apart from TensorFlow: the TF release whose LiteRT each major line
# carries at least (1.0.x was cut from TF 2.18's tree, 2.x from 2.20's). Used only to compare with the
# converter's min_runtime_version, which is in TF's numbering.
LITERT_AS_TF = {1: "2.18", 2: "2.20"}


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing that stops (``blocking``) or may hurt a run on one device, with the exact fix."""

    check: str  # "python" | "numpy" | "runtime" | "model" | "target" | "disk" | "memory"
    message: str
    fix: str
    blocking: bool = True

    def line(self) -> str:
        return f"{self.message}; fix: {self.fix}"


@dataclasses.dataclass(frozen=True)
class ModelNeeds:
    """What one model asks of a device, read on the host."""

    path: str
    size_bytes: int
    features: tuple[KernelFeature, ...]
    custom_ops: tuple[str, ...]
    flex_ops: tuple[str, ...]
    min_runtime_version: str | None  # the converter's, in TensorFlow's numbering
    memory_mb: float | None  # peak memory of load + allocate + one run on the host interpreter; None: not measured

    @classmethod
    def of_size(cls, path: str | Path, size_bytes: int) -> ModelNeeds:
        """Only the size (what a deploy checks): no flatbuffer read, no interpreter."""
        return cls(str(path), size_bytes, (), (), (), None, None)


@dataclasses.dataclass(frozen=True)
class Checkup:
    """One device's answer: what it is, which runtime a probe would use, and what is wrong."""

    device: str
    facts: DeviceFacts
    runtime: str | None
    runtime_version: str | None
    problems: tuple[Problem, ...]
    models: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(p.blocking for p in self.problems)


# --------------------------------------------------------------------------- the model (host side)


def model_needs(path: str | Path, *, measure_memory: bool = True) -> ModelNeeds:
    """Read what ``path`` needs: kernels, op codes, metadata; with ``measure_memory``, run it once on the host."""
    from ai_edge_litert import schema_py_generated as schema

    from .kernels import _read, required_features

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from exc
    model = _read(data)
    custom: list[str] = []
    for code in model.operatorCodes or []:
        builtin = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
        if builtin == schema.BuiltinOperator.CUSTOM and code.customCode:
            name = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
            custom.append(name)
    min_runtime = None
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else str(entry.name)
        if name == "min_runtime_version" and 0 <= entry.buffer < len(model.buffers or []):
            content = model.buffers[entry.buffer].data
            raw = bytes(content) if content is not None else b""
            min_runtime = raw.split(b"\0", 1)[0].decode("ascii", "replace").strip() or None
    flex = tuple(sorted({c for c in custom if c.startswith("Flex")}))
    others = tuple(sorted({c for c in custom if not c.startswith("Flex")}))
    return ModelNeeds(
        path=str(path),
        size_bytes=len(data),
        features=required_features(data),
        custom_ops=others,
        flex_ops=flex,
        min_runtime_version=min_runtime,
        memory_mb=_host_memory_mb(str(path.resolve())) if measure_memory else None,
    )


_MEMORY_PROGRAM = r"""
import os, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
def rss_kb():  # resident now (not the peak: the imports' peak would hide a small model)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
before = rss_kb()
interp = Interpreter(model_path=sys.argv[1], num_threads=1)
interp.allocate_tensors()
for d in interp.get_input_details():
    interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
interp.invoke()
print(max(rss_kb() - before, os.path.getsize(sys.argv[1]) // 1024) / 1024.0)
"""


@functools.lru_cache(maxsize=32)
def _host_memory_mb(path: str) -> float | None:
    """Resident memory the model adds to a fresh host interpreter process (model, arena, one run), in MiB; at least its size.

    A separate process, so the figure is the model's own; None when the host cannot run it (the device check then says nothing about memory).
    """
    try:
        done = subprocess.run(
            [sys.executable, "-c", _MEMORY_PROGRAM, path], capture_output=True, text=True, timeout=300, check=False
        )
        return round(float(done.stdout.strip().splitlines()[-1]), 2) if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------- the comparison


def pick_runtime(facts: DeviceFacts, prefer: Sequence[str] = RUNTIMES, forced: str | None = None) -> str | None:
    """The runtime a probe would use: ``forced``, else the first of ``prefer`` that works on the device."""
    if forced:
        return forced if forced in facts.runtimes else None
    return next((rt for rt in prefer if rt in facts.runtimes and rt in RUNTIMES), None)


def _newer(version: str, than: str) -> bool:
    from .kernels import parse_version

    return parse_version(version) > parse_version(than)


def _as_tf_version(runtime: str, version: str) -> str | None:
    """A runtime release in TensorFlow's numbering (None: unknown)."""
    from .kernels import parse_version

    if runtime in ("tflite-runtime", "tensorflow"):
        return version
    return LITERT_AS_TF.get(parse_version(version)[0])


def diagnose(
    facts: DeviceFacts,
    needs: Sequence[ModelNeeds] = (),
    target: Target | None = None,
    *,
    runtime: str | None = None,
    provision_hint: str = "edgeq provision",
) -> tuple[Problem, ...]:
    """Every problem of ``facts`` for running ``needs`` with ``target``'s runtimes (or ``runtime``).

    ``provision_hint`` is the command that installs a runtime on this device (it names the device).
    """
    problems: list[Problem] = []
    problems += _target_problems(facts, target)
    problems += _disk_problems(facts, needs)
    if facts.python is None:
        problems.append(
            Problem(
                "python",
                "no Python on the device (the command asked for was not found)",
                "install it (sudo apt install python3 python3-numpy), or name the device's Python "
                "(edgeq_python / ansible_python_interpreter in the inventory, python in the target)",
            )
        )
        return tuple(problems)
    if facts.python_version is None:
        problems.append(
            Problem(
                "python",
                f"`{facts.python}` runs but does not work as a Python "
                f"(its last words: {facts.broken_runtimes.get('python', 'none')})",
                "check it on the device, or name another (edgeq_python / ansible_python_interpreter, python in the target)",
            )
        )
        return tuple(problems)
    version = facts.python_version
    if tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < MIN_PYTHON:
        problems.append(
            Problem(
                "python", f"Python {version} is too old (edgeq's probe needs 3.7 or newer)", "install python3 >= 3.7"
            )
        )
    if "numpy" not in facts.runtimes:
        why = facts.broken_runtimes.get("numpy")
        problems.append(
            Problem(
                "numpy",
                f"numpy does not import ({why})" if why else "numpy is not installed",
                "sudo apt install python3-numpy (or pip install numpy)",
            )
        )
    problems += _runtime_problems(facts, target, runtime, provision_hint)
    chosen = pick_runtime(facts, tuple(target.runtimes) if target else RUNTIMES, runtime)
    if chosen is not None:
        for need in needs:
            problems += _model_problems(need, chosen, facts.runtimes[chosen], target)
        problems += _memory_problems(facts, needs)
    return tuple(problems)


def _target_problems(facts: DeviceFacts, target: Target | None) -> list[Problem]:
    problem = target_mismatch(target, facts.arch, facts.kernel_arch, facts)
    return [problem] if problem else []


def target_mismatch(
    target: Target | None, arch: str, kernel_arch: str | None = None, facts: DeviceFacts | None = None
) -> Problem | None:
    """The problem when ``target`` is for another ISA than the device's userland ``arch`` (None when it fits)."""
    if target is None or target.deploy.transport == "local" or target.arch == arch:
        return None
    kernel = f" (kernel {kernel_arch})" if kernel_arch and kernel_arch != arch else ""
    from .detect import match_targets
    from .targets import list_targets

    known: Sequence[Target] = ()
    fitting: list[str] = []
    try:
        known = list_targets()
        fitting = [m.target for m in match_targets(facts, known)][:3] if facts is not None else []
    except Exception:  # a broken user target file must not hide the problem found
        pass
    if fitting:
        instead = f"use --target {fitting[0]}" + (f" (or {', '.join(fitting[1:])})" if len(fitting) > 1 else "")
    else:
        same_arch = [t.name for t in known if t.arch == arch and t.deploy.transport != "local"]
        instead = f"use a target for {arch}" + (f": {', '.join(same_arch[:4])}" if same_arch else "")
    return Problem(
        "target",
        f"target {target.name} is for {target.arch}, but the device's userland is {arch}{kernel}",
        f"{instead}; edgeq targets detect names the one that fits",
    )


def _disk_problems(facts: DeviceFacts, needs: Sequence[ModelNeeds]) -> list[Problem]:
    if not needs or facts.disk_free_mb is None:
        return []
    need_mb = sum(n.size_bytes for n in needs) / 2**20 + DISK_MARGIN_MB
    if facts.disk_free_mb >= need_mb:
        return []
    return [
        Problem(
            "disk",
            f"{facts.disk_free_mb} MB free where edgeq keeps models; the model needs {need_mb:.1f} MB",
            "free space on the device (edgeq remove MODEL --version V drops old versions), "
            "or point edgeq_remote_dir / the target's deploy.remote_dir at a bigger disk",
        )
    ]


def _runtime_problems(facts: DeviceFacts, target: Target | None, forced: str | None, hint: str) -> list[Problem]:
    problems: list[Problem] = []
    prefer = tuple(target.runtimes) if target else RUNTIMES
    chosen = pick_runtime(facts, prefer, forced)
    for rt in facts.numpy_abi:
        numpy = facts.numpy_with.get(rt) or facts.runtimes.get("numpy", "2")
        problems.append(
            Problem(
                "runtime",
                f"{rt} was built for NumPy 1.x and fails under the device's NumPy {numpy} (_ARRAY_API not found)",
                f"{hint} --runtime {rt} (puts numpy<2 beside it in edgeq's folder; the system stays as it is), "
                "or on the device: pip install 'numpy<2'",
                blocking=chosen is None or chosen == rt,
            )
        )
    for rt, why in facts.broken_runtimes.items():
        if rt in facts.numpy_abi or rt in ("numpy", "python"):
            continue
        problems.append(
            Problem(
                "runtime",
                f"{rt} is installed but does not work: {why}",
                f"{hint} --runtime {rt} (installs a working copy in edgeq's folder)",
                blocking=chosen is None,
            )
        )
    if forced and forced not in facts.runtimes:
        problems.append(
            Problem(
                "runtime",
                f"{forced} (asked for with --runtime) does not work on the device",
                f"{hint} --runtime {forced}",
            )
        )
    elif chosen is None and not facts.numpy_abi and not (set(prefer) & set(facts.broken_runtimes)):
        tried = ", ".join(prefer)
        others = [rt for rt in facts.runtimes if rt in RUNTIMES and rt not in prefer]
        problems.append(
            Problem(
                "runtime",
                f"no TFLite runtime on the device (looked for {tried})"
                + (f"; it has {', '.join(others)}, which the target does not list" if others else ""),
                f"{hint} (installs one from wheels the host downloads; the device needs no internet)",
            )
        )
    return problems


def _model_problems(need: ModelNeeds, runtime: str, version: str, target: Target | None) -> list[Problem]:
    from .kernels import _missing, _variant_hint

    name = Path(need.path).name
    problems: list[Problem] = []
    shown = None if version == "installed" else version
    for feature, reason in zip(need.features, [_missing((f,), runtime, shown) for f in need.features], strict=True):
        for text in reason:
            problems.append(
                Problem(
                    "model",
                    f"{name}: {text}",
                    f"install a runtime that has it ({_upgrade_hint(text)}), or {_variant_hint(feature)}",
                )
            )
    if need.flex_ops:
        problems.append(
            Problem(
                "model",
                f"{name} uses TensorFlow ops through the Flex delegate ({', '.join(need.flex_ops[:5])}), which {runtime} lacks",
                "convert without SELECT_TF_OPS (edgeq convert refuses them by default), or run full tensorflow on the device",
            )
        )
    unknown = [op for op in need.custom_ops if op not in KNOWN_CUSTOM_OPS]
    if unknown:
        problems.append(
            Problem(
                "model",
                f"{name} uses custom ops {runtime} does not register: {', '.join(unknown[:5])}",
                "register them in a runtime built for this model, or convert without them",
            )
        )
    if need.min_runtime_version and shown is not None:
        as_tf = _as_tf_version(runtime, shown)
        if as_tf is not None and _newer(need.min_runtime_version, as_tf):
            problems.append(
                Problem(
                    "model",
                    f"{name} uses op versions from TensorFlow Lite {need.min_runtime_version} "
                    f"(its min_runtime_version); {runtime} {shown} is older",
                    f"install a newer {runtime}, or convert with an older converter",
                )
            )
    return problems


def _upgrade_hint(reason: str) -> str:
    marker = "; "
    return reason.rsplit(marker, 1)[-1] if marker in reason else "a newer release"


def _memory_problems(facts: DeviceFacts, needs: Sequence[ModelNeeds]) -> list[Problem]:
    measured = [n.memory_mb for n in needs if n.memory_mb is not None]
    if not measured or facts.memory_available_mb is None:
        return []
    need_mb = max(measured)
    if facts.memory_available_mb >= need_mb:
        return []
    return [
        Problem(
            "memory",
            f"{facts.memory_available_mb} MB of memory available; the model took {need_mb:.0f} MB on the host interpreter",
            "stop other programs on the device, or use a smaller model (int8 weights are a quarter of float32's)",
        )
    ]


# --------------------------------------------------------------------------- on a device


def checkup(
    conn: Connection,
    device: Device,
    needs: Sequence[ModelNeeds] = (),
    target: Target | None = None,
    *,
    runtime: str | None = None,
) -> Checkup:
    """Read ``device``'s facts over ``conn`` and diagnose them."""
    from .detect import read_facts

    facts = read_facts(conn, device)
    problems = diagnose(facts, needs, target, runtime=runtime, provision_hint=provision_command(device))
    chosen = pick_runtime(facts, tuple(target.runtimes) if target else RUNTIMES, runtime)
    return Checkup(
        device=device.name,
        facts=facts,
        runtime=chosen,
        runtime_version=facts.runtimes.get(chosen) if chosen else None,
        problems=problems,
        models=tuple(Path(n.path).name for n in needs),
    )


def preflight(
    conn: Connection,
    device: Device,
    needs: Sequence[ModelNeeds] = (),
    target: Target | None = None,
    *,
    runtime: str | None = None,
    action: str = "probe",
) -> Checkup:
    """:func:`checkup`, raising DeviceNotReady (one line per blocking problem, with its fix) when the device fails it."""
    result = checkup(conn, device, needs, target, runtime=runtime)
    blocking = [p for p in result.problems if p.blocking]
    if blocking:
        raise DeviceNotReady(
            f"{device.name}: not ready to {action}: " + "; ".join(p.message for p in blocking),
            hint="; ".join(dict.fromkeys(p.fix for p in blocking)) + " (or --skip-checks to go on anyway)",
        )
    return result


@dataclasses.dataclass(frozen=True)
class Checks:
    """The checks a command runs on each device before its work (:func:`preflight`); None: ``--skip-checks``."""

    needs: tuple[ModelNeeds, ...] = ()
    targets: Callable[[str | None], Target | None] = lambda _name: None
    runtime: str | None = None

    def run(self, conn: Connection, device: Device, action: str, target: Target | None = None) -> Checkup:
        target = target if target is not None else self.targets(device.target)
        return preflight(conn, device, self.needs, target, runtime=self.runtime, action=action)


def provision_command(device: Device) -> str:
    """``edgeq provision --host ...`` for this device, as the user would type it."""
    import shlex

    if device.transport == "local":
        return "edgeq provision --target host"
    return f"edgeq provision --host {shlex.quote(device.name if '@' in device.name else device.destination)}"


def checkup_to_dict(result: Checkup) -> dict[str, Any]:
    from .types import to_jsonable

    data: dict[str, Any] = to_jsonable(result)
    data["ok"] = result.ok
    return data
