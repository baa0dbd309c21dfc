"""``edgeq provision``: install a working TFLite runtime on devices from wheels the host downloads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import cli
from ._devices import DeviceOptions, FleetProgress, device_options, raise_for_fleet
from ._options import TargetCache, targets_dir_option

if TYPE_CHECKING:
    from ..fleet import Outcome
    from ..provision import Provisioned

PROVISIONABLE = ("ai-edge-litert", "tflite-runtime")  # edgeq.provision.PROVISIONABLE, without importing it for --help


@cli.command("provision")
@device_options
@targets_dir_option
@click.option(
    "--runtime",
    type=click.Choice(PROVISIONABLE),
    default=None,
    help="The runtime to install [default: the first of the target's runtimes that has a wheel for the device].",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Use only the wheels the host has cached (~/.cache/edgeq/wheels); never ask PyPI.",
)
@click.option("--json", "as_json", is_flag=True, help="Print each device's result as JSON.")
def provision_cmd(
    devices: DeviceOptions, targets_dir: Path | None, runtime: str | None, offline: bool, as_json: bool
) -> None:
    """Install a TFLite runtime on each device, into edgeq's folder there, with nothing fetched by the device.

    For each device, its Python, ISA and glibc are read; the host downloads
    the matching wheels (pip download --platform ... --only-binary=:all:,
    cached under ~/.cache/edgeq/wheels) and pushes them over SSH; they are
    unpacked into <edgeq folder>/runtime/py<version>-<machine>, which the
    probe puts first on its import path. The device's own numpy (apt's
    python3-numpy) is used when the runtime can use it; tflite-runtime gets
    numpy<2 beside it when the device has NumPy 2. The runtime is checked
    on the device (it imports and runs a tiny model) before it replaces
    what was there. A second run finds the same wheels in place and
    changes nothing.

    \b
    Examples:
      edgeq provision --host pi@192.168.1.20
      edgeq provision -i fleet.yml --runtime tflite-runtime --offline
    """
    from ..provision import provision_fleet

    targets = TargetCache(targets_dir)
    found = devices.resolve(target_loader=targets.load)
    with FleetProgress(len(found), action="provision", enabled=not as_json) as ui:
        fleet = provision_fleet(
            found,
            connect=devices.connector(ui),
            runtime=runtime,
            device_targets=targets.get,
            offline=offline,
            fleet_options=devices.fleet_options(),
            events=ui,
            say=ui.note,
        )
    if as_json:
        import json

        click.echo(json.dumps(fleet.to_dict(), indent=2, default=str))
    else:
        for result in fleet.results:
            _render(result)
    raise_for_fleet(fleet)


def _render(result: Outcome[Provisioned]) -> None:
    done = result.value
    if done is None:
        click.echo(f"{result.device}: {result.status.value}: {result.reason}")
        return
    numpy = (
        f"numpy {done.numpy} ({'the device' + chr(39) + 's own' if done.numpy_source == 'device' else 'in the folder'})"
    )
    if done.changed:
        click.echo(
            f"{done.device}: installed {done.runtime} {done.version} in {done.env} "
            f"({len(done.wheels)} wheels, {done.bytes_sent / 1e6:.1f} MB sent; {numpy}); checked: it runs a model"
        )
    else:
        click.echo(
            f"{done.device}: unchanged: {done.runtime} {done.version} already in {done.env} and working ({numpy})"
        )
