"""Console helpers shared by the commands: stdout rendering and progress on stderr."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import click
from rich.console import Console


def out_console() -> Console:
    console = Console(soft_wrap=False, highlight=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = 140  # piped or captured: a file is read later, wide tables should not fold
    return console


def print_renderables(parts: list[Any]) -> None:
    console = out_console()
    for part in parts:
        console.print(part)


@contextlib.contextmanager
def progress_reporter(enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """Yield ``say(message)`` showing the current step on stderr.

    It writes to a duplicate of the original stderr, so progress stays visible
    while TensorFlow's own output on fd 2 is being captured. On a terminal it is
    a spinner; elsewhere each step is one line.
    """
    if not enabled:
        yield lambda _msg: None
        return
    stream = os.fdopen(os.dup(2), "w", buffering=1)
    console = Console(file=stream, stderr=True, highlight=False)
    try:
        if console.is_terminal:
            with console.status("starting") as status:
                yield lambda msg: status.update(msg)
        else:
            yield lambda msg: click.echo(f"edgeq: {msg}", file=stream)
    finally:
        stream.close()
