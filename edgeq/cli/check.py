"""``edgeq check``: what runs where, whether it is intact and unchanged; for cron, alerting and Prometheus."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import cli
from ._devices import DeviceOptions, FleetProgress, device_options, raise_for_fleet
from ._options import TargetCache, targets_dir_option
from ._record import record_options, recorder

if TYPE_CHECKING:
    from ..check import FleetCheck
    from ..connection import Connection
    from ..devices import Device


@cli.command("check")
@device_options
@targets_dir_option
@click.option("--name", help="Check this model only [default: every model edgeq deployed on each device].")
@click.option(
    "--expect",
    metavar="VERSION",
    help="The version every device should run (a prefix) [default: the version most devices run].",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The model file of --name: with --samples, parity and latency are checked against the deploy-time baseline.",
)
@click.option(
    "--samples",
    type=click.Path(path_type=Path),
    help="Reference inputs (as for convert --calib) for the parity check of --model.",
)
@click.option(
    "--max-slowdown",
    "max_slowdown_pct",
    type=click.FloatRange(min=0),
    default=50.0,
    show_default=True,
    help="With --samples: a model this many percent slower than at its deploy (the whole 95 % interval past it) is a problem.",
)
@click.option(
    "--prometheus-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write the results for node_exporter's textfile collector: DIR/edgeq.prom (atomically).",
)
@click.option(
    "--on-device",
    is_flag=True,
    help="Also write each device's own edgeq.prom in its node_exporter folder (edgeq_prometheus_dir in the "
    "inventory, or the target's deploy.prometheus_dir).",
)
@click.option("--json", "as_json", is_flag=True, help="Print every device's check as JSON.")
@record_options
def check_cmd(
    devices: DeviceOptions,
    targets_dir: Path | None,
    name: str | None,
    expect: str | None,
    model_path: Path | None,
    samples: Path | None,
    max_slowdown_pct: float,
    prometheus_dir: Path | None,
    on_device: bool,
    as_json: bool,
    db: Path | None,
    no_record: bool,
) -> None:
    """Check every model on every device: version drift, changed files, changed runtimes, output and speed drift.

    For each model edgeq deployed: the active version against the fleet's
    expected one (--expect, else the version most devices run), the active
    file's sha256 against the deploy's (a file changed by hand is flagged,
    never repaired), and the runtime now against the one of the deploy's
    health check. With --model and --samples, the outputs are compared with
    this machine's and the latency with the deploy-time baseline.

    \b
    Exit codes (for cron and alerting): 0 all well; 17 problems found (one
    line each); 7-10 a device could not be checked; 12 mixed.

    \b
    Examples:
      edgeq check -i fleet.yml
      edgeq check -i fleet.yml --name digits --prometheus-dir /var/lib/node_exporter/textfile
      edgeq check --host pi@10.0.0.5 --name digits --model digits_int8.tflite --samples calib.npz
    """
    from ..check import check_fleet

    if samples is not None and model_path is None:
        raise click.UsageError("--samples needs --model (the model file the device should run)")
    if model_path is not None and name is None:
        name = model_path.stem
    targets = TargetCache(targets_dir)
    found = devices.resolve(target_loader=targets.load)
    model = None
    if model_path is not None:
        from ..deploy import prepare_model

        model = prepare_model(model_path, name)
    with contextlib.ExitStack() as stack:
        history = stack.enter_context(recorder(db, no_record))
        reference = None
        if samples is not None and model_path is not None:
            from ..bench import parity_samples

            reference = stack.enter_context(parity_samples(model_path, samples))
        with FleetProgress(len(found), action="check", enabled=not as_json) as ui:
            view, fleet = check_fleet(
                found,
                connect=devices.connector(ui),
                name=name,
                expect=expect,
                device_targets=targets.get,
                model=model,
                samples=reference,
                options=devices.fleet_options(),
                events=ui,
                max_slowdown_pct=max_slowdown_pct,
            )
            if on_device:
                _write_on_devices(found, view, devices, ui)
        if prometheus_dir is not None:
            from ..prom import fleet_registry, write_textfile

            path = write_textfile(str(prometheus_dir), fleet_registry(view))
            if not as_json:
                click.echo(f"wrote {path}", err=True)
        if as_json:
            import json

            from ..types import to_jsonable

            click.echo(
                json.dumps(
                    {
                        "ok": fleet.ok,
                        "versions": view.versions,
                        "expected": view.expected,
                        "unreachable": view.unreachable,
                        "devices": [
                            {
                                "device": n,
                                "status": r.status.value,
                                "code": r.code,
                                "kind": r.kind,
                                "reason": e or r.reason,
                                "check": to_jsonable(d),
                            }
                            for n, d, e, r in zip(view.names, view.devices, view.errors, fleet.results, strict=True)
                        ],
                    },
                    indent=2,
                    default=str,
                )
            )
        else:
            _render(view)
        if history is not None:
            history.record_check(view, fleet)
    raise_for_fleet(fleet)


def _render(view: FleetCheck) -> None:
    for model in sorted(view.versions):
        want = view.expected.get(model)
        click.echo(f"{model}: {view.summary(model)}" + (f" (expected {want})" if want else " (no majority version)"))
    for name, device, error in zip(view.names, view.devices, view.errors, strict=True):
        if device is None:
            click.echo(f"{name}: not checked: {error}")
            continue
        runtime = f"{device.runtime} {device.runtime_version}" if device.runtime else "no working runtime"
        if not device.models:
            click.echo(f"{name}: no model deployed by edgeq ({runtime})")
        for m in device.models:
            verdict = "ok" if m.ok else "PROBLEM"
            extra = ""
            if m.p50_ms is not None:
                extra = f", p50 {m.p50_ms:.3g} ms" + (
                    f" ({m.drift_ms:+.3g} ms since the deploy)" if m.drift_ms is not None else ""
                )
            if m.parity is not None:
                extra += ", outputs bit-exact" if m.parity.bit_exact else ", outputs differ"
            click.echo(f"{name}: {m.name} {m.version or '-'}: {verdict} ({runtime}{extra})")
            for problem in m.problems:
                click.echo(f"  problem: {problem}")


def _write_on_devices(found: tuple[Device, ...], view: FleetCheck, devices: DeviceOptions, ui: FleetProgress) -> None:
    """Each checked device's own edgeq.prom, put (atomically) into its node_exporter folder."""
    import posixpath

    from ..fleet import run_fleet
    from ..prom import PROM_FILE, device_registry, render
    from ..remote import put_bytes

    by_name = dict(zip(view.names, view.devices, strict=True))
    chosen = [d for d in found if d.prometheus_dir and by_name.get(d.name) is not None]
    for d in found:
        if not d.prometheus_dir:
            ui.note(
                f"Warning: {d.name}: no edgeq_prometheus_dir (inventory) nor deploy.prometheus_dir (target): not written"
            )

    def operation(conn: Connection, device: Device, _progress: object) -> str | None:
        data = render(device_registry(device.name, by_name[device.name]))
        put_bytes(conn, data, posixpath.join(device.prometheus_dir or ".", PROM_FILE))
        return device.prometheus_dir

    written = run_fleet(
        chosen, operation, connect=devices.connector(ui), options=devices.fleet_options(), action="prom"
    )
    for r in written.results:
        if r.error is not None:
            ui.note(f"Warning: {r.device}: edgeq.prom not written: {r.reason}")
