"""``edgeq targets list | show | validate``: the target registry on the command line (``detect``: cli/detect.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import cli
from ._options import TargetName, targets_dir_option
from ._output import print_renderables

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

    from ..targets import Target

__all__ = ["targets_group"]


class _TargetsGroup(click.Group):
    """``edgeq targets``: ``detect`` (which needs the device options) is imported only when it is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | {"detect"})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == "detect" and name not in self.commands:
            from . import detect  # noqa: F401 - registers `targets detect` on this group

        return super().get_command(ctx, name)


@cli.group("targets", cls=_TargetsGroup)
def targets_group() -> None:
    """Describe edge devices: list, show and validate target files.

    \b
    A target is a kind of device: its CPU, TFLite runtimes, quantization
    constraints and deploy defaults, one TOML file each. A name is looked up in:
      1. --targets-dir DIR
      2. EDGEQ_TARGETS_PATH (folders separated by ':', ';' on Windows)
      3. $XDG_CONFIG_HOME/edgeq/targets (default ~/.config/edgeq/targets)
      4. the targets bundled with edgeq
    The first file named NAME.toml wins, so your own rpi4b.toml overrides
    the bundled one. A path to a .toml file is used as it is.
    """


@targets_group.command("list")
@targets_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (schema in targets/README.md).")
def list_cmd(targets_dir: Path | None, as_json: bool) -> None:
    """List the targets visible from here, one per line."""
    from ..targets import SCHEMA_VERSION, TargetSearchPath, list_targets

    search = TargetSearchPath.default(targets_dir)
    found = list_targets(search_path=search)
    if as_json:
        payload = {
            "schema_version": SCHEMA_VERSION,
            "search_path": [{"path": str(d.path), "origin": d.origin, "exists": d.path.is_dir()} for d in search.dirs],
            "targets": [t.to_dict() for t in found],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    print_renderables([_list_table(found)])


@targets_group.command("show")
@click.argument("target", type=TargetName())
@targets_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (schema in targets/README.md).")
def show_cmd(target: str, targets_dir: Path | None, as_json: bool) -> None:
    """Show one target: TARGET is a name or a path to a .toml file."""
    from ..targets import SCHEMA_VERSION, load_target

    loaded = load_target(target, targets_dir=targets_dir)
    if as_json:
        click.echo(json.dumps({"schema_version": SCHEMA_VERSION, "target": loaded.to_dict()}, indent=2))
        return
    print_renderables(_show_parts(loaded))


@targets_group.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@targets_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def validate_cmd(paths: tuple[Path, ...], targets_dir: Path | None, as_json: bool) -> None:
    """Check target files and report each one.

    PATH is a .toml file or a folder of them. Parents named by `extends` are
    looked up as for any target name. Exits 0 when all files are valid, 3
    when any is not.
    """
    from ..errors import TargetFileError
    from ..targets import SCHEMA_VERSION, TargetSearchPath, load_target

    search = TargetSearchPath.default(targets_dir)
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.toml")) if path.is_dir() else [path])
    results: list[dict[str, str | bool | None]] = []
    for file in files:
        try:
            loaded = load_target(file, search_path=search)
        except TargetFileError as exc:
            results.append({"path": str(file), "valid": False, "name": None, "error": exc.message, "hint": exc.hint})
        else:
            results.append({"path": str(file), "valid": True, "name": loaded.name, "error": None, "hint": None})
    invalid = [r for r in results if not r["valid"]]
    if as_json:
        click.echo(
            json.dumps(
                {"schema_version": SCHEMA_VERSION, "valid": not invalid and bool(results), "files": results}, indent=2
            )
        )
    else:
        for r in results:
            if r["valid"]:
                click.echo(f"ok       {r['path']} ({r['name']})")
            else:
                click.echo(f"invalid  {r['error']}")
                if r["hint"]:
                    click.echo(f"         hint: {r['hint']}")
    if not results:
        raise TargetFileError(f"no .toml files in {', '.join(str(p) for p in paths)}")
    if invalid:
        raise TargetFileError(f"{len(invalid)} of {len(results)} target files are invalid")


# --------------------------------------------------------------------------- rendering


def _home(path: str) -> str:
    home = str(Path.home())
    return "~" + path[len(home) :] if path.startswith(home + os.sep) else path


def _where(t: Target) -> str:
    return "bundled" if t.origin == "bundled" else f"{t.origin}: {_home(t.source)}"


def _cpu(t: Target) -> str:
    clock = f" {t.cpu.max_clock_mhz / 1000:g}GHz" if t.cpu.max_clock_mhz else ""
    return f"{t.cpu.model}{clock}"


def _unknown(value: object, unit: str = "") -> str:
    return "unknown" if value is None else f"{value}{unit}"


def _runtime(t: Target, runtime: str) -> str:
    version = t.runtime_versions.get(runtime)
    return f"{runtime} (up to {version})" if version else runtime


def _list_table(found: tuple[Target, ...]) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("name", no_wrap=True)
    table.add_column("arch", no_wrap=True)
    table.add_column("cpu")
    table.add_column("cores", no_wrap=True, justify="right")
    table.add_column("runtimes")
    table.add_column("source", no_wrap=True)
    for t in found:
        table.add_row(
            t.name, t.arch, _cpu(t), _unknown(t.cpu.cores, "").replace("unknown", "?"), " ".join(t.runtimes), _where(t)
        )
    return table


def _show_parts(t: Target) -> list[RenderableType]:
    from rich.table import Table
    from rich.text import Text

    q, d = t.quantization, t.deploy
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    source = _where(t) if t.origin != "bundled" else f"bundled ({t.source})"
    if t.extends:
        source += f", extends {t.extends}"
    rows = [
        ("source", source),
        ("arch", t.arch),
        ("cpu", ", ".join(p for p in (t.cpu.model, t.cpu.soc, t.cpu.isa) if p)),
        ("cores", _unknown(t.cpu.cores)),
        ("max clock", _unknown(t.cpu.max_clock_mhz, " MHz")),
        ("features", ", ".join(t.cpu.features) or "-"),
        ("memory", _unknown(t.memory_mb, " MiB")),
        (
            "power",
            f"{t.power_w:g} W typical under load (energy figures are estimates from it)"
            if t.power_w is not None
            else "unknown",
        ),
        ("os", t.os),
        ("python", t.python),
        ("runtimes", ", ".join(_runtime(t, r) for r in t.runtimes)),
        ("threads", str(t.default_threads)),
        ("delegates", ", ".join(t.delegates) or "-"),
        ("modes", ", ".join(q.modes)),
        ("I/O types", ", ".join(q.io_types)),
        ("per-channel", "yes" if q.per_channel else "no (per-tensor weights)"),
        (
            "deploy",
            "local: this machine, no SSH"
            if d.transport == "local"
            else f"ssh, user {d.user or '(from inventory / SSH config)'}, port {d.port}",
        ),
        ("remote dir", d.remote_dir),
        ("keep", f"{d.keep_versions} versions"),
    ]
    if t.auto:
        rows.append(("auto", ", ".join(t.auto) + " (read from this machine)"))
    for key, value in rows:
        grid.add_row(key, Text(value))
    parts: list[RenderableType] = [Text(f"{t.name}: {t.description}", style="bold"), grid]
    if q.notes:
        notes = Table.grid(padding=(0, 1))
        notes.add_column()
        notes.add_column()
        for note in q.notes:
            notes.add_row("-", Text(note))
        parts.extend([Text("notes", style="bold"), notes])
    return parts
