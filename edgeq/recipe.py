"""Recipes: how a model was quantized, saved beside it as JSON so that the same bytes can be made again.

A recipe holds the mode, the per-layer overrides (by tensor-name pattern or op
type), the calibration settings and seed, the engine and the tool versions.
``edgeq convert MODEL --recipe OUT.recipe.json --calib DATA`` reproduces the
model. Reading is strict: an unknown key is an error naming the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConversionError
from .types import IOType, QuantMode

__all__ = ["RECIPE_VERSION", "CalibrationSettings", "Engine", "Override", "Precision", "Recipe", "recipe_path_for"]

RECIPE_VERSION = 1


class Precision(str, enum.Enum):
    """What an override makes of the layers it selects."""

    FLOAT = "float"  # kept in float32
    INT16 = "int16"  # int16 activations, int8 weights
    INT8 = "int8"  # int8 activations and weights
    INT4 = "int4"  # int4 weights, int8 activations (CONV_2D and FULLY_CONNECTED)


class Engine(str, enum.Enum):
    """Which tool quantizes: the TF converter (Keras/SavedModel, plain modes) or litert-quantizer (the rest)."""

    TFLITE_CONVERTER = "tflite-converter"
    LITERT_QUANTIZER = "litert-quantizer"


@dataclasses.dataclass(frozen=True)
class Override:
    """Layers selected by a regex on their name (output tensor names), an op type, or both."""

    precision: Precision
    layer: str | None = None
    op: str | None = None

    def describe(self) -> str:
        what = " and ".join(
            x
            for x in (f"layers matching {self.layer!r}" if self.layer else "", f"{self.op} ops" if self.op else "")
            if x
        )
        return f"{what}: {self.precision.value}"


@dataclasses.dataclass(frozen=True)
class CalibrationSettings:
    samples: int = 200
    seed: int = 0
    pixel_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Recipe:
    mode: QuantMode
    engine: Engine
    io_type: IOType | None = None
    overrides: tuple[Override, ...] = ()
    per_channel: bool = True
    calibration: CalibrationSettings = CalibrationSettings()
    versions: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe_version": RECIPE_VERSION,
            "mode": self.mode.value,
            "engine": self.engine.value,
            "io_type": self.io_type.value if self.io_type else None,
            "per_channel": self.per_channel,
            "overrides": [
                {k: v for k, v in (("layer", o.layer), ("op", o.op), ("precision", o.precision.value)) if v is not None}
                for o in self.overrides
            ],
            "calibration": {
                "samples": self.calibration.samples,
                "seed": self.calibration.seed,
                "pixel_range": list(self.calibration.pixel_range),
                "mean": list(self.calibration.mean) if self.calibration.mean is not None else None,
                "std": list(self.calibration.std) if self.calibration.std is not None else None,
            },
            "versions": dict(self.versions),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, raw: Any, where: str = "recipe") -> Recipe:
        if not isinstance(raw, dict):
            raise ConversionError(f"{where}: a recipe is a JSON object, not {type(raw).__name__}")
        _known(raw, _TOP_KEYS, where)
        version = raw.get("recipe_version", RECIPE_VERSION)
        if version != RECIPE_VERSION:
            raise ConversionError(
                f"{where}: recipe_version {version!r} is not supported (this edgeq reads version {RECIPE_VERSION})"
            )
        mode = _choice(raw.get("mode"), QuantMode, f"{where}: mode")
        engine = _choice(raw.get("engine", Engine.LITERT_QUANTIZER.value), Engine, f"{where}: engine")
        io_type = None if raw.get("io_type") is None else _choice(raw["io_type"], IOType, f"{where}: io_type")
        per_channel = raw.get("per_channel", True)
        if not isinstance(per_channel, bool):
            raise ConversionError(f"{where}: per_channel must be true or false")
        overrides_raw = raw.get("overrides", [])
        if not isinstance(overrides_raw, list):
            raise ConversionError(f'{where}: overrides must be a list of {{"layer"|"op": ..., "precision": ...}}')
        overrides = tuple(_override(o, f"{where}: overrides[{i}]") for i, o in enumerate(overrides_raw))
        calibration = _calibration(raw.get("calibration", {}), f"{where}: calibration")
        versions = raw.get("versions", {})
        if not isinstance(versions, dict) or not all(isinstance(v, str) for v in versions.values()):
            raise ConversionError(f"{where}: versions must map tool names to version strings")
        if engine is Engine.TFLITE_CONVERTER and (overrides or mode.needs_litert_quantizer):
            raise ConversionError(
                f"{where}: engine tflite-converter cannot make mode {mode.value} or per-layer overrides",
                hint='use "engine": "litert-quantizer"',
            )
        return cls(
            mode=mode,
            engine=engine,
            io_type=io_type,
            overrides=overrides,
            per_channel=per_channel,
            calibration=calibration,
            versions=versions,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recipe:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ConversionError(f"{path}: no such recipe file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConversionError(f"{path}: cannot read the recipe ({exc})") from exc
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConversionError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc
        return cls.from_dict(raw, where=str(path))


def recipe_path_for(output: str | os.PathLike) -> Path:
    """``OUT.tflite`` -> ``OUT.recipe.json``."""
    return Path(output).with_suffix(".recipe.json")


_TOP_KEYS = ("recipe_version", "mode", "engine", "io_type", "per_channel", "overrides", "calibration", "versions")
_OVERRIDE_KEYS = ("layer", "op", "precision")
_CALIBRATION_KEYS = ("samples", "seed", "pixel_range", "mean", "std")


def _known(raw: Mapping[str, Any], valid: tuple[str, ...], where: str) -> None:
    for key in raw:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            raise ConversionError(
                f"{where}: unknown key {key!r}",
                hint=f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}",
            )


_E = TypeVar("_E", bound=enum.Enum)


def _choice(value: object, enum_type: type[_E], where: str) -> _E:
    valid = [m.value for m in enum_type]
    if value not in valid:
        close = difflib.get_close_matches(str(value), valid, n=1)
        raise ConversionError(
            f"{where} {value!r} is not one of {', '.join(valid)}",
            hint=f"did you mean {close[0]!r}?" if close else None,
        )
    return enum_type(value)


def _override(raw: Any, where: str) -> Override:
    if not isinstance(raw, dict):
        raise ConversionError(f'{where}: an override is an object such as {{"layer": "dense_2", "precision": "float"}}')
    _known(raw, _OVERRIDE_KEYS, where)
    if "precision" not in raw:
        raise ConversionError(f"{where}: no precision (one of {', '.join(p.value for p in Precision)})")
    precision = _choice(raw["precision"], Precision, f"{where}: precision")
    layer, op = raw.get("layer"), raw.get("op")
    if layer is None and op is None:
        raise ConversionError(
            f'{where}: give "layer" (a regex on layer names), "op" (an op type such as HARD_SWISH), or both'
        )
    for key, value in (("layer", layer), ("op", op)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ConversionError(f"{where}: {key} must be a non-empty string")
    if layer is not None:
        try:
            re.compile(layer)
        except re.error as exc:
            raise ConversionError(f"{where}: layer {layer!r} is not a valid regular expression ({exc})") from exc
    return Override(precision=precision, layer=layer, op=op.upper() if op else None)


def _calibration(raw: Any, where: str) -> CalibrationSettings:
    if not isinstance(raw, dict):
        raise ConversionError(f"{where}: must be an object")
    _known(raw, _CALIBRATION_KEYS, where)
    default = CalibrationSettings()
    samples = raw.get("samples", default.samples)
    seed = raw.get("seed", default.seed)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ConversionError(f"{where}: samples must be a positive integer")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConversionError(f"{where}: seed must be an integer")

    def floats(key: str, length: int | None = None) -> tuple[float, ...] | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            raise ConversionError(f"{where}: {key} must be a list of numbers")
        if length is not None and len(value) != length:
            raise ConversionError(f"{where}: {key} must have {length} numbers")
        return tuple(float(v) for v in value)

    pixel_range = floats("pixel_range", 2) or default.pixel_range
    return CalibrationSettings(
        samples=samples, seed=seed, pixel_range=(pixel_range[0], pixel_range[1]), mean=floats("mean"), std=floats("std")
    )
