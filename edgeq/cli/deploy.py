"""``edgeq deploy``, ``edgeq status``, ``edgeq rollback``, ``edgeq remove``: models on devices and fleets.

Exit status: 0 when every device succeeded (ok or unchanged); otherwise the
rule of :func:`edgeq.cli._devices.raise_for_fleet`: one device, or devices
that all failed alike, exit with their failure's code (7 unreachable, 8
authentication, 9 host key, 10 remote command, 1 a model absent or damaged on
the device...); different failures exit 12. The table (or ``--json``, with
each device's ``code`` and ``kind``) says which and why. Problems found before
any device is contacted keep their own codes: 2 usage, 1 bad model name or
inventory, 3 target file, 5 model file.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import cli
from ._devices import DeviceOptions, FleetProgress, device_options, raise_for_fleet
from ._options import CountOrPercent, TargetCache, skip_checks_option
from ._output import print_renderables
from ._record import record_options, recorder

if TYPE_CHECKING:
    from rich.table import Table

    from ..deploy import DeployFleetResult
    from ..health import Health

_FLEET_HELP = """
\b
Exit status: 0 when every device succeeded. One device that failed, or
devices that all failed alike, exit with that failure's code (7 unreachable,
8 authentication, 9 host key, 10 remote command, 1 model absent or damaged on
the device); different failures exit 12. Each device's reason, code and kind
are in the table and in --json.
"""


@cli.command("deploy", epilog=_FLEET_HELP)
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--name",
    help="Name of the model on the devices [default: the file name without .tflite]. Letters, digits, '.', '_', '-'.",
)
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=None,
    help="Versions kept on each device, the active one included [default: the target's keep_versions, else 3].",
)
@click.option(
    "--canary",
    type=CountOrPercent(),
    default="0",
    show_default=True,
    help="Deploy to the first N devices (or PCT% of them) first; stop the rollout if any of them fails.",
)
@click.option(
    "--batch",
    type=CountOrPercent(),
    default=None,
    help="After the canary, deploy N devices (or PCT% of the fleet) at a time [default: all at once].",
)
@click.option(
    "--max-fail",
    "max_fail_pct",
    type=click.FloatRange(min=0, max=100),
    default=None,
    help="Stop the rollout when more than PCT % of a batch fails (a failed health check counts) [default: never].",
)
@click.option(
    "--no-undo",
    is_flag=True,
    help="When the rollout stops, keep the devices it already switched on the new version [default: switch them back].",
)
@click.option(
    "--check-samples",
    type=click.Path(path_type=Path),
    default=None,
    help="Reference inputs (as for convert --calib): after the switch each device runs them, and its outputs must "
    "match this machine's (bit-exact for the same runtime build, else within --tolerance), or it is rolled back. "
    "[default: MODEL's .samples.npz when it has one]",
)
@click.option(
    "--no-health-check",
    is_flag=True,
    help="Do not check the model on the devices after the switch, even when MODEL.samples.npz is there.",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=None,
    help="Largest output difference allowed by the health check, in the output's units [default: 0 for the "
    "host's runtime build, else one quantization step (integer outputs) or 1e-3 of the output range].",
)
@click.option(
    "--max-slowdown",
    "max_slowdown_pct",
    type=click.FloatRange(min=0),
    default=None,
    help="Health check: roll a device back when the new version's p50 is more than PCT % slower than the "
    "previous version's there (measured alternately, as bench; the whole 95 % interval must be past it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the per-device results as JSON on stdout.")
@skip_checks_option
@record_options
@device_options
def deploy_cmd(
    model: Path,
    name: str | None,
    keep: int | None,
    canary: str,
    batch: str | None,
    max_fail_pct: float | None,
    no_undo: bool,
    check_samples: Path | None,
    no_health_check: bool,
    tolerance: float | None,
    max_slowdown_pct: float | None,
    as_json: bool,
    skip_checks: bool,
    db: Path | None,
    no_record: bool,
    devices: DeviceOptions,
) -> None:
    """Deploy MODEL (.tflite) to one device or a fleet: verified, atomic, versioned.

    The model goes to <remote_dir>/models/<name>/<version>/ on each device,
    the version being the first 12 hex digits of its sha256. It is uploaded
    under a temporary name, its sha256 is computed on the device and compared,
    it is flushed to disk and renamed into place; only then does the `current`
    link switch to it, atomically. A version already on the device (and
    intact) is not uploaded again. The last --keep versions are kept.
    Each device is checked before anything is sent: its free disk, and
    that its target file is for its ISA (--skip-checks: not the target);
    a device that fails is left untouched.

    \b
    Health-gated: with --check-samples (or MODEL.samples.npz beside the
    model) and/or --max-slowdown, each device checks the new version right
    after the switch: it loads in the device's runtime, its outputs match
    this machine's, it is not slower than the version it replaces. A device
    that fails is switched back at once (exit 16, kind health-check).
    Staged: --canary, then --batch at a time; --max-fail stops the rollout
    and switches back what it had switched (unless --no-undo); skipped and
    undone devices exit 12. --json gives the version each device runs at
    the end.

    \b
    Examples:
      edgeq deploy digits_int8.tflite --host pi@10.0.0.5 --target rpi4b
      edgeq deploy digits_int8.tflite -i fleet.yml --limit kitchen --canary 2
    """
    from ..files import BackgroundDigest

    hashing = BackgroundDigest(model)  # overlaps the imports below (paramiko's are most of start-up)
    from ..deploy import deploy_fleet, prepare_model

    prepared = prepare_model(model, name, digest=hashing)  # name and file checked before any connection
    targets = TargetCache(None)
    found = devices.resolve(target_loader=targets.load)
    options = dataclasses.replace(
        devices.fleet_options(CountOrPercent.resolve(canary, len(found))),
        batch=CountOrPercent.resolve(batch, len(found)) if batch else 0,
        max_fail_pct=max_fail_pct,
    )
    if no_health_check and (check_samples is not None or max_slowdown_pct is not None):
        raise click.UsageError("--no-health-check contradicts --check-samples and --max-slowdown")
    from ..health import recorded_samples

    samples = check_samples if check_samples is not None else recorded_samples(model)
    with contextlib.ExitStack() as stack:
        history = stack.enter_context(recorder(db, no_record))
        health = None
        if not no_health_check and (samples is not None or max_slowdown_pct is not None):
            from ..bench import parity_samples
            from ..health import HealthOptions

            reference = stack.enter_context(parity_samples(model, samples)) if samples is not None else None
            health = HealthOptions(samples=reference, tolerance=tolerance, max_slowdown_pct=max_slowdown_pct)
        with FleetProgress(len(found), action="deploy", total_bytes=prepared.size_bytes) as ui:
            fleet = deploy_fleet(
                found,
                prepared,
                connect=devices.connector(ui),
                keep=keep,
                options=options,
                events=ui,
                device_targets=targets.get,
                check_target=not skip_checks,
                health=health,
                undo=not no_undo,
            )
        _show(fleet, as_json)
        if history is not None:
            history.record_deploy(fleet, model=prepared, devices=found)
    raise_for_fleet(fleet)


@cli.command("status", epilog=_FLEET_HELP)
@click.option("--name", required=True, help="The model's name on the devices.")
@click.option("--json", "as_json", is_flag=True, help="Print the per-device results as JSON on stdout.")
@device_options
def status_cmd(name: str, as_json: bool, devices: DeviceOptions) -> None:
    """Show each device's active version of a model and whether its file still matches its sha256.

    A device fails the check (kind model-state, exit 1) when the model is
    absent, has no active version, or its active file no longer matches the
    hash recorded when it was deployed.
    """
    from ..deploy import status_fleet, validate_model_name

    validate_model_name(name)
    found = devices.resolve()
    with FleetProgress(len(found), action="status") as ui:
        fleet = status_fleet(found, name, connect=devices.connector(ui), options=devices.fleet_options(), events=ui)
    _show(fleet, as_json)
    raise_for_fleet(fleet)


@cli.command("rollback", epilog=_FLEET_HELP)
@click.option("--name", required=True, help="The model's name on the devices.")
@click.option(
    "--to",
    "to",
    metavar="VERSION",
    help="Version to switch to (a unique prefix of 4+ hex digits) [default: the version active before the current one].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the per-device results as JSON on stdout.")
@record_options
@device_options
def rollback_cmd(
    name: str, to: str | None, as_json: bool, db: Path | None, no_record: bool, devices: DeviceOptions
) -> None:
    """Switch a model back to the previously active version (or --to VERSION), atomically.

    The version switched to is verified against its sha256 on the device
    first; a damaged version is refused and the active one left as it is.
    """
    from ..deploy import rollback_fleet, validate_model_name

    validate_model_name(name)
    found = devices.resolve()
    with recorder(db, no_record) as history:
        with FleetProgress(len(found), action="rollback") as ui:
            fleet = rollback_fleet(
                found, name, to=to, connect=devices.connector(ui), options=devices.fleet_options(), events=ui
            )
        _show(fleet, as_json)
        if history is not None:
            history.record_deploy(fleet, "rollback", devices=found)
    raise_for_fleet(fleet)


@cli.command("remove", epilog=_FLEET_HELP)
@click.option("--name", required=True, help="The model's name on the devices.")
@click.option(
    "--version",
    "versions",
    multiple=True,
    metavar="VERSION",
    help="Remove this version (repeatable; never the active one).",
)
@click.option(
    "--all",
    "remove_all",
    is_flag=True,
    help="Remove the model entirely: every version, the current link and the manifest.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the per-device results as JSON on stdout.")
@device_options
def remove_cmd(name: str, versions: tuple[str, ...], remove_all: bool, as_json: bool, devices: DeviceOptions) -> None:
    """Delete a model's versions from devices: --version V (not the active one) or --all."""
    from ..deploy import remove_fleet, validate_model_name

    if bool(versions) == remove_all:
        raise click.UsageError("give --version VERSION (repeatable) or --all")
    validate_model_name(name)
    found = devices.resolve()
    with FleetProgress(len(found), action="remove") as ui:
        fleet = remove_fleet(
            found, name, versions=versions, connect=devices.connector(ui), options=devices.fleet_options(), events=ui
        )
    _show(fleet, as_json)
    raise_for_fleet(fleet)


# --------------------------------------------------------------------------- rendering


_STYLE = {"ok": "green", "unchanged": "cyan", "failed": "red", "unreachable": "red", "skipped": "yellow"}


def _show(fleet: DeployFleetResult, as_json: bool) -> None:
    if as_json:
        import json

        click.echo(json.dumps(fleet.to_dict(), indent=2))
        return
    print_renderables([_table(fleet), *_notes(fleet), _summary(fleet)])


def _table(fleet: DeployFleetResult) -> Table:
    from rich.table import Table
    from rich.text import Text

    action = fleet.action
    title = f"{action} {fleet.model}" + (f" {fleet.version}" if fleet.version and action == "deploy" else "")
    table = Table(title=title, title_justify="left")
    table.add_column("device", overflow="fold")
    table.add_column("result", no_wrap=True)
    columns = {
        "deploy": ("version", "previous", "sent", "time"),
        "status": ("active", "intact", "deployed", "versions"),
        "rollback": ("active", "previous"),
        "remove": ("removed", "active"),
    }[action]
    for column in columns:
        if column in ("sent", "time", "versions"):
            table.add_column(column, justify="right", no_wrap=True)
        elif column in ("version", "previous", "active"):
            table.add_column(column, no_wrap=True, min_width=12)
        else:
            table.add_column(column, overflow="fold")
    for r in fleet.results:
        cells: list[str | Text] = [r.device, Text(r.status.value, style=_STYLE.get(r.status.value, ""))]
        if action == "deploy":
            cells += [r.version or "", r.previous or "", _size(r.bytes_sent), f"{r.seconds:.1f} s"]
        elif action == "status":
            state = r.state
            active = next((v for v in state.versions if v.active), None) if state else None
            intact = "" if state is None or state.intact is None else ("yes" if state.intact else "NO")
            cells += [
                (state.current or "") if state else "",
                intact,
                (active.deployed_at or "") if active else "",
                str(len(state.versions)) if state else "",
            ]
        elif action == "rollback":
            cells += [r.version or "", r.previous or ""]
        else:
            cells += [" ".join(r.removed), r.version or ""]
        table.add_row(*cells)
    return table


def _notes(fleet: DeployFleetResult) -> list[str]:
    """Each device's reason and warnings, in full, under the table."""
    lines = []
    for r in fleet.results:
        where = r.device if r.device == r.destination else f"{r.device} ({r.destination})"
        for text in filter(None, [r.reason, *r.warnings]):
            lines.append(f"{where}: {text}")
        if r.health is not None and r.health.ok:
            lines.append(f"{where}: health check passed ({_health_text(r.health)})")
    if fleet.stop_reason:
        after = "the devices it had switched were switched back" if fleet.undone else "the switched devices keep it"
        lines.append(f"the rollout stopped: {fleet.stop_reason}; {after}")
    return lines


def _health_text(health: Health) -> str:
    parts = [f"{health.runtime} {health.runtime_version or ''}".strip()]
    if health.parity is not None:
        parts.append(
            "outputs bit-exact with this machine's"
            if health.parity.bit_exact
            else f"outputs within {health.tolerance:g} of this machine's"
        )
    if health.speedup is not None and health.previous_p50_ms is not None and health.p50_ms is not None:
        parts.append(
            f"p50 {health.p50_ms:.3g} ms against {health.previous_p50_ms:.3g} ms before "
            f"(speed ratio {health.speedup.ratio:.2f} [{health.speedup.ci_low:.2f}, {health.speedup.ci_high:.2f}])"
        )
    return "; ".join(parts) + f"; {health.seconds:.1f} s"


def _summary(fleet: DeployFleetResult) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in fleet.counts().items() if n)
    total = len(fleet.results)
    return f"{total} device{'s' if total != 1 else ''}: {counts} ({fleet.seconds:.1f} s)"


def _size(size: int) -> str:
    if not size:
        return "0"
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"
