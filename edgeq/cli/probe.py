"""``edgeq probe`` and ``edgeq bench``: latency measured on the device, and int8 against float32."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import cli
from ._devices import DeviceOptions, FleetProgress, device_options, raise_for_fleet
from ._options import (
    TargetCache,
    probe_options,
    probe_timeout,
    skip_checks_option,
    targets_dir_option,
    timing_options,
)
from ._output import print_renderables, progress_reporter
from ._record import record_options, recorder

if TYPE_CHECKING:
    from ..bench import ProbeOutcome
    from ..doctor import Checks
    from ..fleet import FleetResult


@cli.command("probe")
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@device_options
@targets_dir_option
@timing_options
@click.option(
    "--samples",
    type=click.Path(path_type=Path),
    help="Real input samples (.npy, .npz or image folder, as for convert --calib): the device returns its outputs and edgeq checks them against its own interpreter (parity).",
)
@click.option(
    "--parity-samples",
    "parity_count",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="How many of --samples to send.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@skip_checks_option
@record_options
def probe_cmd(
    model: Path,
    devices: DeviceOptions,
    targets_dir: Path | None,
    runs: int,
    min_s: float,
    warmup_runs: int,
    warmup_min_s: float,
    threads: int | None,
    runtime: str | None,
    timeout_s: float,
    samples: Path | None,
    parity_count: int,
    as_json: bool,
    skip_checks: bool,
    db: Path | None,
    no_record: bool,
) -> None:
    """Measure MODEL's latency ON each device (or on this machine with --target host).

    The model is uploaded under the name probe-<file stem> (verified like a
    deploy; deployed models are never switched), the probe program is copied
    once per version and run with the device's Python and the first TFLite
    runtime installed in the target's order of preference. It reports load,
    allocation and first-inference times, warm-up, every timed run (min,
    mean, std, p50, p90, p99, max), threads, XNNPACK, peak memory, and CPU
    temperature and clock before and after (throttled runs are flagged).
    Each device is checked first, as edgeq doctor does.

    \b
    Examples:
      edgeq probe model_int8.tflite --target host
      edgeq probe model_int8.tflite --host pi@192.168.1.20 --target rpi4b --samples calib.npz
      edgeq probe model_int8.tflite -i fleet.yml --limit lab --runs 200
    """
    from ..bench import parity_samples, probe_fleet, probe_model
    from ..report import probe_table, to_json

    targets = TargetCache(targets_dir)
    found = devices.resolve(target_loader=targets.load)  # a bad target fails here, before any connection
    model_file = probe_model(model)
    options = probe_options(runs, min_s, warmup_runs, warmup_min_s, runtime, probe_timeout(timeout_s, devices))
    checks = _checks(skip_checks, [model], targets, runtime)
    with recorder(db, no_record) as history:  # an unusable history database stops here, before any work
        with (
            parity_samples(model, samples, parity_count) as parity,
            FleetProgress(len(found), action="probe", total_bytes=model_file.size_bytes, enabled=not as_json) as ui,
        ):
            fleet = probe_fleet(
                found,
                model_file,
                options,
                connect=devices.connector(ui),
                device_targets=targets.get,
                threads=threads,
                parity=parity,
                fleet_options=devices.fleet_options(),
                events=ui,
                checks=checks,
            )
        rows = _probe_rows(fleet)
        if as_json:
            click.echo(to_json({"model": str(model), "devices": rows}))
        else:
            print_renderables(probe_table(rows))
        if history is not None:
            history.record_probe(fleet, model_file, devices=found)
    raise_for_fleet(fleet)


def _checks(skip: bool, models: list[Path], targets: TargetCache, runtime: str | None) -> Checks | None:
    """What each device is checked for before the work (None: --skip-checks)."""
    if skip:
        return None
    from ..doctor import Checks, model_needs

    return Checks(tuple(model_needs(m) for m in models), targets.get, runtime)


def _probe_rows(fleet: FleetResult[ProbeOutcome]) -> list[dict[str, Any]]:
    """One row per device, for the table and --json."""
    rows = []
    for r in fleet.results:
        result, parity = r.value if r.value is not None else (None, None)
        rows.append(
            {
                "device": r.device,
                "status": r.status.value,
                "code": r.code,
                "kind": r.kind,
                "reason": r.reason,
                "hint": r.hint,
                "result": result,
                "parity": parity,
            }
        )
    return rows


@cli.command("bench")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--calib",
    required=True,
    type=click.Path(path_type=Path),
    help="Calibration data for the int8 conversion (as for convert).",
)
@click.option(
    "--eval",
    "eval_data",
    type=click.Path(path_type=Path),
    help="Labelled data (.npz with x and y) for the accuracy in the report.",
)
@device_options
@targets_dir_option
@timing_options
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Probe float32 and int8 alternately (A B A B ...) this many times; latencies are pooled.",
)
@click.option(
    "--sweep",
    is_flag=True,
    help="Also try every runtime installed on the device at 1..cores threads, and recommend the fastest configuration for each model.",
)
@click.option(
    "-o",
    "--out-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the models and the reports go [default: ./edgeq-bench-<model stem>].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON on stdout.")
@skip_checks_option
@record_options
@click.pass_context
def bench_cmd(
    ctx: click.Context,
    model: Path,
    calib: Path,
    eval_data: Path | None,
    devices: DeviceOptions,
    targets_dir: Path | None,
    runs: int,
    min_s: float,
    warmup_runs: int,
    warmup_min_s: float,
    threads: int | None,
    runtime: str | None,
    timeout_s: float,
    rounds: int,
    sweep: bool,
    out_dir: Path | None,
    as_json: bool,
    skip_checks: bool,
    db: Path | None,
    no_record: bool,
) -> None:
    """Is int8 really faster on YOUR device? Convert MODEL to float32 and int8, deploy both, probe both ON each device.

    The two models are probed alternately (float32, int8, float32, int8...)
    so that drift and heat affect both alike. For each device: p50 of each,
    the speedup with a bootstrap 95 % interval, a plain verdict, on-device
    parity of int8 against the host interpreter, sizes, and the converter's
    fidelity/accuracy. Reports: OUT/<stem>_bench.json, .csv, .md and .png.

    \b
    Examples:
      edgeq bench model.keras --calib calib.npz --eval test.npz --target host
      edgeq bench model.keras --calib calib.npz -i fleet.yml --sweep
    """
    from ..bench import BenchOptions, common_target, convert_for_bench, run_bench
    from ..report import bench_tables, to_json, write_bench_reports

    targets = TargetCache(targets_dir)
    found = devices.resolve(target_loader=targets.load)  # a bad target fails here, before any connection
    with recorder(db, no_record) as history:  # an unusable history database stops here, before any work
        out_dir = out_dir or Path(f"edgeq-bench-{model.stem}")
        if out_dir.exists() and not out_dir.is_dir():
            raise click.UsageError(f"{out_dir} exists and is not a folder")
        with progress_reporter(enabled=not as_json) as say:
            models = convert_for_bench(
                model,
                calib,
                out_dir,
                eval_data=eval_data,
                target=targets.get(common_target(found)),
                say=say,
                show_log=ctx.obj.get("debug", False),
            )
        timing = probe_options(runs, min_s, warmup_runs, warmup_min_s, runtime, probe_timeout(timeout_s, devices))
        options = BenchOptions.around(timing, rounds=rounds, sweep=sweep, threads=threads)
        total_bytes = models.float32.size_bytes + models.int8.size_bytes
        checks = _checks(skip_checks, [Path(models.float32.path), Path(models.int8.path)], targets, runtime)
        with FleetProgress(len(found), action="bench", total_bytes=total_bytes, enabled=not as_json) as ui:
            report, fleet = run_bench(
                found,
                models,
                options,
                connect=devices.connector(ui),
                device_targets=targets.get,
                fleet_options=devices.fleet_options(),
                events=ui,
                say=ui.note,
                checks=checks,
            )
        written = write_bench_reports(report, out_dir / f"{model.stem}_bench")
        if as_json:
            click.echo(to_json(report))
        else:
            print_renderables(bench_tables(report))
            click.echo("reports: " + ", ".join(str(p) for p in written.values()))
        if history is not None:
            history.record_bench(report, models=models)
    raise_for_fleet(fleet)
