"""int8 against float32 on each device: deploy both, probe them alternately, and say what was measured.

``edgeq bench`` is two calls: :func:`convert_for_bench` makes the two
models (float32 and int8, written with their reports, and the real samples
for the parity check), :func:`run_bench` measures them on every device and
returns the :class:`BenchReport`. ``edgeq probe`` is :func:`probe_fleet`.

``bench_device`` works on one open connection: it deploys the two models
(the deployer: verified, atomic), probes them A B A B so that drift and heat
affect both alike, pools each model's latencies, bootstraps the speedup's
interval, checks int8 parity on real samples against the host interpreter,
and with ``sweep`` tries every installed runtime at 1..cores threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .calibration import ImageOptions, load_samples
from .deploy import ModelFile, deploy_to_device, model_dir, prepare_model
from .errors import EdgeqError, InternalError, NoRuntimeError
from .fleet import (
    Connector,
    FleetEvents,
    FleetOptions,
    FleetResult,
    ProgressCallback,
    reason_of,
    run_fleet,
    status_of,
)
from .probe import (
    DEFAULT_RUNTIMES,
    LatencyStats,
    Parity,
    ProbeOptions,
    ProbeResult,
    compare_parity,
    run_probe,
    summarize_latencies,
)
from .stats import Speedup, outliers, speedup, verdict

if TYPE_CHECKING:
    from .connection import Connection
    from .convert import ConversionResult
    from .devices import Device
    from .doctor import Checks
    from .targets import Target
    from .types import ConversionReport

__all__ = [
    "BenchModels",
    "BenchOptions",
    "BenchReport",
    "DeviceBench",
    "DeviceProber",
    "FleetSummary",
    "ModelRun",
    "ParitySamples",
    "ProbeOutcome",
    "SweepPoint",
    "TargetLookup",
    "bench_device",
    "common_target",
    "convert_for_bench",
    "failed_device",
    "parity_samples",
    "pool",
    "probe_device",
    "probe_fleet",
    "probe_model",
    "remote_model_path",
    "run_bench",
    "summarize_fleet",
]

FLOAT, INT8 = "float32", "int8"
Say = Callable[[str], None]

TargetLookup = Callable[[str | None], "Target | None"]
"""``device_targets(name)``: a device's target by its name (None for a device without one)."""

ProbeOutcome = tuple[ProbeResult, Parity | None]
"""What ``edgeq probe`` measured on one device: the probe's result, and the parity check when samples were given."""

_SWEEP_PROBE = ProbeOptions(runs=20, min_s=0.3, warmup_runs=3, warmup_min_s=0.1)


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """How each device is measured: the probe's timing, the rounds, the optional sweep and its own timing."""

    probe: ProbeOptions = ProbeOptions()
    rounds: int = 2  # A B repeated this many times
    sweep: bool = False
    sweep_probe: ProbeOptions = _SWEEP_PROBE
    threads: int | None = None  # None: the target's default thread count

    @classmethod
    def around(
        cls, probe: ProbeOptions, *, rounds: int = 2, sweep: bool = False, threads: int | None = None
    ) -> BenchOptions:
        """Options timed by ``probe``; the sweep keeps its own shorter timing, with ``probe``'s timeout."""
        return cls(
            probe=probe,
            rounds=rounds,
            sweep=sweep,
            sweep_probe=dataclasses.replace(_SWEEP_PROBE, timeout_s=probe.timeout_s),
            threads=threads,
        )


@dataclasses.dataclass(frozen=True)
class ModelRun:
    """One model's pooled latencies on one device, over all rounds."""

    label: str
    version: str
    size_bytes: int
    runtime: str
    runtime_version: str | None
    threads: int
    xnnpack: bool
    rounds: int
    latency: LatencyStats
    latencies_ms: tuple[float, ...]
    load_ms: float
    first_inference_ms: float
    peak_rss_mb: float
    throttled: bool
    throttle_reason: str | None


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    label: str
    runtime: str
    runtime_version: str | None
    threads: int
    xnnpack: bool
    p50_ms: float


@dataclasses.dataclass(frozen=True)
class DeviceBench:
    device: str
    target: str | None
    status: str  # "ok" | "failed" | "unreachable" | "skipped"
    reason: str | None = None
    code: int = 0  # a failure's exit code and kind (edgeq.errors)
    kind: str | None = None
    machine: str | None = None
    float32: ModelRun | None = None
    int8: ModelRun | None = None
    speedup: Speedup | None = None
    verdict: str | None = None
    parity: Parity | None = None
    sweep: tuple[SweepPoint, ...] = ()
    recommended: dict[str, SweepPoint] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class FleetSummary:
    devices: int
    measured: int
    speedup_min: float | None
    speedup_median: float | None
    speedup_max: float | None
    p50_range_ms: dict[str, tuple[float, float]]
    outliers: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class BenchReport:
    model: str
    float_model: str
    int8_model: str
    float_size_bytes: int
    int8_size_bytes: int
    conversion: dict[str, Any]  # fidelity and accuracy from the converter's int8 report
    devices: tuple[DeviceBench, ...]
    fleet: FleetSummary


@dataclasses.dataclass(frozen=True)
class ParitySamples:
    """Real samples in the int8 model's own input types, and the host interpreter's raw outputs for them."""

    path: Path  # .npz keyed by input name, sent to the device
    host_outputs: dict[str, np.ndarray]

    @classmethod
    def load(
        cls,
        int8_model: str | Path,
        data: str | Path,
        folder: Path,
        count: int = 32,
        image_options: ImageOptions = ImageOptions(),
    ) -> ParitySamples:
        """The first ``count`` samples of ``data`` (any --calib format; a labelled .npz's ``y`` is ignored),
        quantized for the model, written to ``folder``, with the host interpreter's raw outputs for them."""
        from .litert import ModelRunner, captured_native_output

        with captured_native_output():  # the interpreter's "Created XNNPACK delegate" line
            runner = ModelRunner(int8_model)
        samples = load_samples(data, runner.float_input_specs(), image_options)
        with captured_native_output():
            raw = runner.quantize_inputs({k: v[:count] for k, v in samples.items()})
            outputs = runner.run_raw(raw)
        path = folder / "parity_samples.npz"
        arrays: dict[str, Any] = raw  # numpy's stubs take keyword arrays for its own flags
        np.savez(path, **arrays)
        return cls(path=path, host_outputs=outputs)


@contextlib.contextmanager
def parity_samples(int8_model: str | Path, data: str | Path | None, count: int = 32) -> Iterator[ParitySamples | None]:
    """:meth:`ParitySamples.load` into a temporary folder, deleted afterwards; None without ``data``."""
    if data is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="edgeq-parity-") as scratch:
        yield ParitySamples.load(int8_model, data, Path(scratch), count)


@dataclasses.dataclass(frozen=True)
class BenchModels:
    """The two models a bench compares, written to disk, with what their conversion reported."""

    source: str  # the model given (SavedModel, .keras, .h5 or float .tflite)
    float32: ModelFile
    int8: ModelFile
    float32_report: ConversionReport
    int8_report: ConversionReport
    parity: ParitySamples | None = None  # real samples for the int8 parity check

    def by_label(self) -> dict[str, ModelFile]:
        return {FLOAT: self.float32, INT8: self.int8}


def pool(label: str, model: ModelFile, results: Sequence[ProbeResult]) -> ModelRun:
    """One model's probe rounds as one measurement (all latencies pooled)."""
    first = results[0]
    latencies = tuple(v for r in results for v in r.latencies_ms)
    throttled = [r for r in results if r.throttled]
    return ModelRun(
        label=label,
        version=model.version,
        size_bytes=model.size_bytes,
        runtime=first.runtime,
        runtime_version=first.runtime_version,
        threads=first.threads,
        xnnpack=first.xnnpack,
        rounds=len(results),
        latency=summarize_latencies(latencies),
        latencies_ms=latencies,
        load_ms=statistics.median(r.load_ms for r in results),
        first_inference_ms=statistics.median(r.first_inference_ms for r in results),
        peak_rss_mb=max(r.peak_rss_mb for r in results),
        throttled=bool(throttled),
        throttle_reason=throttled[0].throttle_reason if throttled else None,
    )


def remote_model_path(device: Device, model: ModelFile) -> str:
    """Where a deployed version of ``model`` lives on ``device``."""
    return f"{model_dir(device, model.name)}/{model.version}/model.tflite"


def deploy_for_probe(conn: Connection, device: Device, model: ModelFile) -> None:
    """Put ``model`` on the device through the deployer (verified, atomic); it raises if that fails."""
    deploy_to_device(conn, device, model, keep=device.keep_versions)


class DeviceProber:
    """Probes deployed models on one device with the target's Python, runtimes and threads."""

    def __init__(
        self,
        conn: Connection,
        device: Device,
        options: ProbeOptions,
        *,
        target: Target | None = None,
        threads: int | None = None,
    ):
        self.conn = conn
        self.device = device
        self.name = device.name
        self.python = device.python or (target.python if target else "python3")
        self.remote_dir = device.remote_dir
        self.threads = threads or (target.default_threads if target else None)
        if target is not None and not options.runtime:
            options = dataclasses.replace(options, prefer=tuple(target.runtimes))
        self.options = options

    def probe(
        self,
        model: ModelFile,
        options: ProbeOptions | None = None,
        threads: int | None = None,
        *,
        samples: Path | None = None,
        return_outputs: bool = False,
    ) -> ProbeResult:
        return run_probe(
            self.conn,
            self.name,
            remote_model_path(self.device, model),
            options or self.options,
            python=self.python,
            remote_dir=self.remote_dir,
            threads=threads or self.threads,
            samples=samples,
            return_outputs=return_outputs,
        )

    def parity(self, model: ModelFile, samples: ParitySamples) -> Parity:
        """Run ``samples`` through the model on the device once; compare with the host's outputs."""
        once = dataclasses.replace(self.options, runs=1, min_s=0.0, warmup_runs=0, warmup_min_s=0.0)
        result = self.probe(model, once, samples=samples.path, return_outputs=True)
        return compare_parity(samples.host_outputs, result.outputs or ())


def probe_device(
    conn: Connection,
    device: Device,
    model: ModelFile,
    options: ProbeOptions = ProbeOptions(),
    *,
    target: Target | None = None,
    threads: int | None = None,
    parity: ParitySamples | None = None,
    checks: Checks | None = None,
) -> tuple[ProbeResult, Parity | None]:
    """``edgeq probe`` on one device: check it, upload ``model``, time it, and check parity when samples are given."""
    if checks is not None:
        checks.run(conn, device, "probe", target)
    deploy_for_probe(conn, device, model)
    prober = DeviceProber(conn, device, options, target=target, threads=threads)
    result = prober.probe(model)
    return result, (prober.parity(model, parity) if parity is not None else None)


def probe_model(path: str | Path) -> ModelFile:
    """The model ``edgeq probe`` uploads: named ``probe-<file stem>`` on the devices (never a deployed model's name)."""
    return prepare_model(path, name=f"probe-{Path(path).stem}"[:64])


def probe_fleet(
    devices: Sequence[Device],
    model: ModelFile,
    options: ProbeOptions = ProbeOptions(),
    *,
    connect: Connector,
    device_targets: TargetLookup | None = None,
    threads: int | None = None,
    parity: ParitySamples | None = None,
    fleet_options: FleetOptions = FleetOptions(),
    events: FleetEvents | None = None,
    checks: Checks | None = None,
) -> FleetResult[ProbeOutcome]:
    """``edgeq probe``: :func:`probe_device` on every device (see :func:`edgeq.fleet.run_fleet`)."""
    targets = device_targets or _no_target

    def operation(conn: Connection, device: Device, _progress: ProgressCallback) -> ProbeOutcome:
        return probe_device(
            conn, device, model, options, target=targets(device.target), threads=threads, parity=parity, checks=checks
        )

    return run_fleet(devices, operation, connect=connect, options=fleet_options, events=events, action="probe")


def _no_target(_name: str | None) -> Target | None:
    return None


def bench_device(
    conn: Connection,
    device: Device,
    models: Mapping[str, ModelFile],
    options: BenchOptions = BenchOptions(),
    *,
    target: Target | None = None,
    parity: ParitySamples | None = None,
    say: Say | None = None,
    checks: Checks | None = None,
) -> DeviceBench:
    """Check the device, deploy ``models`` ({"float32": ..., "int8": ...}) to it and compare them there."""
    say = say or (lambda _msg: None)
    name = device.name
    if checks is not None:
        say(f"{name}: checking the device")
        checks.run(conn, device, "bench", target)
    for label, model in models.items():
        say(f"{name}: deploying {label} ({model.size_bytes} bytes)")
        deploy_for_probe(conn, device, model)
    prober = DeviceProber(conn, device, options.probe, target=target, threads=options.threads)

    rounds: dict[str, list[ProbeResult]] = {FLOAT: [], INT8: []}
    for r in range(options.rounds):
        for label in (FLOAT, INT8):
            say(f"{name}: round {r + 1}/{options.rounds}, {label}")
            rounds[label].append(prober.probe(models[label]))
    runs = {label: pool(label, models[label], results) for label, results in rounds.items()}
    ratio = speedup(runs[FLOAT].latencies_ms, runs[INT8].latencies_ms)

    parity_result = None
    if parity is not None:
        say(f"{name}: parity of int8 on {len(next(iter(parity.host_outputs.values())))} real samples")
        parity_result = prober.parity(models[INT8], parity)

    sweep: tuple[SweepPoint, ...] = ()
    recommended: dict[str, SweepPoint] = {}
    if options.sweep:
        cores = rounds[FLOAT][0].cpu_count or 1
        sweep = _sweep(
            lambda label, opts, n: prober.probe(models[label], opts, n), options.sweep_probe, cores, say, name
        )
        for label in (FLOAT, INT8):
            points = [p for p in sweep if p.label == label]
            if points:
                recommended[label] = min(points, key=lambda p: p.p50_ms)
    return DeviceBench(
        device=name,
        target=target.name if target else device.target,
        status="ok",
        machine=rounds[FLOAT][0].machine,
        float32=runs[FLOAT],
        int8=runs[INT8],
        speedup=ratio,
        verdict=verdict(ratio),
        parity=parity_result,
        sweep=sweep,
        recommended=recommended,
    )


def _sweep(
    probe: Callable[..., ProbeResult], options: ProbeOptions, cores: int, say: Say, name: str
) -> tuple[SweepPoint, ...]:
    points = []
    for runtime in DEFAULT_RUNTIMES:
        forced = dataclasses.replace(options, runtime=runtime)
        try:
            for threads in range(1, cores + 1):
                for label in (FLOAT, INT8):
                    say(f"{name}: sweep {runtime}, {threads} thread(s), {label}")
                    result = probe(label, forced, threads)
                    points.append(
                        SweepPoint(
                            label,
                            result.runtime,
                            result.runtime_version,
                            threads,
                            result.xnnpack,
                            result.latency.p50_ms,
                        )
                    )
        except NoRuntimeError:
            pass  # not installed on this device (the first probe says so): next runtime
    return tuple(points)


def failed_device(device: Device, target: Target | None, error: EdgeqError) -> DeviceBench:
    """A device of a bench whose run ended with ``error``."""
    return DeviceBench(
        device=device.name,
        target=target.name if target else device.target,
        status=status_of(error).value,
        reason=reason_of(error, device.name),
        code=error.exit_code,
        kind=error.kind,
    )


# --------------------------------------------------------------------------- the whole bench


def common_target(devices: Sequence[Device]) -> str | None:
    """The target every device has, when they share one: the int8 model is converted for it."""
    names = {d.target for d in devices}
    return names.pop() if len(names) == 1 else None


def convert_for_bench(
    model: str | Path,
    calibration: str | Path,
    out_dir: str | os.PathLike[str],
    *,
    eval_data: str | Path | None = None,
    target: Target | None = None,
    say: Say | None = None,
    show_log: bool = False,
) -> BenchModels:
    """Convert ``model`` to float32 and int8 (following ``target``'s constraints) into ``out_dir``.

    Writes ``<stem>_float32.tflite`` and ``<stem>_int8.tflite`` with their
    reports and recipes, and the parity samples (the first of ``eval_data``,
    else of ``calibration``). The folder is made only once the model and the
    data have been checked and converted.
    """
    from .convert import ConvertOptions, apply_target, convert_model, write_outputs
    from .types import QuantMode

    say = say or (lambda _msg: None)
    model, out_dir = Path(model), Path(out_dir)
    stem = model.stem
    paths = {FLOAT: out_dir / f"{stem}_float32.tflite", INT8: out_dir / f"{stem}_int8.tflite"}
    int8_options = ConvertOptions(mode=QuantMode.INT8)
    if target is not None:
        int8_options = apply_target(target, int8_options, mode_given=True)
    say("converting to float32")
    # no data: comparing the float32 model with itself would measure nothing
    float_result = convert_model(model, None, None, ConvertOptions(mode=QuantMode.FLOAT32), progress=say)
    say("converting to int8")
    int8_result = convert_model(
        model, calibration, None, int8_options, eval_data=eval_data, progress=say, show_log=show_log
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, ConversionResult] = {FLOAT: float_result, INT8: int8_result}
    for label, result in results.items():
        if result.recipe is None:  # convert_model always makes one
            raise InternalError(f"the {label} conversion returned no recipe")
        report = dataclasses.replace(result.report, output=str(paths[label]))
        write_outputs(paths[label], result.model_bytes, report, result.recipe)
    parity = ParitySamples.load(
        paths[INT8], eval_data or calibration, out_dir, image_options=int8_options.image_options
    )
    return BenchModels(
        source=str(model),
        float32=prepare_model(paths[FLOAT], name=f"bench-{stem}-{FLOAT}"[:64]),
        int8=prepare_model(paths[INT8], name=f"bench-{stem}-{INT8}"[:64]),
        float32_report=float_result.report,
        int8_report=int8_result.report,
        parity=parity,
    )


def run_bench(
    devices: Sequence[Device],
    models: BenchModels,
    options: BenchOptions = BenchOptions(),
    *,
    connect: Connector,
    device_targets: TargetLookup | None = None,
    fleet_options: FleetOptions = FleetOptions(),
    events: FleetEvents | None = None,
    say: Say | None = None,
    checks: Checks | None = None,
) -> tuple[BenchReport, FleetResult[DeviceBench]]:
    """``edgeq bench`` on every device: :func:`bench_device` through :func:`edgeq.fleet.run_fleet`.

    Returns the report (every device, measured or failed, in the order given,
    and the fleet's summary) and the fleet result it was made from (whose
    failures decide the exit code). ``say`` hears each device's steps.
    """
    targets = device_targets or _no_target
    pair = models.by_label()

    def operation(conn: Connection, device: Device, _progress: ProgressCallback) -> DeviceBench:
        return bench_device(
            conn, device, pair, options, target=targets(device.target), parity=models.parity, say=say, checks=checks
        )

    fleet = run_fleet(devices, operation, connect=connect, options=fleet_options, events=events, action="bench")
    benches = []
    for device, outcome in zip(devices, fleet.results):
        if outcome.value is not None:
            benches.append(outcome.value)
        elif outcome.error is not None:
            benches.append(failed_device(device, targets(device.target), outcome.error))
    conversion = models.int8_report.to_dict()
    report = BenchReport(
        model=models.source,
        float_model=models.float32.path,
        int8_model=models.int8.path,
        float_size_bytes=models.float32_report.quantized_size_bytes,
        int8_size_bytes=models.int8_report.quantized_size_bytes,
        conversion={
            "fidelity": conversion["fidelity"],
            "accuracy": conversion["accuracy"],
            "warnings": list(models.int8_report.warnings),
        },
        devices=tuple(benches),
        fleet=summarize_fleet(benches),
    )
    return report, fleet


def summarize_fleet(devices: Sequence[DeviceBench]) -> FleetSummary:
    """Spread across devices, and devices whose speedup or latency stands out."""
    measured = [d for d in devices if d.speedup is not None]
    ratios = {d.device: d.speedup.ratio for d in devices if d.speedup is not None}
    p50: dict[str, tuple[float, float]] = {}
    flagged = set(outliers(ratios))
    for label in (FLOAT, INT8):
        by_device = {d.device: getattr(d, label).latency.p50_ms for d in measured}
        if by_device:
            p50[label] = (min(by_device.values()), max(by_device.values()))
        flagged |= set(outliers(by_device))
    values = sorted(ratios.values())
    return FleetSummary(
        devices=len(devices),
        measured=len(measured),
        speedup_min=values[0] if values else None,
        speedup_median=statistics.median(values) if values else None,
        speedup_max=values[-1] if values else None,
        p50_range_ms=p50,
        outliers=tuple(sorted(flagged)),
    )
