"""The ``edgeq`` command: a thin click layer over the edgeq API, and its one error boundary.

Only this package prints or exits. :class:`edgeq.errors.EdgeqError` becomes
``Error: ...`` (and ``Hint: ...``) on stderr with the error's exit code;
anything else is a bug and keeps its traceback. ``--debug`` (or
``EDGEQ_DEBUG=1``) shows the traceback of user errors too. Ctrl-C is
``Aborted.`` and exit 130 wherever it lands, start-up included (the
``edgeq`` command enters through :func:`edgeq.__main__.main`, which guards
the import of this package too). Commands on devices turn their fleet's
outcome into one exit code with :func:`edgeq.cli._devices.raise_for_fleet`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

import click

from .. import __version__
from ..errors import EdgeqError

__all__ = ["cli", "main"]


class EdgeqGroup(click.Group):
    """The edgeq group: subcommands imported on demand, and the one error boundary.

    Each command module registers its commands on ``cli`` when imported;
    ``COMMAND_MODULES`` says which module holds which command, so a run of
    ``edgeq deploy`` imports only what deploy needs (click's documented lazy
    loading). ``--help`` imports them all to list them.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMAND_MODULES:
            importlib.import_module(f"{__name__}.{COMMAND_MODULES[name]}")
        return super().get_command(ctx, name)

    def make_context(self, info_name, args, parent=None, **extra):
        # parsing the group's options (``--help`` imports every command module): click would say
        # "Aborted!" and exit 1 on Ctrl-C here
        try:
            return super().make_context(info_name, args, parent, **extra)
        except KeyboardInterrupt:
            raise aborted() from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgeqError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"Hint: {exc.hint}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            raise aborted() from None


def aborted() -> click.exceptions.Exit:
    """What Ctrl-C becomes: one line on stderr, and the exit that click passes through (130 = 128 + SIGINT)."""
    click.echo("Aborted.", err=True)
    return click.exceptions.Exit(130)


# command name -> module of edgeq.cli that defines it
COMMAND_MODULES = {
    "convert": "convert",
    "inspect": "convert",
    "targets": "targets",
    "deploy": "deploy",
    "status": "deploy",
    "rollback": "deploy",
    "remove": "deploy",
    "probe": "probe",
    "bench": "probe",
    "tune": "tune",
    "doctor": "doctor",
    "provision": "provision",
    "check": "check",
    "devices": "devices",
    "ansible": "ansible",
    "history": "history",
}


@click.group(cls=EdgeqGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgeq")
@click.option("--debug", is_flag=True, envvar="EDGEQ_DEBUG", help="Show tracebacks and the converter's log.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Quantize TensorFlow models to TFLite, describe edge targets, deploy and measure on devices.

    \b
    Exit codes: 0 ok, 1 error, 2 usage, 3 target file, 4 calibration data,
    5 model, 6 conversion, 7 device unreachable, 8 authentication,
    9 host key, 10 remote command, 11 probe output, 12 devices failed in
    different ways, 13 no candidate within the accuracy budget (tune),
    14 a device is not ready (edgeq doctor's checks), 15 the history database
    is unusable, 16 a deployed model failed its health check (rolled back),
    17 edgeq check found problems, 130 interrupted (Ctrl-C).
    \b
    Commands on devices exit 0 when every device succeeded; else one device
    exits with its failure's code (7-11, or 1: model absent or damaged on
    the device); a fleet whose failures all have the same code exits with
    that code, even if other devices succeeded; failures with different
    codes exit 12 (devices skipped after a failed canary count as 12).
    --json gives each device's code and kind. A bug keeps its traceback.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    startup_done = ctx.obj.get("startup_done")
    if startup_done is not None:  # the entry point's (edgeq/__main__.py); the command's module is imported now
        startup_done()


def main(startup_done: Callable[[], None] | None = None) -> None:
    """Run the ``edgeq`` command (:func:`edgeq.__main__.main` is the entry point: it guards this import too).

    ``startup_done`` is called once the command line is parsed and the command's module imported, just
    before the command runs.
    """
    try:
        cli.main(prog_name="edgeq", obj={"startup_done": startup_done})
    except KeyboardInterrupt:  # between click's own handlers
        click.echo("Aborted.", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
