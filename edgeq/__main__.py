"""``python -m edgeq``: the same as the ``edgeq`` command."""

from .cli import main

if __name__ == "__main__":
    main()
