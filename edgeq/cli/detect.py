"""``edgeq targets detect``: read a device's CPU, memory, OS, Python and runtimes; name its target or print one to save."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._devices import DeviceOptions, FleetProgress, device_options, raise_for_fleet
from ._options import targets_dir_option
from ._output import print_renderables
from .targets import targets_group

if TYPE_CHECKING:
    from ..detect import Detection
    from ..fleet import Outcome


@targets_group.command("detect")
@targets_dir_option
@click.option(
    "--toml",
    "as_toml",
    is_flag=True,
    help="Print only the suggested target file (one device): ... --toml --name my-board > ~/.config/edgeq/targets/my-board.toml",
)
@click.option(
    "--name",
    "target_name",
    metavar="NAME",
    help="Name of the suggested target (the file must be saved as NAME.toml) [default: from the board or device].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the facts and matches as JSON.")
@device_options
def detect_cmd(
    targets_dir: Path | None, as_toml: bool, target_name: str | None, as_json: bool, devices: DeviceOptions
) -> None:
    """Connect to devices and name the target that matches each one.

    Reads the CPU (model, cores, clock, ISA features), board model, memory,
    OS, Python and the TFLite runtimes that import on the device, then
    compares them with every visible target. When no specific target fits,
    prints a target file to check and save in ~/.config/edgeq/targets/.

    \b
    Example:
      edgeq targets detect --host pi@10.0.0.5
    """
    from ..detect import detect_device
    from ..fleet import run_fleet
    from ..targets import list_targets

    if target_name is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", target_name):
        raise click.BadParameter("a target name is lower-case letters, digits, '-' and '_'", param_hint="--name")
    targets = list_targets(targets_dir)
    found = devices.resolve(targets_dir)
    if as_toml and len(found) != 1:
        raise click.UsageError("--toml prints one target file: give one device")

    with FleetProgress(len(found), action="detect", enabled=not as_toml) as ui:
        fleet = run_fleet(
            found,
            lambda conn, device, _progress: detect_device(conn, device, targets, name=target_name),
            connect=devices.connector(ui),
            options=devices.fleet_options(),
            events=ui,
            action="detect",
        )
    if as_json:
        import json

        click.echo(json.dumps(fleet.to_dict(), indent=2, default=str))
    elif as_toml:
        detection = fleet.results[0].value
        if detection is not None:
            click.echo(detection.toml or _toml_for_match(detection, target_name), nl=False)
    else:
        for result in fleet.results:
            _render(result)
    raise_for_fleet(fleet)


def _toml_for_match(detection: Detection, name: str | None) -> str:
    from ..detect import suggest_target_toml

    return suggest_target_toml(detection.facts, extends=detection.best.target if detection.best else None, name=name)


def _render(result: Outcome[Detection]) -> None:
    from rich.table import Table
    from rich.text import Text

    where = result.device if result.device == result.destination else f"{result.device} ({result.destination})"
    detection = result.value
    if detection is None:
        click.echo(f"{where}: {result.status.value}: {result.reason}")
        return
    facts = detection.facts
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    clock = f", up to {facts.max_clock_mhz} MHz" if facts.max_clock_mhz else ""
    runtimes = ", ".join(f"{k} {v}" for k, v in facts.runtimes.items() if k != "numpy") or "none"
    broken = ", ".join(f"{k} ({v})" for k, v in facts.broken_runtimes.items())
    rows = [
        ("device", where),
        ("board", facts.board or "unknown"),
        ("arch", facts.arch + (f" (kernel {facts.kernel_arch})" if facts.kernel_arch != facts.arch else "")),
        ("cpu", f"{facts.cpu_model or 'unknown'}, {facts.cores or '?'} cores{clock}"),
        ("features", " ".join(facts.cpu_features) or "none known"),
        ("memory", f"{facts.memory_mb} MiB" if facts.memory_mb else "unknown"),
        ("os", f"{facts.os or 'unknown'} (kernel {facts.kernel})"),
        ("python", f"{facts.python} {facts.python_version or ''}".strip() if facts.python else "not found"),
        ("runtimes", runtimes + (f"; failing to import: {broken}" if broken else "")),
    ]
    best = detection.best
    if best and best.specific:
        rows.append(("target", best.target + (f"  ({'; '.join(best.notes)})" if best.notes else "")))
    else:
        rows.append(("target", "no specific target matches" + (f"; closest: {best.target}" if best else "")))
    for key, value in rows:
        grid.add_row(key, Text(value))  # Text: values are never read as rich markup
    print_renderables([grid])
    if detection.toml:
        # plain output, never wrapped nor styled, so that it can be copied into a file as it is
        click.echo("\nA target file for it (check it, then save it as ~/.config/edgeq/targets/<name>.toml):\n")
        click.echo(detection.toml, nl=False)
