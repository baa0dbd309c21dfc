"""``python -m edgeq`` and the ``edgeq`` command's entry point: the CLI, with Ctrl-C kept to one line.

Nothing of edgeq is imported until :func:`main` runs, so that an interrupt
while the CLI itself is being imported (click, the command modules) is
caught here too: ``Aborted.`` on stderr and exit 130, never a traceback.
"""

import sys


def main() -> None:
    """Run the ``edgeq`` command."""
    try:
        from .cli import main as run_cli

        run_cli()
    except KeyboardInterrupt:
        sys.stderr.write("Aborted.\n")
        sys.stderr.flush()
        sys.exit(130)


if __name__ == "__main__":
    main()
