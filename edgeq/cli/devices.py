"""``edgeq devices``: the devices as every device command resolves them, listed without connecting to any."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from . import cli
from ._devices import DeviceOptions, device_options
from ._output import print_renderables

if TYPE_CHECKING:
    from rich.table import Table

    from ..devices import Device

__all__ = ["device_json", "devices_cmd"]


@cli.command("devices")
@click.option("--json", "as_json", is_flag=True, help="Print the devices as JSON on stdout.")
@device_options
def devices_cmd(as_json: bool, devices: DeviceOptions) -> None:
    """List the devices exactly as deploy, status, probe... would resolve them, without connecting to any.

    Each device's address, port, user and key files come from --host or the
    inventory, then the SSH config as OpenSSH resolves it (ssh -G: Include,
    Match, tokens), then the target's [deploy] table. What edgeq cannot honour
    is the same one-line error here as in every device command (like
    `ansible-inventory --list` and `ansible --list-hosts`).

    \b
    --json: {"devices": [{"name", "address", "port", "user", "identity_files",
    "transport", "target", "python", "remote_dir", "proxy_jump"}]}, in
    inventory order; identity_files are the key files edgeq offers, in order.

    \b
    Examples:
      edgeq devices --host pi@kitchen-pi
      edgeq devices -i fleet.yml --limit kitchen --json
      edgeq devices --host rack1 --ssh-config ./ssh_config -k ~/.ssh/lab_ed25519
    """
    found = devices.resolve()
    if as_json:
        click.echo(json.dumps({"devices": [device_json(d) for d in found]}, indent=2))
        return
    print_renderables([_table(found), f"{len(found)} device{'' if len(found) == 1 else 's'}"])


def device_json(device: Device) -> dict[str, Any]:
    """One device as ``edgeq devices --json`` shows it."""
    return {
        "name": device.name,
        "address": device.address,
        "port": device.port,
        "user": device.user,
        "identity_files": list(device.key_files),
        "transport": device.transport,
        "target": device.target,
        "python": device.python,
        "remote_dir": device.remote_dir,
        "proxy_jump": device.proxy_jump,
    }


def _table(found: tuple[Device, ...]) -> Table:
    from rich.table import Table

    table = Table()
    table.add_column("device", overflow="fold")
    table.add_column("connects to", overflow="fold")
    if any(d.proxy_jump for d in found):
        table.add_column("via", overflow="fold")
    table.add_column("identity files", overflow="fold")
    table.add_column("target", no_wrap=True)
    table.add_column("python", overflow="fold")
    table.add_column("remote dir", overflow="fold")
    for d in found:
        cells = [d.name, d.destination]
        if any(x.proxy_jump for x in found):
            cells.append(d.proxy_jump or "")
        cells += ["\n".join(d.key_files) or "-", d.target or "", d.python, d.remote_dir]
        table.add_row(*cells)
    return table
