"""Command-line options shared by several commands, in one module that imports no command module.

``targets_dir_option`` and ``TargetName`` (every command that resolves a
target), ``timing_options`` and what becomes of them (probe, bench, tune),
``TargetCache`` (targets loaded once per command), ``calibration_options``
and what becomes of them (convert and tune). Nothing here imports the
library at import time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..runtimes import RUNTIMES

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from ..calibration import ImageOptions
    from ..probe import ProbeOptions
    from ..targets import Target
    from ._devices import DeviceOptions

__all__ = [
    "PIXEL_RANGES",
    "RUNTIMES",
    "FloatList",
    "TargetCache",
    "TargetName",
    "calibration_options",
    "image_options",
    "probe_options",
    "probe_timeout",
    "targets_dir_option",
    "timing_options",
]

PIXEL_RANGES = {"0,1": (0.0, 1.0), "-1,1": (-1.0, 1.0), "0,255": (0.0, 255.0)}

_F = TypeVar("_F", bound=Callable[..., Any])


# --------------------------------------------------------------------------- values


class FloatList(click.ParamType):
    """Comma-separated numbers, e.g. ``0.485,0.456,0.406`` (--mean, --std of convert and tune)."""

    name = "FLOATS"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        try:
            return tuple(float(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"expected comma-separated numbers, got {value!r}", param, ctx)


# --------------------------------------------------------------------------- targets


class TargetName(click.ParamType):
    """A target name or a path to a target file; completes the names of the visible targets.

    The value is resolved by the command (``load_target``), after
    ``--targets-dir`` is known, so an unknown name is a TargetFileError
    (exit 3) with the closest name, like every other target problem.
    """

    name = "TARGET"

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        from ..errors import EdgeqError
        from ..targets import TargetSearchPath

        try:
            names = TargetSearchPath.default(ctx.params.get("targets_dir")).entries()
        except EdgeqError:
            return []
        return [CompletionItem(name) for name in names if name.startswith(incomplete)]


def targets_dir_option(func: _F) -> _F:
    """``--targets-dir DIR``: for every command that resolves a target name."""
    return click.option(
        "--targets-dir",
        type=click.Path(path_type=Path, exists=True, file_okay=False),
        default=None,
        help="Folder of target files searched before EDGEQ_TARGETS_PATH, the user folder and the bundled targets.",
    )(func)


class TargetCache:
    """Targets by name, loaded once per command (``--targets-dir`` first)."""

    def __init__(self, targets_dir: Path | None):
        self.targets_dir = targets_dir
        self._cache: dict[str, Target] = {}

    def load(self, name: str) -> Target:
        """The target ``name`` (a TargetFileError, exit 3, when there is none)."""
        if name not in self._cache:
            from ..targets import load_target

            self._cache[name] = load_target(name, targets_dir=self.targets_dir)
        return self._cache[name]

    def get(self, name: str | None) -> Target | None:
        """The target ``name``; None for no name (a device without a target)."""
        return self.load(name) if name else None


# --------------------------------------------------------------------------- calibration data


def calibration_options(*, held_out: str, seed: str) -> Callable[[_F], _F]:
    """How calibration data is split and read (convert, tune): --calib-samples, --seed, --pixel-range, --mean, --std.

    Both commands split the data alike (:func:`edgeq.calibration.split_samples`)
    and read image folders alike; ``held_out`` says what the command does with
    the held-out samples, ``seed`` what its seed shuffles.
    """
    options = (
        click.option(
            "--calib-samples",
            type=click.IntRange(min=1),
            default=200,
            show_default=True,
            help=f"How many samples calibrate; the rest (at least a fifth) are held out {held_out}.",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help=f"Seed of {seed}."),
        click.option(
            "--pixel-range",
            type=click.Choice(list(PIXEL_RANGES)),
            default="0,1",
            show_default=True,
            help="Image folders: range that pixel values 0..255 are mapped to.",
        ),
        click.option(
            "--mean",
            type=FloatList(),
            default=None,
            help="Image folders: per-channel mean subtracted after --pixel-range (e.g. 0.485,0.456,0.406).",
        ),
        click.option(
            "--std", type=FloatList(), default=None, help="Image folders: per-channel std divided by after --mean."
        ),
    )

    def decorate(func: _F) -> _F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def image_options(pixel_range: str, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> ImageOptions:
    """The image values of :func:`calibration_options` as :class:`edgeq.calibration.ImageOptions`."""
    from ..calibration import ImageOptions

    return ImageOptions(pixel_range=PIXEL_RANGES[pixel_range], mean=mean, std=std)


# --------------------------------------------------------------------------- probe timing


def timing_options(func: _F) -> _F:
    """The probe's timing options (probe, bench, tune): runs, minimum time, warm-up, threads, runtime, timeout."""
    for option in reversed(
        (
            click.option(
                "--runs",
                type=click.IntRange(min=1),
                default=50,
                show_default=True,
                help="Timed runs: at least this many...",
            ),
            click.option(
                "--min-time",
                "min_s",
                type=click.FloatRange(min=0),
                default=1.0,
                show_default=True,
                help="...and at least this many seconds of them.",
            ),
            click.option(
                "--warmup-runs",
                type=click.IntRange(min=0),
                default=5,
                show_default=True,
                help="Untimed runs first: at least this many...",
            ),
            click.option(
                "--warmup-time",
                "warmup_min_s",
                type=click.FloatRange(min=0),
                default=0.5,
                show_default=True,
                help="...and at least this many seconds.",
            ),
            click.option(
                "--threads",
                type=click.IntRange(min=1),
                default=None,
                help="Interpreter threads [default: the target's default_threads, else all cores].",
            ),
            click.option(
                "--runtime",
                type=click.Choice(RUNTIMES),
                default=None,
                help="Force a runtime [default: the first installed in the target's order of preference].",
            ),
            click.option(
                "--probe-timeout",
                "timeout_s",
                type=click.FloatRange(min=1),
                default=300.0,
                show_default=True,
                help="Seconds one probe may run on the device; then it is stopped there.",
            ),
        )
    ):
        func = option(func)
    return func


def probe_options(
    runs: int, min_s: float, warmup_runs: int, warmup_min_s: float, runtime: str | None, timeout_s: float
) -> ProbeOptions:
    """The values of :func:`timing_options` as :class:`edgeq.probe.ProbeOptions`."""
    from ..probe import ProbeOptions

    return ProbeOptions(
        runs=runs, min_s=min_s, warmup_runs=warmup_runs, warmup_min_s=warmup_min_s, runtime=runtime, timeout_s=timeout_s
    )


def probe_timeout(timeout_s: float, devices: DeviceOptions) -> float:
    """--probe-timeout when it was given; else its default, raised to --command-timeout (a probe may run as long as any command)."""
    source = click.get_current_context().get_parameter_source("timeout_s")
    if source not in (None, click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP):
        return timeout_s
    return max(timeout_s, devices.command_timeout_s)


# --------------------------------------------------------------------------- the device checks


def skip_checks_option(func: _F) -> _F:
    """``--skip-checks``: do not run edgeq doctor's checks on each device before the work."""
    return click.option(
        "--skip-checks",
        is_flag=True,
        help="Do not check each device first (edgeq doctor's checks: target, disk, runtime, the model's kernels).",
    )(func)


class CountOrPercent(click.ParamType):
    """``N`` devices or ``PCT%`` of the fleet (at least one device when PCT > 0)."""

    name = "N|PCT%"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        number = text[:-1] if text.endswith("%") else text
        try:
            amount = float(number)
        except ValueError:
            self.fail(f"{text!r} is neither a count nor a percentage (e.g. 2 or 10%)", param, ctx)
        if amount < 0 or (text.endswith("%") and amount > 100) or (not text.endswith("%") and amount != int(amount)):
            self.fail(f"{text!r}: give a whole number of devices or a percentage from 0% to 100%", param, ctx)
        return text

    @staticmethod
    def resolve(text: str | None, fleet: int) -> int:
        if not text:
            return 0
        if text.endswith("%"):
            pct = float(text[:-1])
            return 0 if pct == 0 else max(1, math.ceil(fleet * pct / 100.0))
        return int(float(text))
