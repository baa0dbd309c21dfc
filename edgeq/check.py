"""``edgeq check``: what runs where after the deploy, and whether it is still what was deployed.

For every model on every device (or ``--name`` only), read on the device:

* the active version, and across the fleet whether it is the one expected
  (``--expect VERSION``, else the version most devices of the fleet run:
  "37 on 3f2a9c0d1b7e, 2 on 91bb07aa01c3, 1 unreachable");
* the integrity of the active file (its sha256 against the one recorded at
  deploy time; a file changed by hand is flagged, never repaired);
* the runtime the probe would use now, against the one its health check
  used at deploy time (``baseline.json`` beside the version, written by a
  health-gated deploy);
* with ``--model FILE --samples DATA``: the outputs on the samples against
  this machine's interpreter (parity), and the latency against the
  deploy-time baseline (the drift in ms, with the bootstrap interval of the
  ratio; more than ``max_slowdown_pct`` slower, 50 % by default, with the
  whole interval past it, is a problem).

The result per device is a frozen :class:`DeviceCheck`; :func:`summarize`
turns a fleet's into the version counts; :mod:`edgeq.prom` writes them for
Prometheus' node_exporter.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import posixpath
import shlex
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import EdgeqError, ProbeOutputError, RemoteCommandError

if TYPE_CHECKING:
    from .bench import ParitySamples
    from .connection import Connection
    from .deploy import ModelFile
    from .devices import Device
    from .fleet import Connector, FleetEvents, FleetOptions, FleetResult
    from .probe import Parity, ProbeOptions
    from .stats import Speedup
    from .targets import Target

__all__ = ["CheckFailed", "DeviceCheck", "FleetCheck", "ModelCheck", "check_device", "check_fleet", "summarize"]

DEFAULT_MAX_SLOWDOWN_PCT = 50.0  # fleet monitoring alerts on regressions, not on the noise of a busy device
MEASUREMENT_PREFIXES = ("probe-", "bench-", "tune-")  # models edgeq uploads to measure, not deployments
BEGIN, END = "@@edgeq-model ", "@@edgeq-end"


class CheckFailed(EdgeqError):
    """``edgeq check`` found a problem on a device: wrong version, a changed file, a changed runtime, drift."""

    exit_code = 17
    kind = "check"


@dataclasses.dataclass(frozen=True)
class ModelCheck:
    """One model on one device."""

    name: str
    version: str | None  # active
    intact: bool | None  # None: no active version
    detail: str | None  # why it is not intact
    expected: str | None = None  # the fleet's expected version (set by summarize)
    deployed_runtime: str | None = None  # at the deploy's health check (baseline.json)
    deployed_runtime_version: str | None = None
    baseline_p50_ms: float | None = None
    parity: Parity | None = None
    p50_ms: float | None = None
    drift_ms: float | None = None  # p50 now - p50 at deploy
    speed: Speedup | None = None  # p50(at deploy) / p50(now): below 1 it got slower
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclasses.dataclass(frozen=True)
class DeviceCheck:
    """Every model checked on one device, and its runtime now."""

    device: str
    target: str | None
    runtime: str | None
    runtime_version: str | None
    models: tuple[ModelCheck, ...]

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.models)

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(f"{m.name}: {p}" for m in self.models for p in m.problems)


@dataclasses.dataclass(frozen=True)
class FleetCheck:
    """A fleet's check: each device's (or why it could not be checked) and the versions per model."""

    devices: tuple[DeviceCheck | None, ...]
    names: tuple[str, ...]  # the devices, in order
    errors: tuple[str | None, ...]  # why a device was not checked (None: it was)
    versions: dict[str, dict[str, int]]  # model -> version -> devices running it
    expected: dict[str, str | None]
    unreachable: int

    def summary(self, model: str) -> str:
        counts = self.versions.get(model, {})
        parts = [f"{n} on {v}" for v, n in sorted(counts.items(), key=lambda kv: -kv[1])]
        if self.unreachable:
            parts.append(f"{self.unreachable} unreachable")
        return ", ".join(parts) or "on no device"


def _list_models(conn: Connection, device: Device, name: str | None) -> dict[str, dict[str, Any] | None]:
    """The models on the device and each active version's baseline.json (None when it has none), in one command."""
    from .deploy import model_dir

    models = posixpath.dirname(model_dir(device, name or "x"))
    pattern = shlex.quote(name) if name else "*"
    script = (
        f"cd {shlex.quote(models)} 2>/dev/null || exit 0; for m in {pattern}; do "
        f'[ -d "$m" ] || continue; printf "{BEGIN}%s\\n" "$m"; cat -- "$m/current/baseline.json" 2>/dev/null; '
        f'echo; echo "{END}"; done'
    )
    result = conn.run(script, conn.options.command_timeout_s, label="check")
    found: dict[str, dict[str, Any] | None] = {}
    current: str | None = None
    body: list[str] = []
    for line in result.stdout.splitlines():
        if line.startswith(BEGIN):
            current, body = line[len(BEGIN) :], []
        elif line == END and current is not None:
            text = "\n".join(body).strip()
            try:
                found[current] = json.loads(text) if text else None
            except json.JSONDecodeError:
                found[current] = None
            current = None
        elif current is not None:
            body.append(line)
    return {n: b for n, b in found.items() if not n.startswith(MEASUREMENT_PREFIXES)}


def check_device(
    conn: Connection,
    device: Device,
    *,
    name: str | None = None,
    target: Target | None = None,
    model: ModelFile | None = None,
    samples: ParitySamples | None = None,
    timing: ProbeOptions | None = None,
    max_slowdown_pct: float = DEFAULT_MAX_SLOWDOWN_PCT,
) -> DeviceCheck:
    """Check every model on ``device`` (or ``name``); with ``model`` and ``samples``, parity and latency too.

    Latency is a problem when it is more than ``max_slowdown_pct`` slower than at the deploy, with the
    whole bootstrap interval of the ratio past it.
    """
    from .deploy.device import read_status
    from .detect import read_facts
    from .doctor import pick_runtime
    from .runtimes import RUNTIMES

    listed = _list_models(conn, device, name)
    facts = read_facts(conn, device)
    runtime = pick_runtime(facts, tuple(target.runtimes) if target else RUNTIMES)
    runtime_version = facts.runtimes.get(runtime) if runtime else None
    checks = []
    for model_name, baseline in sorted(listed.items()):
        status = read_status(conn, device, model_name)
        if status is None:
            continue
        state, kind, why = status
        problems: list[str] = []
        intact = None if kind == "inactive" else kind == "verified"
        if kind == "inactive":
            problems.append("no active version")
        elif not intact:
            problems.append(f"the active file {state.current} does not match its sha256 (changed by hand?): {why}")
        baseline = baseline if baseline and baseline.get("version") == state.current else None
        deployed_rt = baseline.get("runtime") if baseline else None
        deployed_rv = baseline.get("runtime_version") if baseline else None
        if baseline and (deployed_rt, deployed_rv) != (runtime, runtime_version):
            now = f"{runtime} {runtime_version}" if runtime else "no working runtime"
            problems.append(f"the runtime changed since the deploy: {deployed_rt} {deployed_rv} then, {now} now")
        entry = ModelCheck(
            name=model_name,
            version=state.current,
            intact=intact,
            detail=why,
            deployed_runtime=deployed_rt,
            deployed_runtime_version=deployed_rv,
            baseline_p50_ms=baseline.get("p50_ms") if baseline else None,
            problems=tuple(problems),
        )
        if model is not None and model.name == model_name and intact:
            entry = _measure(conn, device, entry, model, samples, timing, target, baseline, max_slowdown_pct)
        checks.append(entry)
    return DeviceCheck(device.name, target.name if target else device.target, runtime, runtime_version, tuple(checks))


def _measure(
    conn: Connection,
    device: Device,
    entry: ModelCheck,
    model: ModelFile,
    samples: ParitySamples | None,
    timing: ProbeOptions | None,
    target: Target | None,
    baseline: dict[str, Any] | None,
    max_slowdown_pct: float,
) -> ModelCheck:
    """Parity on the samples and latency against the deploy-time baseline, for the active version."""
    import numpy as np

    from .bench import DeviceProber
    from .probe import ProbeOptions, compare_parity
    from .stats import speedup

    problems = list(entry.problems)
    if entry.version != model.version:
        return dataclasses.replace(entry, problems=(*problems, f"runs {entry.version}, not {model.version} (--model)"))
    options = timing or ProbeOptions(runs=20, min_s=0.2, warmup_runs=2, warmup_min_s=0.0)
    prober = DeviceProber(conn, device, options, target=target)
    try:
        result = prober.probe(model, samples=samples.path if samples else None, return_outputs=samples is not None)
    except (RemoteCommandError, ProbeOutputError) as exc:
        return dataclasses.replace(entry, problems=(*problems, f"does not run: {exc.message}"))
    parity = None
    if samples is not None:
        parity = compare_parity(samples.host_outputs, result.outputs or ())
        if not parity.bit_exact:
            worst = max(o["max_abs_diff"] for o in parity.outputs.values())
            if baseline is None or baseline.get("parity_bit_exact") or worst > 1:
                problems.append(f"outputs differ from this machine's (max abs diff {worst:g})")
    speed = drift = None
    if baseline and baseline.get("latencies_ms"):
        speed = speedup(baseline["latencies_ms"], result.latencies_ms)
        drift = float(np.median(result.latencies_ms)) - float(np.median(baseline["latencies_ms"]))
        if speed.ci_high < 1 / (1 + max_slowdown_pct / 100.0):
            problems.append(
                f"slower than at the deploy: p50 {result.latency.p50_ms:.3g} ms, was {baseline.get('p50_ms'):.3g} ms "
                f"(+{drift:.3g} ms; speed ratio {speed.ratio:.2f} [{speed.ci_low:.2f}, {speed.ci_high:.2f}])"
            )
    return dataclasses.replace(
        entry, parity=parity, p50_ms=result.latency.p50_ms, drift_ms=drift, speed=speed, problems=tuple(problems)
    )


def summarize(results: Sequence[DeviceCheck | None], expect: str | None = None) -> dict[str, str | None]:
    """The expected version of each model: ``expect`` (a version prefix), else the one most devices run."""
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for device in results:
        for m in device.models if device else ():
            if m.version:
                counts[m.name][m.version] += 1
    expected: dict[str, str | None] = {}
    for model, versions in counts.items():
        if expect:
            expected[model] = next((v for v in versions if v.startswith(expect.lower())), expect.lower())
        else:
            ranked = versions.most_common()
            tie = len(ranked) > 1 and ranked[0][1] == ranked[1][1]
            expected[model] = None if tie else ranked[0][0]
    return expected


def with_expected(device: DeviceCheck, expected: dict[str, str | None]) -> DeviceCheck:
    """``device`` with each model's expected version and, when it runs another, that problem."""
    models = []
    for m in device.models:
        want = expected.get(m.name)
        problems = m.problems
        if want and m.version != want:
            problems = (*problems, f"runs {m.version or 'no version'}, the fleet's expected version is {want}")
        models.append(dataclasses.replace(m, expected=want, problems=problems))
    return dataclasses.replace(device, models=tuple(models))


def check_fleet(
    devices: Sequence[Device],
    *,
    connect: Connector,
    name: str | None = None,
    expect: str | None = None,
    device_targets: Callable[[str | None], Target | None] | None = None,
    model: ModelFile | None = None,
    samples: ParitySamples | None = None,
    timing: ProbeOptions | None = None,
    options: FleetOptions | None = None,
    events: FleetEvents | None = None,
    max_slowdown_pct: float = DEFAULT_MAX_SLOWDOWN_PCT,
) -> tuple[FleetCheck, FleetResult[DeviceCheck]]:
    """:func:`check_device` on every device, then the fleet's versions and each device's expected one.

    Returns the fleet's view and the fleet result whose devices that failed to be checked or have
    problems (:class:`CheckFailed`) decide the exit code.
    """
    from .fleet import FleetOptions, Outcome, run_fleet

    targets = device_targets or (lambda _n: None)

    def operation(conn: Connection, device: Device, _progress: Any) -> DeviceCheck:
        return check_device(
            conn,
            device,
            name=name,
            target=targets(device.target),
            model=model,
            samples=samples,
            timing=timing,
            max_slowdown_pct=max_slowdown_pct,
        )

    fleet = run_fleet(
        devices, operation, connect=connect, options=options or FleetOptions(), events=events, action="check"
    )
    expected = summarize([r.value for r in fleet.results], expect)
    checked: list[DeviceCheck | None] = []
    outcomes: list[Outcome[DeviceCheck]] = []
    for r in fleet.results:
        value = with_expected(r.value, expected) if r.value is not None else None
        checked.append(value)
        if value is not None and not value.ok:
            error = CheckFailed(f"{r.device}: " + "; ".join(value.problems))
            outcomes.append(Outcome(r.device, r.destination, error=error, attempts=r.attempts, seconds=r.seconds))
        else:
            outcomes.append(dataclasses.replace(r, value=value))
    versions: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for value in checked:
        for m in value.models if value else ():
            if m.version:
                versions[m.name][m.version] = versions[m.name].get(m.version, 0) + 1
    view = FleetCheck(
        devices=tuple(checked),
        names=tuple(r.device for r in fleet.results),
        errors=tuple(r.reason if r.value is None else None for r in fleet.results),
        versions=dict(versions),
        expected=expected,
        unreachable=sum(1 for r in fleet.results if r.value is None),
    )
    return view, dataclasses.replace(fleet, results=tuple(outcomes))
