"""The model's own health on a device, right after a deploy switched it: loads, right outputs, expected speed.

:func:`check_health` runs the probe (``edgeq/probe/device.py``, the same
program as ``edgeq probe``) on the version just made active:

1. **load**: the device's runtime loads the model and allocates its tensors
   (a model the runtime cannot run fails here: an op it lacks, int4 kernels
   of a newer release, a NumPy ABI mismatch);
2. **parity** (with reference samples): the device's raw outputs on the
   samples against the host interpreter's for the same model. With the same
   runtime build as the host (runtime, version and ISA) they must be
   bit-exact; otherwise within ``tolerance`` in the output's own units
   (default: one quantization step for integer outputs, 1e-3 of the host
   outputs' range for float ones), with the numbers in the report;
3. **speed** (``max_slowdown_pct``): the new and the previous version probed
   alternately (previous, new, previous, new: ``rounds``), as ``edgeq bench``
   does; the check fails when the new one's p50 is slower by more than the
   allowed percentage AND the bootstrap interval of the ratio lies entirely
   on the slow side of 1 (noise does not roll a device back).

The result is a frozen :class:`Health`; the deployer rolls a device back
when it is not ``ok`` (:mod:`edgeq.deploy`).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import EdgeqError, NoRuntimeError, ProbeOutputError, RemoteCommandError

if TYPE_CHECKING:
    import numpy as np

    from .bench import ParitySamples
    from .connection import Connection
    from .deploy import ModelFile
    from .devices import Device
    from .probe import Parity, ProbeOptions, ProbeResult
    from .stats import Speedup
    from .targets import Target

__all__ = [
    "REFERENCE_SAMPLES",
    "Health",
    "HealthOptions",
    "check_health",
    "recorded_samples",
    "samples_path_for",
    "tolerance_for",
]

REFERENCE_SAMPLES = 32  # held-out inputs `edgeq convert` keeps beside a model, for the health check


def samples_path_for(model: str | os.PathLike[str]) -> Path:
    """``OUT.tflite`` -> ``OUT.samples.npz``: the reference inputs kept beside a model (written by edgeq convert)."""
    return Path(model).with_suffix(".samples.npz")


def recorded_samples(model: str | os.PathLike[str]) -> Path | None:
    """The reference samples kept beside ``model``, when there are some."""
    path = samples_path_for(model)
    return path if path.is_file() else None


@dataclasses.dataclass(frozen=True)
class HealthOptions:
    """What a deploy checks on each device after the switch (None fields: not checked)."""

    samples: ParitySamples | None = None  # reference inputs and the host's outputs for the NEW model
    tolerance: float | None = (
        None  # max abs difference in output units; None: bit-exact for the host's build, else auto
    )
    max_slowdown_pct: float | None = None
    probe: ProbeOptions | None = None  # timing of the speed check (default: 20 runs, 0.2 s, per round)
    rounds: int = 2


@dataclasses.dataclass(frozen=True)
class Health:
    """One device's health check of one version."""

    ok: bool
    failure: str | None  # "load" | "parity" | "slowdown" | None
    reason: str | None
    runtime: str | None = None
    runtime_version: str | None = None
    parity: Parity | None = None
    tolerance: float | None = None  # what parity was held to
    same_build: bool | None = None  # the device's runtime build is the host's: bit-exact was required
    p50_ms: float | None = None  # the new version
    previous_p50_ms: float | None = None
    speedup: Speedup | None = None  # p50(previous) / p50(new): below 1 the new version is slower
    latencies_ms: tuple[float, ...] = ()  # the new version's runs (the baseline `edgeq check` compares with)
    machine: str | None = None
    seconds: float = 0.0

    def baseline(self, model: ModelFile, at: str) -> dict[str, object]:
        """What the device keeps beside the version (``baseline.json``): what `edgeq check` compares with later."""
        return {
            "version": model.version,
            "sha256": model.sha256,
            "checked_at": at,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "machine": self.machine,
            "p50_ms": self.p50_ms,
            "latencies_ms": list(self.latencies_ms),
            "parity_bit_exact": self.parity.bit_exact if self.parity is not None else None,
        }


def tolerance_for(host_outputs: dict[str, np.ndarray], given: float | None, same_build: bool) -> float:
    """The parity tolerance: ``given``; else 0 for the host's own build; else one step (integers) or 1e-3 of the range."""
    import numpy as np

    if given is not None:
        return float(given)
    if same_build:
        return 0.0
    worst = 0.0
    for values in host_outputs.values():
        array = np.asarray(values)
        if np.issubdtype(array.dtype, np.integer):
            worst = max(worst, 1.0)
        elif array.size:
            span = float(np.max(array) - np.min(array))
            worst = max(worst, 1e-3 * (span or float(np.max(np.abs(array))) or 1.0))
    return worst


def _host_build() -> tuple[str, str | None, str]:
    from importlib import metadata

    try:
        version = metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        version = None
    return "ai-edge-litert", version, platform.machine()


def check_health(
    conn: Connection,
    device: Device,
    model: ModelFile,
    options: HealthOptions,
    *,
    previous: str | None = None,
    target: Target | None = None,
) -> Health:
    """Check ``model`` (deployed and active on ``device``); ``previous`` is the version it replaced (for the speed check)."""
    from .bench import DeviceProber
    from .probe import ProbeOptions, compare_parity

    started = time.monotonic()
    timing = options.probe or ProbeOptions(runs=20, min_s=0.2, warmup_runs=2, warmup_min_s=0.0)
    prober = DeviceProber(conn, device, timing, target=target)
    try:  # one probe: loads the model, times it (the baseline `edgeq check` compares with) and runs the samples
        if options.samples is not None:
            first = prober.probe(model, samples=options.samples.path, return_outputs=True)
        else:
            first = prober.probe(model)
    except (NoRuntimeError, RemoteCommandError, ProbeOutputError) as exc:
        return Health(False, "load", _short(exc, device), seconds=time.monotonic() - started)
    runtime, version = first.runtime, first.runtime_version
    parity = tolerance = same_build = None
    if options.samples is not None:
        parity = compare_parity(options.samples.host_outputs, first.outputs or ())
        host = _host_build()
        same_build = (runtime, version, first.machine) == host
        tolerance = tolerance_for(options.samples.host_outputs, options.tolerance, same_build)
        worst = max((o["max_abs_diff"] for o in parity.outputs.values()), default=0.0)
        if worst > tolerance:
            detail = "; ".join(
                f"'{name}': {o['mismatched']:.1%} of values differ, max abs diff {o['max_abs_diff']:g}"
                for name, o in parity.outputs.items()
                if o["max_abs_diff"] > 0
            )
            rule = "bit-exact (the host's runtime build)" if tolerance == 0 else f"tolerance {tolerance:g}"
            return Health(
                False,
                "parity",
                f"outputs differ from the host's beyond {rule}: {detail}",
                runtime,
                version,
                parity,
                tolerance,
                same_build,
                seconds=time.monotonic() - started,
            )
    if options.max_slowdown_pct is None or previous is None or previous == model.version:
        return Health(
            True,
            None,
            None,
            runtime,
            version,
            parity,
            tolerance,
            same_build,
            p50_ms=first.latency.p50_ms,
            latencies_ms=first.latencies_ms,
            machine=first.machine,
            seconds=time.monotonic() - started,
        )
    import numpy as np

    from .deploy import ModelFile
    from .stats import speedup

    old = ModelFile(path="", name=model.name, sha256=previous, size_bytes=0)  # only its name and version are used
    runs: dict[str, list[ProbeResult]] = {"previous": [], "new": []}
    try:
        for _ in range(max(1, options.rounds)):
            runs["previous"].append(prober.probe(old))
            runs["new"].append(prober.probe(model))
    except (NoRuntimeError, RemoteCommandError, ProbeOutputError) as exc:
        return Health(False, "load", _short(exc, device), runtime, version, parity, tolerance, same_build)
    before = [v for r in runs["previous"] for v in r.latencies_ms]
    after = [v for r in runs["new"] for v in r.latencies_ms]
    ratio = speedup(before, after)
    p50_new, p50_old = float(np.median(after)), float(np.median(before))
    slower_pct = (1.0 / ratio.ratio - 1.0) * 100.0
    limit = 1.0 / (1.0 + options.max_slowdown_pct / 100.0)
    failed = ratio.ci_high < limit  # the whole interval is slower than allowed
    reason = None
    if failed:
        reason = (
            f"{slower_pct:.0f} % slower than version {previous} (p50 {p50_new:.3g} ms against {p50_old:.3g} ms; "
            f"speed ratio {ratio.ratio:.2f} [{ratio.ci_low:.2f}, {ratio.ci_high:.2f}]), "
            f"more than --max-slowdown {options.max_slowdown_pct:g} %"
        )
    return Health(
        not failed,
        "slowdown" if failed else None,
        reason,
        runtime,
        version,
        parity,
        tolerance,
        same_build,
        p50_ms=p50_new,
        previous_p50_ms=p50_old,
        speedup=ratio,
        latencies_ms=tuple(after),
        machine=first.machine,
        seconds=time.monotonic() - started,
    )


def _short(error: EdgeqError, device: Device) -> str:
    prefix = f"{device.name}: "
    text = error.message[len(prefix) :] if error.message.startswith(prefix) else error.message
    return f"the model does not load on the device: {text}"
