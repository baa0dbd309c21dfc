"""``python -m edgeq`` and the ``edgeq`` command's entry point: the CLI, with Ctrl-C kept to one line.

Nothing of edgeq is imported until :func:`main` runs, so that an interrupt
while the CLI itself is being imported (click, the command modules) is
caught here too: ``Aborted.`` on stderr and exit 130, never a traceback.

The garbage collector is off while the CLI starts up, and the objects alive
at the end are frozen before the interpreter's final collection: start-up
allocates hundreds of thousands of long-lived objects (modules, classes,
paramiko and rich) and no garbage, and each collection walks all of them.
Measured with scripts/bench_deploy.py: about 35 ms of a one-device
``edgeq deploy`` (~8%). The command itself runs with the collector on.
"""

import gc
import sys


def main() -> None:
    """Run the ``edgeq`` command."""
    gc.disable()
    try:
        from .cli import main as run_cli

        run_cli(startup_done=_collect_from_now_on)
    except KeyboardInterrupt:
        sys.stderr.write("Aborted.\n")
        sys.stderr.flush()
        sys.exit(130)
    finally:
        gc.freeze()  # the interpreter's final collection need not walk what is alive now


def _collect_from_now_on() -> None:
    """The command starts: what start-up made stays (frozen, never walked again); collect what comes next."""
    gc.freeze()
    gc.enable()


if __name__ == "__main__":
    main()
