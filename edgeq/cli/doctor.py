"""``edgeq doctor``: can each device run this model? One line per problem, with its fix."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..runtimes import RUNTIMES
from . import cli
from ._devices import DeviceOptions, FleetProgress, device_options, raise_for_fleet
from ._options import TargetCache, targets_dir_option

if TYPE_CHECKING:
    from ..doctor import Checkup
    from ..fleet import FleetResult, Outcome


@cli.command("doctor")
@click.argument("models", nargs=-1, type=click.Path(path_type=Path, dir_okay=False))
@device_options
@targets_dir_option
@click.option(
    "--runtime",
    type=click.Choice(RUNTIMES),
    default=None,
    help="Check this runtime [default: the first that works, in the target's order of preference].",
)
@click.option("--json", "as_json", is_flag=True, help="Print every device's facts and problems as JSON.")
def doctor_cmd(
    models: tuple[Path, ...], devices: DeviceOptions, targets_dir: Path | None, runtime: str | None, as_json: bool
) -> None:
    """Check that each device can run MODEL (any number of models, or none) BEFORE deploying or probing it.

    One command per device reads its ISA and OS, its Python, every TFLite
    runtime (each imported and run on a tiny model in a process of its own:
    a tflite-runtime built for NumPy 1.x failing under NumPy 2 is caught),
    the numpy it imports with, free disk where edgeq keeps models and free
    memory. The model's kernels, op versions and custom ops are checked
    against the runtime the probe would use, its size against the disk,
    the memory it took on this machine's interpreter against the device's,
    and the device's target file against the device. Each problem is one
    line with the exact fix. deploy, probe, bench and tune run the same
    checks first (--skip-checks to go on anyway).

    \b
    Exit codes: 0 every device is ready, 14 a device is not (each problem
    is printed), 7-10 a device could not be checked, 12 devices failed in
    different ways.

    \b
    Examples:
      edgeq doctor model_int8.tflite --host pi@192.168.1.20 --target rpi4b
      edgeq doctor model_int8.tflite -i fleet.yml --json
    """
    from ..doctor import checkup, model_needs
    from ..fleet import run_fleet

    targets = TargetCache(targets_dir)
    found = devices.resolve(target_loader=targets.load)
    needs = [model_needs(m) for m in models]
    with FleetProgress(len(found), action="doctor", enabled=not as_json) as ui:
        fleet = run_fleet(
            found,
            lambda conn, device, _progress: checkup(conn, device, needs, targets.get(device.target), runtime=runtime),
            connect=devices.connector(ui),
            options=devices.fleet_options(),
            events=ui,
            action="doctor",
        )
    if as_json:
        import json

        from ..doctor import checkup_to_dict

        click.echo(
            json.dumps(
                {
                    "models": [str(m) for m in models],
                    "ok": all(r.value is not None and r.value.ok for r in fleet.results),
                    "devices": [
                        {"device": r.device, "status": r.status.value, "reason": r.reason}
                        | ({"checkup": checkup_to_dict(r.value)} if r.value is not None else {})
                        for r in fleet.results
                    ],
                },
                indent=2,
                default=str,
            )
        )
    else:
        for result in fleet.results:
            _render(result)
    raise_for_fleet(_not_ready_as_failures(fleet))


def _render(result: Outcome[Checkup]) -> None:
    where = result.device if result.device == result.destination else f"{result.device} ({result.destination})"
    up = result.value
    if up is None:
        click.echo(f"{where}: not checked: {result.status.value}: {result.reason}")
        return
    f = up.facts
    python = f"Python {f.python_version}" if f.python else "no Python"
    numpy = f", numpy {f.runtimes['numpy']}" if "numpy" in f.runtimes else ""
    runtime = f"{up.runtime} {up.runtime_version}" if up.runtime else "no working runtime"
    env = " (edgeq's runtime folder)" if f.runtime_env else ""
    disk = f", {f.disk_free_mb} MB free" if f.disk_free_mb is not None else ""
    memory = f", {f.memory_available_mb} MB memory available" if f.memory_available_mb is not None else ""
    verdict = "ready" if up.ok else "NOT READY"
    click.echo(f"{where}: {verdict}: {f.arch}, {f.os or 'unknown OS'}, {python}{numpy}, {runtime}{env}{disk}{memory}")
    for problem in up.problems:
        mark = "error" if problem.blocking else "warning"
        click.echo(f"  {mark}: {problem.message}")
        click.echo(f"    fix: {problem.fix}")


def _not_ready_as_failures(fleet: FleetResult[Checkup]) -> FleetResult[Checkup]:
    """The fleet with each device that failed its checks as a DeviceNotReady failure (for the exit rule)."""
    from ..errors import DeviceNotReady

    results = []
    for r in fleet.results:
        if r.value is not None and not r.value.ok:
            problems = "; ".join(p.message for p in r.value.problems if p.blocking)
            r = dataclasses.replace(r, value=None, error=DeviceNotReady(f"{r.device}: {problems}"))
        results.append(r)
    return dataclasses.replace(fleet, results=tuple(results))
