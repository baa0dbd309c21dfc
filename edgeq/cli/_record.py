"""What the commands that record into the history share: ``--db PATH`` / ``--no-record`` and the recorder.

Usage in a command::

    @cli.command("probe")
    @record_options
    def probe_cmd(..., db: Path | None, no_record: bool):
        found = devices.resolve(...)
        with recorder(db, no_record) as history:    # an unusable database stops here, before any work
            fleet = probe_fleet(...)
            ...render the result...
            if history is not None:
                history.record_probe(fleet, model_file, devices=found)   # a failure here is a Warning
        raise_for_fleet(fleet)

See :mod:`edgeq.cli.history` for what a recording failure does, and why.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from ..errors import HistoryError
    from ..history import History

__all__ = ["db_option", "record_options", "recorder"]

_F = TypeVar("_F", bound=Callable[..., Any])

_DB_HELP = "The history database [default: $EDGEQ_DB, else $XDG_DATA_HOME/edgeq/history.sqlite, else ~/.local/share/edgeq/history.sqlite]."


def db_option(func: _F) -> _F:
    return click.option(
        "--db", type=click.Path(path_type=Path, dir_okay=False), metavar="PATH", default=None, help=_DB_HELP
    )(func)


def record_options(func: _F) -> _F:
    """``--db PATH`` and ``--no-record`` (also ``EDGEQ_NO_RECORD=1``): the command receives ``db`` and ``no_record``."""
    func = click.option(
        "--no-record",
        is_flag=True,
        envvar="EDGEQ_NO_RECORD",
        help="Do not record this run in the history database (also EDGEQ_NO_RECORD=1).",
    )(func)
    return db_option(func)


@contextlib.contextmanager
def recorder(db: Path | None, no_record: bool) -> Iterator[History | None]:
    """The history a command records into (None with ``--no-record``), opened now and closed afterwards.

    Opening raises :class:`~edgeq.errors.HistoryError` (exit 15) for a database that cannot be used; a
    failure to record later prints ``Warning: ...`` and leaves the command's result and exit code alone
    (see the module's documentation for why).
    """
    if no_record:
        yield None
        return
    from ..history import open_history

    history = open_history(db, on_error=_warn)
    try:
        yield history
    finally:
        history.close()


def _warn(error: HistoryError) -> None:
    click.echo(f"Warning: {error.message}; this run is not in the history", err=True)
