"""On-device latency probes: the host side that ships ``device.py``, runs it and reads its result.

``device.py`` beside this file is the program that runs on the device; it is
copied there once per version (cached under its hash: a device file, uploaded
by the connection only when the device lacks it, as edgeq's scripts are; see
:mod:`edgeq.remote`) and run with the device's Python. Its result is one JSON document between marker lines; all
other output is ignored.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import posixpath
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CommandTimeoutError, NoRuntimeError, ProbeOutputError, RemoteCommandError
from ..remote import DeviceFile, content_digest
from ..runtimes import RUNTIMES

if TYPE_CHECKING:
    from ..connection import Connection

__all__ = [
    "PROBE_FILE",
    "LatencyStats",
    "OutputTensor",
    "Parity",
    "ProbeOptions",
    "ProbeResult",
    "Thermal",
    "compare_parity",
    "parse_probe_output",
    "probe_command",
    "probe_digest",
    "probe_file",
    "probe_source",
    "result_from_document",
    "run_probe",
    "summarize_latencies",
]

PROBE_FILE = Path(__file__).with_name("device.py")
BEGIN = "@@EDGEQ-PROBE-BEGIN@@"
END = "@@EDGEQ-PROBE-END@@"
DEFAULT_RUNTIMES = RUNTIMES  # in order of preference
THROTTLE_NOW_BITS = 0xF  # Raspberry Pi get_throttled: under-voltage, arm freq capped, throttled, soft temp limit
RUNTIME_FOLDER = "runtime"  # under edgeq's folder: py<major><minor>-<machine>/ per Python, made by edgeq provision
HOT_C = 80.0  # the Pi firmware starts to throttle at 80-85 C


@dataclasses.dataclass(frozen=True)
class ProbeOptions:
    """How to time a model on the device (defaults as LiteRT's benchmark_model: 50 runs, at least 1 s)."""

    runs: int = 50
    min_s: float = 1.0
    max_runs: int = 10000
    max_s: float = 120.0
    warmup_runs: int = 5
    warmup_min_s: float = 0.5
    runtime: str | None = None  # force one; None: first installed of ``prefer``
    prefer: tuple[str, ...] = DEFAULT_RUNTIMES
    timeout_s: float = 300.0
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    count: int
    min_ms: float
    mean_ms: float
    std_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


@dataclasses.dataclass(frozen=True)
class Thermal:
    temp_c: float | None
    clock_mhz: float | None
    max_clock_mhz: float | None
    throttle_bits: int | None


@dataclasses.dataclass(frozen=True)
class OutputTensor:
    """A raw output tensor returned by the probe (values as the model produced them)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    data_b64: str

    def array(self) -> np.ndarray:
        return np.frombuffer(base64.b64decode(self.data_b64), dtype=np.dtype(self.dtype)).reshape(self.shape)


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """What the probe measured for one model on one device."""

    device: str
    model: str
    runtime: str
    runtime_version: str | None
    python: str
    numpy: str
    machine: str
    cpu_count: int | None
    threads: int
    xnnpack: bool
    delegate_partitions: int
    input_source: str
    load_ms: float
    allocate_ms: float
    first_inference_ms: float
    warmup_runs: int
    latency: LatencyStats
    latencies_ms: tuple[float, ...]
    peak_rss_mb: float
    thermal_before: Thermal
    thermal_after: Thermal
    throttled: bool
    throttle_reason: str | None
    outputs: tuple[OutputTensor, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Parity:
    """Device outputs against the host interpreter's for the same model and samples."""

    bit_exact: bool
    outputs: dict[str, dict[str, float]]  # name -> {"mismatched": fraction, "max_abs_diff": raw units}


def summarize_latencies(latencies_ms: Sequence[float]) -> LatencyStats:
    """The probe's summary (numpy's linear percentiles, sample standard deviation) of any latency list."""
    x = np.asarray(latencies_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return LatencyStats(
        count=int(x.size),
        min_ms=float(x.min()),
        mean_ms=float(x.mean()),
        std_ms=float(x.std(ddof=1)) if x.size > 1 else 0.0,
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        max_ms=float(x.max()),
    )


def probe_source() -> bytes:
    return PROBE_FILE.read_bytes()


def probe_digest() -> str:
    return content_digest(probe_source())


def probe_command(
    python: str,
    script: str,
    model: str,
    options: ProbeOptions,
    threads: int | None,
    samples: str | None = None,
    return_outputs: bool = False,
    env_root: str | None = None,
) -> str:
    """The shell command that runs the probe; every argument quoted.

    ``env_root``: edgeq's folder on the device (its ``runtime`` folder holds what ``edgeq provision`` installed).
    """
    args = [
        python,
        script,
        "--model",
        model,
        "--runs",
        str(options.runs),
        "--min-s",
        repr(float(options.min_s)),
        "--max-runs",
        str(options.max_runs),
        "--max-s",
        repr(float(options.max_s)),
        "--warmup-runs",
        str(options.warmup_runs),
        "--warmup-min-s",
        repr(float(options.warmup_min_s)),
        "--seed",
        str(options.seed),
        "--threads",
        str(threads or 0),
    ]
    if env_root is not None:
        args += ["--env-root", posixpath.join(env_root, RUNTIME_FOLDER)]
    if options.runtime:
        args += ["--runtime", options.runtime]
    else:
        args += ["--prefer", ",".join(options.prefer)]
    if samples:
        args += ["--samples", samples]
    if return_outputs:
        args.append("--return-outputs")
    return " ".join(shlex.quote(a) for a in args)


def parse_probe_output(stdout: str | bytes, device: str) -> dict[str, Any]:
    """The probe's JSON document: the last block between a BEGIN marker and the first END after it.

    Anything around it is ignored, stray markers included (a block that is
    not a probe document is skipped in favour of an earlier one).
    """
    text = stdout.decode("utf-8", "replace") if isinstance(stdout, bytes) else stdout
    problem = None
    begin = text.rfind(BEGIN)
    while begin != -1:
        end = text.find(END, begin)
        if end != -1:
            body = text[begin + len(BEGIN) : end].strip()
            try:
                document = json.loads(body)
            except json.JSONDecodeError as exc:
                problem = problem or f"the probe's result is not valid JSON ({exc.msg} at {exc.pos})"
            else:
                if isinstance(document, dict) and "ok" in document:
                    return document
                problem = problem or "the probe's result is not a probe document"
        begin = text.rfind(BEGIN, 0, begin)
    if problem:
        raise ProbeOutputError(f"{device}: {problem}")
    tail = " ".join(text.strip().splitlines()[-3:])[-300:]
    raise ProbeOutputError(
        f"{device}: the probe printed no result" + (f" (last output: {tail})" if tail else " (no output)"),
        hint="run with --debug to see the device's full output",
    )


def _thermal(raw: Mapping[str, Any] | None) -> Thermal:
    raw = raw or {}
    return Thermal(
        temp_c=raw.get("temp_c"),
        clock_mhz=raw.get("clock_mhz"),
        max_clock_mhz=raw.get("max_clock_mhz"),
        throttle_bits=raw.get("throttle_bits"),
    )


def _throttle_reason(before: Thermal, after: Thermal) -> str | None:
    if after.throttle_bits and after.throttle_bits & THROTTLE_NOW_BITS:
        return f"firmware reports throttling (get_throttled=0x{after.throttle_bits:x})"
    if after.temp_c is not None and after.temp_c >= HOT_C:
        return f"CPU at {after.temp_c:.0f} C after the run (throttling starts at {HOT_C:.0f} C)"
    if (
        after.clock_mhz
        and after.max_clock_mhz
        and after.clock_mhz < 0.9 * after.max_clock_mhz
        and (before.clock_mhz is None or after.clock_mhz < before.clock_mhz)
    ):
        return f"clock fell to {after.clock_mhz:.0f} of {after.max_clock_mhz:.0f} MHz"
    return None


def result_from_document(document: Mapping[str, Any], device: str) -> ProbeResult:
    """Turn a successful probe document into a ProbeResult; a failed one into RemoteCommandError
    (NoRuntimeError when the probe says, in its ``error_kind``, that no runtime could be imported)."""
    if not document.get("ok"):
        error = NoRuntimeError if document.get("error_kind") == "no-runtime" else RemoteCommandError
        raise error(f"{device}: the probe failed: {document.get('error', 'unknown error')}")
    try:
        before, after = _thermal(document.get("thermal_before")), _thermal(document.get("thermal_after"))
        reason = _throttle_reason(before, after)
        outputs = document.get("outputs")
        return ProbeResult(
            device=device,
            model=document["model"],
            runtime=document["runtime"],
            runtime_version=document.get("runtime_version"),
            python=document["python"],
            numpy=document["numpy"],
            machine=document["machine"],
            cpu_count=document.get("cpu_count"),
            threads=int(document["threads"]),
            xnnpack=bool(document["xnnpack"]),
            delegate_partitions=int(document["delegate_partitions"]),
            input_source=document["input_source"],
            load_ms=float(document["load_ms"]),
            allocate_ms=float(document["allocate_ms"]),
            first_inference_ms=float(document["first_inference_ms"]),
            warmup_runs=int(document["warmup_runs"]),
            latency=LatencyStats(**document["latency"]),
            latencies_ms=tuple(float(v) for v in document["latencies_ms"]),
            peak_rss_mb=float(document["peak_rss_mb"]),
            thermal_before=before,
            thermal_after=after,
            throttled=reason is not None,
            throttle_reason=reason,
            outputs=None
            if outputs is None
            else tuple(OutputTensor(o["name"], o["dtype"], tuple(o["shape"]), o["data_b64"]) for o in outputs),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProbeOutputError(f"{device}: the probe's result lacks or garbles a field ({exc})") from exc


def compare_parity(host: Mapping[str, np.ndarray], device: Sequence[OutputTensor]) -> Parity:
    """Compare raw output values: bit-exact, or how far apart (in the tensor's own units)."""
    report: dict[str, dict[str, float]] = {}
    exact = True
    for out in device:
        got = out.array()
        want = np.asarray(host[out.name])
        if got.shape != want.shape or got.dtype != want.dtype:
            raise ProbeOutputError(
                f"output '{out.name}': device returned {got.dtype}{list(got.shape)}, host {want.dtype}{list(want.shape)}"
            )
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        same = bool(np.array_equal(got, want))
        exact &= same
        report[out.name] = {
            "mismatched": float(np.mean(diff > 0)) if diff.size else 0.0,
            "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        }
    return Parity(bit_exact=exact, outputs=report)


def probe_file(remote_dir: str) -> DeviceFile:
    """The probe program as the device keeps it: ``<remote_dir>/probe/edgeq_probe_<hash>.py``, uploaded once per version."""
    return DeviceFile.at(posixpath.join(remote_dir, "probe"), f"edgeq_probe_{probe_digest()}.py", probe_source())


def _samples_file(remote_dir: str, samples: Path) -> DeviceFile:
    data = samples.read_bytes()
    return DeviceFile.at(posixpath.join(remote_dir, "probe"), f"samples_{content_digest(data)}.npz", data)


def run_probe(
    conn: Connection,
    device: str,
    remote_model: str,
    options: ProbeOptions = ProbeOptions(),
    *,
    python: str = "python3",
    remote_dir: str = "edgeq",
    threads: int | None = None,
    samples: Path | None = None,
    return_outputs: bool = False,
) -> ProbeResult:
    """Run the probe on ``remote_model`` (a path on the device) through ``conn``; parse its result.

    A probe that overruns ``options.timeout_s`` is stopped on the device and
    raises RemoteCommandError; one that crashes or prints no readable result
    raises RemoteCommandError / ProbeOutputError naming the device.
    """
    # the probe program (and the samples) are uploaded only when the device lacks them: no round trip of their own
    files = [probe_file(remote_dir)] + ([_samples_file(remote_dir, Path(samples))] if samples is not None else [])
    remote_samples = files[1].path if samples is not None else None
    command = probe_command(
        python, files[0].path, remote_model, options, threads, remote_samples, return_outputs, env_root=remote_dir
    )
    try:
        result = conn.run(command, timeout_s=options.timeout_s, check=False, label="probe", requires=files)
    except CommandTimeoutError as exc:
        # the connection's hint names --command-timeout, which does not bound the probe
        raise CommandTimeoutError(
            f"{device}: the probe did not finish within {options.timeout_s:g} s; it was stopped on the device",
            hint="raise --probe-timeout if the device is just slow (or lower --runs / --min-time)",
        ) from exc
    try:
        document = parse_probe_output(result.stdout, device)
    except ProbeOutputError as exc:
        if result.exit_status != 0:  # no result and a failure: the device's own words say more
            detail = (result.stderr.strip().splitlines() or [f"exit status {result.exit_status}"])[-1]
            raise RemoteCommandError(
                f"{device}: the probe did not run ({detail[-300:]})",
                hint=f"check that `{python}` with numpy and a TFLite runtime works on the device (edgeq targets detect)",
            ) from exc
        raise
    return result_from_document(document, device)
