"""``edgeq ansible build`` and ``edgeq ansible playbook``: the edgeq.fleet collection, and a staged rollout with it."""

from __future__ import annotations

from pathlib import Path

import click

from . import cli


class CanaryType(click.ParamType):
    """``N`` hosts or ``P%`` of them: the first batch of the rollout."""

    name = "N|PCT"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        from ..ansible.playbook import parse_canary
        from ..errors import EdgeqError

        try:
            return parse_canary(value if isinstance(value, int) else str(value))
        except EdgeqError as exc:
            self.fail(exc.message, param, ctx)


@cli.group("ansible")
def ansible_group() -> None:
    """The edgeq.fleet Ansible collection: build it, and write a rollout playbook that uses it.

    \b
    The collection's modules (edgeq.fleet.model, edgeq.fleet.model_info,
    edgeq.fleet.probe) run on the Ansible controller and call this edgeq: the
    same device scripts, on-device layout and manifest as edgeq deploy, so
    either tool sees, checks and rolls back the other's deploys. Install edgeq
    in the Python that runs Ansible.
    """


@ansible_group.command("build")
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Folder to write the collection's .tar.gz to.",
)
def build_cmd(output_dir: Path) -> None:
    """Build the edgeq.fleet collection (runs ansible-galaxy collection build); prints the tarball's path.

    \b
    Then: ansible-galaxy collection install edgeq-fleet-VERSION.tar.gz
    """
    from ..ansible import build_collection

    tarball = build_collection(output_dir)
    click.echo(str(tarball))
    click.echo(f"install it with: ansible-galaxy collection install {tarball}", err=True)


@ansible_group.command("playbook")
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--name", help="Name of the model on the devices [default: the file name without .tflite].")
@click.option(
    "--canary",
    type=CanaryType(),
    default="1",
    show_default=True,
    help="The first batch: N hosts or a percentage (10%); the rest follow if it succeeds.",
)
@click.option(
    "--max-fail",
    "max_fail_percent",
    type=click.IntRange(0, 100),
    default=0,
    show_default=True,
    help="Stop the rollout when more than this percentage of a batch fails.",
)
@click.option(
    "--max-latency-ms",
    type=click.FloatRange(min=0, min_open=True),
    help="Health check: the probe's p50 must be at most this (a host may set edgeq_max_latency_ms) [default: no budget].",
)
@click.option("--hosts", default="all", show_default=True, help="The play's hosts: an Ansible host pattern.")
@click.option(
    "--runs", type=click.IntRange(min=1), default=50, show_default=True, help="Health check: timed probe runs."
)
@click.option(
    "--min-time",
    "min_time_s",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Health check: seconds of timed runs at least.",
)
@click.option(
    "--known-hosts",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A known_hosts file for the modules (module_defaults), read as edgeq --known-hosts reads it.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    help="Where to write the playbook ('-': stdout) [default: rollout-NAME.yml].",
)
def playbook_cmd(
    model: Path,
    name: str | None,
    canary: int | str,
    max_fail_percent: int,
    max_latency_ms: float | None,
    hosts: str,
    runs: int,
    min_time_s: float,
    known_hosts: Path | None,
    output: Path | None,
) -> None:
    """Write a playbook for a staged rollout of MODEL with the edgeq.fleet collection.

    A canary batch, then the rest (serial); max_fail_percentage; per host:
    deploy, then a health check with edgeq's probe on the active version; a
    host whose check fails is rolled back to the version it had and reported
    failed.

    \b
    Examples:
      edgeq ansible playbook digits_int8.tflite --name digits --canary 2 --max-fail 10
      ansible-playbook -i fleet.yml rollout-digits.yml
    """
    from ..ansible import render_playbook, rollout, write_playbook

    plan = rollout(
        model,
        name=name,
        hosts=hosts,
        canary=canary,
        max_fail_percent=max_fail_percent,
        max_latency_ms=max_latency_ms,
        probe_runs=runs,
        probe_min_time_s=min_time_s,
        known_hosts=known_hosts,
    )
    if output is not None and str(output) == "-":
        click.echo(render_playbook(plan), nl=False)
        return
    path = write_playbook(plan, output or Path(f"rollout-{plan.name}.yml"))
    click.echo(f"wrote {path}")
    click.echo(f"run it with: ansible-playbook -i INVENTORY {path}", err=True)
