"""``edgeq history``: every recorded measurement and deploy as a table, JSON, CSV or a figure over time.

What the recording commands share (``--db`` / ``--no-record`` and the recorder) is in
:mod:`edgeq.cli._record`.

**What a recording failure does.** The database is opened, and checked, when
the command starts: a file that is corrupt, another program's or from a
newer edgeq stops the command there with one ``Error:`` (exit 15) before any
device is touched, so nothing is lost and the user chooses (``--db`` for
another file, ``--no-record``). Once the work is done, a failure to write
its records (disk full, the database locked by another process for longer
than 30 s) is a ``Warning:`` on stderr and the command keeps its result and
its own exit code: the devices were deployed or measured whatever the
history says, and a deploy that exits non-zero because of a bookkeeping file
would make rollout scripts and CI retry or roll back work that succeeded.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import cli
from ._record import db_option

if TYPE_CHECKING:
    from ..history import History, Record

__all__ = ["SinceType", "history_cmd"]

# edgeq.history.COMMANDS (a test keeps them equal): importing the library is left to the command's run
COMMANDS = ("probe", "bench", "tune", "deploy", "rollback", "check")

_F = TypeVar("_F", bound=Callable[..., Any])


class SinceType(click.ParamType):
    """``7d``, ``24h``, ``30m``, ``2026-11-01``, ``2026-11-01T10:00``: a bad value is a usage error (exit 2)."""

    name = "TIME"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        from ..history import parse_since

        try:
            return parse_since(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@cli.command("history")
@click.option("--device", "devices", multiple=True, metavar="DEVICE", help="Only this device (repeatable).")
@click.option(
    "--model",
    metavar="MODEL",
    help="Only this model: its name (a glob such as 'digits*' works), or 4+ hex digits of its sha256 / version.",
)
@click.option("--since", type=SinceType(), help="Only records since then: 7d, 24h, 30m, 2026-11-01, 2026-11-01T10:00.")
@click.option(
    "--command",
    "commands",
    multiple=True,
    type=click.Choice(COMMANDS),
    help="Only records of this command (repeatable).",
)
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Only the N most recent records.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as a JSON array (every field, raw runs too).")
@click.option("--csv", "as_csv", is_flag=True, help="Print the records as CSV with a header.")
@click.option(
    "--plot",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="OUT.png",
    help="Draw the p50 latency of one model over time per device, deploys and rollbacks marked, into OUT.png.",
)
@db_option
def history_cmd(
    devices: tuple[str, ...],
    model: str | None,
    since: datetime | None,
    commands: tuple[str, ...],
    limit: int | None,
    as_json: bool,
    as_csv: bool,
    plot: Path | None,
    db: Path | None,
) -> None:
    """Show the history of measurements and deploys: every probe, bench, tune,
    deploy, rollback and check result that edgeq recorded on this machine.

    Each record holds the device, target, runtime and version, the model's
    name and hash, the mode, threads, the latency summary and every timed
    run, parity, the versions deployed and rolled back, and the time.
    --plot draws a model's p50 latency over time, one line per device and
    model version, with deploys and rollbacks as vertical lines and runtime
    changes written beside the points: a regression after a runtime upgrade
    shows as a step. Times are local in the table and the figure, UTC (ISO
    8601) in --json and --csv.

    \b
    Examples:
      edgeq history --since 7d
      edgeq history --model digits_int8 --device pi-1 --json
      edgeq history --model 3f2a9c0d --plot digits.png
      edgeq history --command bench --csv > bench.csv
    """
    from ..history import default_db_path, open_history

    if as_json and as_csv:
        raise click.UsageError("--json and --csv print the records in two ways: choose one")
    if plot is not None and not plot.parent.is_dir():
        raise click.BadParameter(f"the folder {plot.parent} does not exist", param_hint="--plot")
    path = db.expanduser() if db is not None else default_db_path()
    if not path.exists():
        message = f"no records: {path} does not exist yet (probe, bench, tune, deploy and rollback record into it)"
        click.echo(message, err=as_json or as_csv)  # stdout keeps to the format asked for
        _print(as_json, as_csv, ())
        return
    with open_history(path) as history:
        records = history.query(device=devices or None, model=model, since=since, command=commands or None, limit=limit)
        if plot is not None:
            _plot(history, records, plot, devices, since, to_stderr=as_json or as_csv)
    if not records:
        filters = _describe_filters(devices, model, since, commands)
        click.echo(f"no records in {path}" + (f" match {filters}" if filters else " yet"), err=as_json or as_csv)
    if as_json or as_csv:
        _print(as_json, as_csv, records)
    elif plot is None and records:
        _print_table(records, path)


def _plot(
    history: History,
    records: Sequence[Record],
    out: Path,
    devices: tuple[str, ...],
    since: datetime | None,
    *,
    to_stderr: bool,
) -> None:
    from ..errors import EdgeqError
    from ..history import plot_history

    measured = [r for r in records if r.p50_ms is not None]
    if not measured:
        if records:
            click.echo("nothing to plot: none of these records has a latency", err=to_stderr)
        return
    models = sorted({r.model_name or "?" for r in measured})
    if len(models) > 1:
        shown = ", ".join(models[:8]) + (", ..." if len(models) > 8 else "")
        raise click.UsageError(
            f"--plot draws one model; these records hold {len(models)} ({shown}): choose one with --model"
        )
    events = history.deploys_for(measured, device=devices or None, since=since)
    try:
        plot_history(measured, out, events=events, title=f"{models[0]}: p50 latency per device over time")
    except OSError as exc:
        raise EdgeqError(f"{out}: cannot write the figure ({exc.strerror or exc})") from exc
    lines = {(r.device, r.variant, r.model_version) for r in measured}
    click.echo(
        f"wrote {out}: {len(measured)} measurements of {models[0]} on {len({r.device for r in measured})} device(s), "
        f"{len(lines)} line(s), {len({(e.run_id, e.command, e.version) for e in events})} deploy(s) and rollback(s) marked",
        err=to_stderr,
    )


def _describe_filters(
    devices: tuple[str, ...], model: str | None, since: datetime | None, commands: tuple[str, ...]
) -> str:
    parts = [f"--device {d}" for d in devices] + [f"--command {c}" for c in commands]
    if model:
        parts.append(f"--model {model}")
    if since is not None:
        parts.append(f"--since {since.astimezone():%Y-%m-%d %H:%M:%S}")
    return " ".join(parts)


def _print(as_json: bool, as_csv: bool, records: Sequence[Record]) -> None:
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in records], indent=2))
    elif as_csv:
        click.echo(_csv(records), nl=False)


def _csv(records: Sequence[Record]) -> str:
    from ..history import COLUMNS

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for record in records:
        writer.writerow([_csv_cell(value) for value in record.to_dict().values()])
    return buffer.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


_RIGHT = ("threads", "p50 ms", "p90 ms", "runs")
_NO_WRAP = ("time", "command", "status", "threads", "p50 ms", "p90 ms", "runs", "parity")


def _print_table(records: Sequence[Record], path: Path) -> None:
    """One row per record; a column no record fills is left out (a deploy history has no latencies)."""
    from rich.table import Table
    from rich.text import Text

    from ._output import print_renderables

    rows = [_row(r) for r in records]
    names = [name for name in rows[0] if name in _ALWAYS or any(row[name] for row in rows)]
    table = Table(title=f"edgeq history: {path}", title_justify="left")
    for name in names:
        table.add_column(name, justify="right" if name in _RIGHT else "left", no_wrap=name in _NO_WRAP)
    for row in rows:
        table.add_row(*(Text(row[name]) for name in names))  # Text: names and reasons are never read as markup
    devices = len({r.device for r in records})
    print_renderables([table, Text(f"{len(records)} record(s), {devices} device(s)")])


_ALWAYS = ("time", "command", "device", "status")


def _row(r: Record) -> dict[str, str]:
    runtime = f"{r.runtime} {r.runtime_version or ''}".strip() + (" +XNNPACK" if r.xnnpack else "") if r.runtime else ""
    return {
        "time": f"{r.time.astimezone():%Y-%m-%d %H:%M}",
        "command": r.command,
        "device": r.device,
        "status": r.status,
        "model": " ".join(part for part in (r.model_name, (r.model_version or "")[:8]) if part),
        "mode": r.variant or "",
        "runtime": runtime,
        "threads": "" if r.threads is None else str(r.threads),
        "p50 ms": _ms(r.p50_ms),
        "p90 ms": _ms(r.p90_ms),
        "runs": "" if r.count is None else str(r.count),
        "parity": "" if r.parity_bit_exact is None else ("bit-exact" if r.parity_bit_exact else "differs"),
        "note": _note(r),
    }


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _note(r: Record) -> str:
    if r.status not in ("ok", "unchanged"):
        return (f"{r.error_kind}: " if r.error_kind else "") + (r.reason or "")[:80]
    if r.command in ("deploy", "rollback"):
        return f"{(r.previous_version or 'none')[:8]} -> {(r.version or 'none')[:8]}"
    if r.command == "tune" and r.details.get("chosen"):
        return "chosen"
    return ""
