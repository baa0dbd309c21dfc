"""Fill a wheel cache for `edgeq provision --offline` with the wheels of given device kinds (the host needs PyPI once).

    .venv/bin/python scripts/fetch_device_wheels.py [--cache DIR] [KIND ...]

A KIND is ARCH:PYTHON:GLIBC:NUMPY (NUMPY "-" for none), e.g. aarch64:3.11.2:2.36:1.24.2 (Raspberry Pi OS
bookworm 64-bit with apt's numpy). Both runtimes are fetched for each kind, exactly as `edgeq provision`
resolves them, so a later --offline run finds every file it asks for. scripts/bootstrap.sh runs it for
the test devices (the suite never reaches PyPI itself).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeq.errors import EdgeqError
from edgeq.provision import PROVISIONABLE, DeviceRuntime, resolve_wheels, wheel_cache

TEST_KINDS = (
    "x86_64:3.11.2:2.36:-",  # the sshd test devices: Debian's /usr/bin/python3, no numpy
    "aarch64:3.11.2:2.36:1.24.2",  # the emulated Raspberry Pi OS 64-bit devices (apt numpy)
    "aarch64:3.11.2:2.36:2.2.6",  # the emulated Pi 5 image, where ai-edge-litert brought NumPy 2
)


def kind(text: str) -> DeviceRuntime:
    arch, python, glibc, numpy = text.split(":")
    return DeviceRuntime(
        python=python,
        implementation="cpython",
        machine=arch,
        bits=32 if arch.startswith("armv") else 64,
        libc=("glibc", glibc),
        numpy=None if numpy == "-" else numpy,
        env="",
        manifest=None,
        free_mb=None,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="the wheel cache [default: edgeq's]")
    parser.add_argument("kinds", nargs="*", default=list(TEST_KINDS), help="ARCH:PYTHON:GLIBC:NUMPY")
    args = parser.parse_args(argv)
    failed = 0
    for text in args.kinds:
        info = kind(text)
        for runtime in PROVISIONABLE:
            if runtime == "ai-edge-litert" and info.wheel_arch == "armv7l":
                continue
            try:
                wheels = resolve_wheels(runtime, info, cache=args.cache or wheel_cache())
            except EdgeqError as exc:
                print(f"{text} {runtime}: {exc.message}", file=sys.stderr)
                failed += 1
                continue
            print(f"{text} {runtime} {wheels.version}: {', '.join(wheels.names)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
