"""``edgeq probe`` and ``edgeq bench``: latency measured on the device, and int8 against float32."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import cli
from ._devices import DeviceOptions, FleetProgress, device_options, raise_for_fleet
from ._options import TargetCache, probe_options, probe_timeout, targets_dir_option, timing_options
from ._output import print_renderables, progress_reporter

if TYPE_CHECKING:
    from ..connection import Connection
    from ..fleet import ProgressCallback
    from ..inventory import Device
    from ..probe import Parity, ProbeResult


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
    "--parity-samples", type=click.IntRange(min=1), default=32, show_default=True, help="How many of --samples to send."
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def probe_cmd(
    model,
    devices: DeviceOptions,
    targets_dir,
    runs,
    min_s,
    warmup_runs,
    warmup_min_s,
    threads,
    runtime,
    timeout_s,
    samples,
    parity_samples,
    as_json,
):
    """Measure MODEL's latency ON each device (or on this machine with --target host).

    The model is uploaded under the name probe-<file stem> (verified like a
    deploy; deployed models are never switched), the probe program is copied
    once per version and run with the device's Python and the first TFLite
    runtime installed in the target's order of preference. It reports load,
    allocation and first-inference times, warm-up, every timed run (min,
    mean, std, p50, p90, p99, max), threads, XNNPACK, peak memory, and CPU
    temperature and clock before and after (throttled runs are flagged).

    \b
    Examples:
      edgeq probe model_int8.tflite --target host
      edgeq probe model_int8.tflite --host pi@192.168.1.20 --target rpi4b --samples calib.npz
      edgeq probe model_int8.tflite -i fleet.yml --limit lab --runs 200
    """
    from ..bench import ParitySamples, probe_device
    from ..deploy import prepare_model
    from ..fleet import run_fleet
    from ..report import probe_table, to_json

    targets = TargetCache(targets_dir)
    found = devices.resolve(target_loader=targets.load)  # a bad target fails here, before any connection
    model_file = prepare_model(model, name=f"probe-{model.stem}"[:64])
    options = probe_options(runs, min_s, warmup_runs, warmup_min_s, runtime, probe_timeout(timeout_s, devices))
    with tempfile.TemporaryDirectory(prefix="edgeq-parity-") as scratch:
        parity = ParitySamples.load(model, samples, Path(scratch), parity_samples) if samples else None

        def operation(
            conn: Connection, device: Device, _progress: ProgressCallback
        ) -> tuple[ProbeResult, Parity | None]:
            return probe_device(
                conn, device, model_file, options, target=targets.get(device.target), threads=threads, parity=parity
            )

        with FleetProgress(len(found), action="probe", total_bytes=model_file.size_bytes, enabled=not as_json) as ui:
            fleet = run_fleet(
                found,
                operation,
                connect=devices.connector(ui),
                options=devices.fleet_options(),
                events=ui,
                action="probe",
            )
    rows = []
    for r in fleet.results:
        result, parity_result = r.value if r.value is not None else (None, None)
        rows.append(
            {
                "device": r.device,
                "status": r.status.value,
                "code": r.code,
                "kind": r.kind,
                "reason": r.reason,
                "hint": r.hint,
                "result": result,
                "parity": parity_result,
            }
        )
    if as_json:
        click.echo(to_json({"model": str(model), "devices": rows}))
    else:
        print_renderables(probe_table(rows))
    raise_for_fleet(fleet)


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
@click.pass_context
def bench_cmd(
    ctx,
    model,
    calib,
    eval_data,
    devices: DeviceOptions,
    targets_dir,
    runs,
    min_s,
    warmup_runs,
    warmup_min_s,
    threads,
    runtime,
    timeout_s,
    rounds,
    sweep,
    out_dir,
    as_json,
):
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
    from ..bench import BenchOptions, BenchReport, ParitySamples, bench_device, failed_device, summarize_fleet
    from ..convert import ConvertOptions, convert_model, write_outputs
    from ..deploy import prepare_model
    from ..fleet import run_fleet
    from ..report import bench_tables, to_json, write_bench_reports
    from ..types import QuantMode

    targets = TargetCache(targets_dir)
    found = devices.resolve(target_loader=targets.load)  # a bad target fails here, before any connection
    out_dir = out_dir or Path(f"edgeq-bench-{model.stem}")
    if out_dir.exists() and not out_dir.is_dir():
        raise click.UsageError(f"{out_dir} exists and is not a folder")
    stem = model.stem
    paths = {"float32": out_dir / f"{stem}_float32.tflite", "int8": out_dir / f"{stem}_int8.tflite"}
    common = {d.target for d in found}
    int8_options = ConvertOptions(mode=QuantMode.INT8)
    shared_target = common.pop() if len(common) == 1 else None
    if shared_target is not None:
        from ..convert import apply_target

        int8_options = apply_target(targets.load(shared_target), int8_options, mode_given=True)
    with progress_reporter(enabled=not as_json) as say:
        say("converting to float32")
        # no data: comparing the float32 model with itself would measure nothing
        float_result = convert_model(model, None, None, ConvertOptions(mode=QuantMode.FLOAT32), progress=say)
        say("converting to int8")
        int8_result = convert_model(
            model, calib, None, int8_options, eval_data=eval_data, progress=say, show_log=ctx.obj.get("debug", False)
        )
        # the folder is made only now that the model and the data have been checked and converted
        out_dir.mkdir(parents=True, exist_ok=True)
        for label, result in (("float32", float_result), ("int8", int8_result)):
            report = dataclasses.replace(result.report, output=str(paths[label]))
            write_outputs(paths[label], result.model_bytes, report, result.recipe)
        parity = ParitySamples.load(
            paths["int8"], eval_data or calib, out_dir, image_options=int8_options.image_options
        )
    models = {label: prepare_model(path, name=f"bench-{stem}-{label}"[:64]) for label, path in paths.items()}
    timing = probe_options(runs, min_s, warmup_runs, warmup_min_s, runtime, probe_timeout(timeout_s, devices))
    options = BenchOptions(
        probe=timing,
        rounds=rounds,
        sweep=sweep,
        sweep_probe=dataclasses.replace(
            BenchOptions().sweep_probe, timeout_s=timing.timeout_s
        ),  # its own timing, the same timeout
        threads=threads,
    )
    with FleetProgress(
        len(found), action="bench", total_bytes=sum(m.size_bytes for m in models.values()), enabled=not as_json
    ) as ui:
        fleet = run_fleet(
            found,
            lambda conn, device, _progress: bench_device(
                conn, device, models, options, target=targets.get(device.target), parity=parity, say=ui.note
            ),
            connect=devices.connector(ui),
            options=devices.fleet_options(),
            events=ui,
            action="bench",
        )
    benches = []
    for device, outcome in zip(found, fleet.results):
        if outcome.value is not None:
            benches.append(outcome.value)
        elif outcome.error is not None:
            benches.append(failed_device(device, targets.get(device.target), outcome.error))
    report = BenchReport(
        model=str(model),
        float_model=str(paths["float32"]),
        int8_model=str(paths["int8"]),
        float_size_bytes=float_result.report.quantized_size_bytes,
        int8_size_bytes=int8_result.report.quantized_size_bytes,
        conversion={
            "fidelity": int8_result.report.to_dict()["fidelity"],
            "accuracy": int8_result.report.to_dict()["accuracy"],
            "warnings": list(int8_result.report.warnings),
        },
        devices=tuple(benches),
        fleet=summarize_fleet(benches),
    )
    written = write_bench_reports(report, out_dir / f"{stem}_bench")
    if as_json:
        click.echo(to_json(report))
    else:
        print_renderables(bench_tables(report))
        click.echo("reports: " + ", ".join(str(p) for p in written.values()))
    raise_for_fleet(fleet)
