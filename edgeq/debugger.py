"""Per-layer quantization error: which layers lose the most when a float model goes int8.

Wraps TFLite's QuantizationDebugger: the float model is quantized again in
debug mode with edgeq's int8 settings and calibration split, and every
quantized layer output is compared with its float counterpart on the
held-out samples. TensorFlow is imported inside.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .calibration import ImageOptions, load_samples, split_samples
from .convert import configure_converter, converter_for, load_float_model, run_converter
from .errors import ConversionError
from .litert import ModelRunner, captured_native_output, load_interpreter
from .types import IOType, QuantMode

__all__ = ["LayerError", "layer_errors"]


@dataclasses.dataclass(frozen=True)
class LayerError:
    """One quantized layer output against its float counterpart (errors in units of the tensor's scale)."""

    op: str
    tensor: str
    scale: float
    zero_point: int
    rmse_over_scale: float
    mean_abs_error: float
    max_abs_error: float


def _io_type_of(model: str | os.PathLike) -> IOType:
    interp = load_interpreter(model, default_delegates=False)
    dtype = np.dtype(interp.get_input_details()[0]["dtype"]).name
    return IOType(dtype) if dtype in {t.value for t in IOType} else IOType.FLOAT32


def layer_errors(
    model: str | os.PathLike,
    float_model: str | os.PathLike,
    calibration: str | os.PathLike,
    top: int = 10,
    seed: int = 0,
    calibration_samples: int = 200,
    image_options: ImageOptions = ImageOptions(),
    progress: Callable[[str], None] | None = None,
) -> tuple[LayerError, ...]:
    """The ``top`` layers of ``float_model``'s int8 quantization with the largest RMSE/scale."""
    say = progress or (lambda _msg: None)
    io_type = _io_type_of(model)
    log: list[str] = []
    with captured_native_output():
        say(f"loading {float_model}")
        loaded = load_float_model(float_model)
        split = split_samples(
            load_samples(Path(calibration), loaded.input_specs(), image_options), calibration_samples, seed
        )
        # The debugger feeds lists in the interpreter's input order, not dicts: learn it from the float model.
        runner = ModelRunner(run_converter(converter_for(loaded, QuantMode.FLOAT32, io_type, None, True), log))
        order = sorted(runner.inputs, key=lambda name: runner.inputs[name].index)

        def calibration_set() -> Iterator[dict[str, np.ndarray]]:
            part = split.calibration
            return ({k: v[i : i + 1] for k, v in part.items()} for i in range(len(part[order[0]])))

        def debug_set() -> Iterator[list[np.ndarray]]:
            part = split.holdout
            return ([part[k][i : i + 1] for k in order] for i in range(len(part[order[0]])))

        import tensorflow as tf

        converter = loaded.converter()
        configure_converter(converter, QuantMode.INT8, io_type, calibration_set, True)
        say("quantizing in debug mode and comparing every layer")
        try:
            debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=debug_set)
            debugger.run()
        except Exception as exc:  # the debugger raises converter and runtime errors of many types
            raise ConversionError(
                f"per-layer analysis failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
            ) from exc
        buf = io.StringIO()
        debugger.layer_statistics_dump(buf)
    rows = []
    for row in csv.DictReader(io.StringIO(buf.getvalue())):
        scale = float(row["scale"])
        mse = float(row["mean_squared_error"])
        rows.append(
            LayerError(
                op=row["op_name"],
                tensor=row["tensor_name"],
                scale=scale,
                zero_point=int(float(row["zero_point"])),
                rmse_over_scale=math.sqrt(mse) / scale if scale else math.inf,
                mean_abs_error=abs(float(row["mean_error"])),
                max_abs_error=float(row["max_abs_error"]),
            )
        )
    rows.sort(key=lambda r: r.rmse_over_scale, reverse=True)
    return tuple(rows[:top])
