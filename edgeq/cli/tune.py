"""``edgeq tune``: the fastest model on your device that stays within your accuracy budget."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import cli
from ._devices import DeviceOptions, FleetProgress, device_options, raise_for_fleet
from ._options import (
    TargetCache,
    calibration_options,
    image_options,
    probe_options,
    probe_timeout,
    skip_checks_option,
    targets_dir_option,
    timing_options,
)
from ._output import print_renderables, progress_reporter
from ._record import record_options, recorder

if TYPE_CHECKING:
    from ..devices import Device
    from ..targets import Target


@cli.command("tune")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--calib",
    required=True,
    type=click.Path(path_type=Path),
    help="Calibration data (.npy, .npz or image folder): calibrated on ONCE, for every candidate.",
)
@click.option(
    "--eval",
    "eval_data",
    type=click.Path(path_type=Path),
    help="Labelled data (.npz with x and y): half guides the search, the other half (never seen by the search) gives the reported figures.",
)
@click.option(
    "--max-drop",
    type=float,
    default=None,
    help="Budget: accuracy drop in percentage points against float on --eval [default: 1.0 when --eval is given].",
)
@click.option(
    "--min-agreement",
    type=float,
    default=None,
    help="Budget without labels: top-1 agreement with the float model, in percent (e.g. 99).",
)
@click.option(
    "--min-sqnr", type=float, default=None, help="Budget without labels: output SQNR against float, in dB (e.g. 30)."
)
@device_options
@targets_dir_option
@timing_options
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="With devices: probe the candidates alternately (A B C A B C ...) this many times.",
)
@click.option(
    "--max-candidates",
    type=click.IntRange(min=1, max=1000),
    default=40,
    show_default=True,
    help="End-to-end evaluations the layer search may spend.",
)
@calibration_options(
    held_out="to score the candidates when there is no --eval (half guide the search, half give the figures)",
    seed="the splits (calibration/held-out, search/report)",
)
@click.option(
    "-o",
    "--out-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the chosen model, its recipe and the reports go [default: ./edgeq-tune-<model stem>].",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the report as JSON on stdout (`chosen.path` is the chosen model)."
)
@skip_checks_option
@record_options
@click.pass_context
def tune_cmd(
    ctx: click.Context,
    model: Path,
    calib: Path,
    eval_data: Path | None,
    max_drop: float | None,
    min_agreement: float | None,
    min_sqnr: float | None,
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
    max_candidates: int,
    calib_samples: int,
    seed: int,
    pixel_range: str,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    out_dir: Path | None,
    as_json: bool,
    skip_checks: bool,
    db: Path | None,
    no_record: bool,
) -> None:
    """Find the fastest variant of MODEL that stays within an accuracy budget.

    Calibrates once, then builds candidates from the stored statistics: full
    int8, int8 with the fewest layers kept in float or int16 (layers ranked by
    their int8 error, every candidate measured end to end), int16x8, int4
    weights, dynamic range, float16. Every candidate is loaded and run before
    it counts. With devices (--target host, --host, -i) the candidates on the
    accuracy/size front are deployed and probed alternately ON each device and
    the fastest within the budget is chosen per device; without, the smallest
    within the budget, and the report says latency was not measured.

    A budget nothing meets is reported with the best candidate found; nothing
    is written as chosen and the exit code is 13.

    \b
    Examples:
      edgeq tune model.keras --calib calib.npz --eval test.npz --max-drop 0.5
      edgeq tune model.tflite --calib calib.npz --min-agreement 99 --target host
      edgeq tune model.keras --calib calib.npz --eval test.npz -i fleet.yml -l shelf
    """
    from ..report import to_json, tune_tables, write_tune_reports
    from ..tune import Budget, BudgetNotMet, TuneOptions, run_tune

    if max_drop is not None and eval_data is None:
        raise click.UsageError(
            "--max-drop needs --eval (labelled data); without labels use --min-agreement or --min-sqnr"
        )
    if eval_data is not None and max_drop is None and min_agreement is None and min_sqnr is None:
        max_drop = 1.0
    if max_drop is None and min_agreement is None and min_sqnr is None:
        raise click.UsageError("give a budget: --eval DATA [--max-drop POINTS], --min-agreement PCT or --min-sqnr DB")
    budget = Budget(max_drop_points=max_drop, min_agreement_pct=min_agreement, min_sqnr_db=min_sqnr)
    options = TuneOptions(
        budget=budget,
        calibration_samples=calib_samples,
        seed=seed,
        image_options=image_options(pixel_range, mean, std),
        max_candidates=max_candidates,
    )
    targets = TargetCache(targets_dir)
    found: tuple[Device, ...] = ()
    target: Target | None = None
    if devices.hosts or devices.inventory:
        found = devices.resolve(target_loader=targets.load)  # a bad inventory or target fails here, before any work
    elif devices.target:
        target = targets.load(devices.target)
        if target.deploy.transport == "local":
            found = devices.resolve(target_loader=targets.load)
    out_dir = out_dir or Path(f"edgeq-tune-{model.stem}")
    timing = probe_options(runs, min_s, warmup_runs, warmup_min_s, runtime, probe_timeout(timeout_s, devices))
    from ..doctor import Checks
    from ..litert import captured_native_output

    with recorder(db, no_record if found else True) as history:  # a tune without devices measures nothing
        with progress_reporter(enabled=not as_json) as say, captured_native_output(echo=ctx.obj.get("debug", False)):
            if found:
                with FleetProgress(len(found), action="tune", enabled=not as_json) as ui:
                    report, _written, fleet = run_tune(
                        str(model),
                        str(calib),
                        str(eval_data) if eval_data else None,
                        options,
                        out_dir,
                        target=target,
                        devices=found,
                        device_targets=targets.get,
                        connect=devices.connector(ui),
                        fleet_options=devices.fleet_options(),
                        events=ui,
                        probe_options=timing,
                        rounds=rounds,
                        say=say,
                        checks=None if skip_checks else Checks((), targets.get, runtime),
                    )
            else:
                report, _written, fleet = run_tune(
                    str(model),
                    str(calib),
                    str(eval_data) if eval_data else None,
                    options,
                    out_dir,
                    target=target,
                    say=say,
                )
        if report.chosen is not None or report.best_found is not None:
            reports = write_tune_reports(report, out_dir / f"{model.stem}_tune")
        else:
            reports = {}
        if as_json:
            click.echo(to_json(report))
        else:
            print_renderables(tune_tables(report))
            if reports:
                click.echo("reports: " + ", ".join(str(p) for p in reports.values()))
        if history is not None and found:
            history.record_tune(report)
    if fleet is not None:
        raise_for_fleet(fleet)
    if report.chosen is None:
        best = f"; the closest was {report.best_found}" if report.best_found else ""
        hint = "loosen the budget, give more calibration data, or check that the float model itself scores well on this data"
        if found and report.best_found is None:
            raise BudgetNotMet("no device measured a candidate within the budget", hint=hint)
        raise BudgetNotMet(f"no candidate is within the budget ({report.budget}){best}", hint=hint)
