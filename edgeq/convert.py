"""Converting a TensorFlow/Keras model to TFLite, quantized, with a report of what it cost.

TensorFlow is imported inside the functions that need it, never at module import.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from . import __version__
from .calibration import ImageOptions, load_labelled, load_samples, split_samples
from .errors import CalibrationDataError, ConversionError, ModelError
from .files import atomic_writer
from .litert import ModelRunner, captured_native_output, describe_model
from .metrics import accuracy, compare_outputs, is_classifier_output
from .types import ConversionReport, Fidelity, IOType, QuantMode, TensorSpec

__all__ = [
    "ConvertOptions",
    "ConversionResult",
    "convert_model",
    "load_float_model",
    "FloatModel",
    "report_path_for",
]

Progress = Callable[[str], None]

MAX_FIDELITY_SAMPLES = 1000


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    """How to convert: the CLI flags of ``edgeq convert`` as one value."""

    mode: QuantMode = QuantMode.INT8
    io_type: IOType | None = None  # None: the mode's default
    calibration_samples: int = 200
    seed: int = 0
    image_options: ImageOptions = ImageOptions()
    allow_float_ops: bool = False
    per_channel: bool = True
    target: str | None = None

    def resolved_io_type(self) -> IOType:
        io = self.io_type or self.mode.default_io_type
        if io not in self.mode.allowed_io_types:
            allowed = ", ".join(t.value for t in self.mode.allowed_io_types)
            raise ConversionError(
                f"--io-type {io.value} is not possible with --mode {self.mode.value}",
                hint=f"with --mode {self.mode.value} use --io-type {allowed}",
            )
        return io


@dataclasses.dataclass(frozen=True)
class ConversionResult:
    """The converted model's bytes and its report (already written when ``output`` was given)."""

    model_bytes: bytes
    report: ConversionReport
    converter_log: str


def report_path_for(output: str | os.PathLike) -> Path:
    """``OUT.tflite`` -> ``OUT.json``: where the report lives."""
    return Path(output).with_suffix(".json")


# --------------------------------------------------------------------------- TensorFlow side


def _import_tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    import tensorflow as tf

    return tf


@dataclasses.dataclass
class FloatModel:
    """A loaded float model: how to make a TFLite converter for it."""

    path: Path
    kind: str  # "saved_model" | "keras"
    keras_model: Any = None

    def input_specs(self) -> tuple[TensorSpec, ...]:
        """Input names, shapes and types as the converter's signature will name them."""
        if self.kind == "keras":
            specs = []
            for tensor in self.keras_model.inputs:
                shape = tuple(None if d is None else int(d) for d in tensor.shape)
                specs.append(TensorSpec(name=tensor.name, shape=(None, *shape[1:]), dtype=str(tensor.dtype)))
            return tuple(specs)
        tf = _import_tf()
        signature = tf.saved_model.load(str(self.path)).signatures["serving_default"]
        _, kwargs = signature.structured_input_signature
        return tuple(
            TensorSpec(
                name=name,
                shape=(None, *[None if d is None else int(d) for d in spec.shape[1:]]),
                dtype=spec.dtype.name,
            )
            for name, spec in sorted(kwargs.items())
        )

    def converter(self) -> Any:
        tf = _import_tf()
        if self.kind == "saved_model":
            return tf.lite.TFLiteConverter.from_saved_model(str(self.path), signature_keys=["serving_default"])
        return tf.lite.TFLiteConverter.from_keras_model(self.keras_model)


def load_float_model(path: str | os.PathLike) -> FloatModel:
    """Open a SavedModel directory or a Keras ``.keras`` / ``.h5`` file."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file or directory")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ModelError(
                f"{path}: not a SavedModel directory (no saved_model.pb)",
                hint="give a SavedModel directory, a .keras file or a .h5 file",
            )
        tf = _import_tf()
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:  # TF raises many unrelated types for a broken SavedModel
            raise ModelError(f"{path}: could not load the SavedModel ({_first_line(exc)})") from exc
        if "serving_default" not in loaded.signatures:
            found = ", ".join(loaded.signatures) or "none"
            raise ModelError(
                f"{path}: the SavedModel has no 'serving_default' signature (found: {found})",
                hint="export it with a serving signature, e.g. keras model.export(path)",
            )
        return FloatModel(path=path, kind="saved_model")
    if path.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise ModelError(
            f"{path}: unsupported model file '{path.suffix or path.name}'",
            hint="give a SavedModel directory, a .keras file or a .h5 file",
        )
    _import_tf()
    import keras

    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as exc:  # keras raises ValueError, OSError, TypeError... for bad files
        raise ModelError(f"{path}: could not load the Keras model ({_first_line(exc)})") from exc
    return FloatModel(path=path, kind="keras", keras_model=model)


def _first_line(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


_NOT_BUILTIN = re.compile(r"'(tf\.[\w.]+)' op is neither a custom op nor a flex op")


def _converter_error(exc: BaseException, log: str) -> ConversionError:
    text = f"{exc}\n{log}"
    missing = sorted(set(_NOT_BUILTIN.findall(text)))
    if missing:
        return ConversionError(
            f"the model uses op(s) with no TFLite builtin kernel: {', '.join(missing)}",
            hint="edgeq converts to TFLite builtin ops only; replace these ops in the model",
        )
    errors = [line.strip() for line in text.splitlines() if "error:" in line]
    detail = errors[0] if errors else _first_line(exc)
    return ConversionError(f"the TFLite converter failed: {detail}", hint="run with --debug to see the converter's log")


def configure_converter(converter: Any, mode: QuantMode, io_type: IOType, representative: Callable[[], Iterator] | None, per_channel: bool) -> None:
    tf = _import_tf()
    io_dtypes = {IOType.INT8: tf.int8, IOType.UINT8: tf.uint8, IOType.INT16: tf.int16, IOType.FLOAT32: tf.float32}
    if mode is QuantMode.FLOAT32:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode is QuantMode.FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    elif mode in (QuantMode.INT8, QuantMode.INT16X8):
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8
            if mode is QuantMode.INT8
            else tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        converter.inference_input_type = io_dtypes[io_type]
        converter.inference_output_type = io_dtypes[io_type]
        if not per_channel:
            # Per-tensor weights for runtimes/accelerators without per-channel support.
            converter._experimental_disable_per_channel = True  # noqa: SLF001


def capture_float_model(converter: Any) -> dict[str, bytes]:
    """Keep the float flatbuffer the converter builds before it calibrates and quantizes.

    For post-training integer quantization TFLite first converts to float and
    then quantizes that model; taking it saves a second conversion (about a
    fifth of the time on MobileNetV2). It relies on a private converter method;
    when a TensorFlow release drops it, nothing is captured and the caller
    converts the float model separately.
    """
    captured: dict[str, bytes] = {}
    original = getattr(converter, "_optimize_tflite_model", None)
    if original is None:
        return captured

    def keep_float(model: Any, *args: Any, **kwargs: Any) -> Any:
        captured.setdefault("float", bytes(model))
        return original(model, *args, **kwargs)

    converter._optimize_tflite_model = keep_float  # noqa: SLF001
    return captured


def run_converter(converter: Any, debug_log: list[str]) -> bytes:
    with captured_native_output() as sink:
        try:
            result = converter.convert()
            error: BaseException | None = None
        except Exception as exc:  # ConverterError and friends: reported below with the log
            result, error = None, exc
    log = sink[0] if sink else ""
    debug_log.append(log)
    if error is not None:
        raise _converter_error(error, log) from error
    return bytes(result)


# --------------------------------------------------------------------------- the pipeline


def convert_model(
    model: str | os.PathLike,
    calibration: str | os.PathLike | None,
    output: str | os.PathLike | None,
    options: ConvertOptions = ConvertOptions(),
    eval_data: str | os.PathLike | None = None,
    progress: Progress | None = None,
    show_log: bool = False,
) -> ConversionResult:
    """Convert ``model`` with ``options``; write ``output`` and its JSON report atomically.

    Nothing is written unless every step succeeded: on failure any previous
    output and report are left exactly as they were. TensorFlow's and the
    interpreter's own output is captured into ``ConversionResult.converter_log``.
    """
    log: list[str] = []
    with captured_native_output(echo=show_log) as outer:
        result = _convert(model, calibration, output, options, eval_data, progress, log)
    log.extend(outer)
    return dataclasses.replace(result, converter_log="\n".join(part for part in log if part))


def _convert(model, calibration, output, options: ConvertOptions, eval_data, progress: Progress | None, log: list[str]) -> ConversionResult:
    say = progress or (lambda _msg: None)
    mode = options.mode
    io_type = options.resolved_io_type()
    out_path = Path(output) if output is not None else None
    if out_path is not None:
        _check_output_path(out_path)
    if mode.needs_calibration and calibration is None:
        raise CalibrationDataError(f"--mode {mode.value} needs calibration data (--calib PATH)")

    warnings: list[str] = []
    say(f"loading {model}")
    float_model = load_float_model(model)
    specs = float_model.input_specs()

    if calibration is not None:
        samples = load_samples(calibration, specs, options.image_options)
        if mode.needs_calibration:
            split = split_samples(samples, options.calibration_samples, options.seed)
            calib, holdout = split.calibration, split.holdout
        else:
            calib = {}
            order = np.random.default_rng(options.seed).permutation(len(next(iter(samples.values()))))
            idx = np.sort(order[:MAX_FIDELITY_SAMPLES])
            holdout = {k: v[idx] for k, v in samples.items()}
    else:
        calib, holdout = {}, {}
        warnings.append("no calibration data given: fidelity was not measured")

    eval_inputs = labels = None
    if eval_data is not None:
        eval_inputs, labels = load_labelled(eval_data, specs)

    quant_bytes = None
    captured: dict[str, bytes] = {}
    if mode is not QuantMode.FLOAT32:
        representative = None
        if mode.needs_calibration:
            n_calib = len(next(iter(calib.values())))

            def representative() -> Iterator[dict[str, np.ndarray]]:
                for i in range(n_calib):
                    yield {name: array[i : i + 1] for name, array in calib.items()}

            say(f"converting to {mode.value} (calibrating on {n_calib} samples)")
        else:
            say(f"converting to {mode.value}")
        converter = converter_for(float_model, mode, io_type, representative, options.per_channel)
        # only calibrated modes build a float model first (dynamic and float16 quantize weights straight away)
        captured = capture_float_model(converter) if mode.needs_calibration else {}
        quant_bytes = run_converter(converter, log)
    float_bytes = captured.get("float")
    if float_bytes is None:
        say("converting the float32 baseline")
        float_bytes = run_converter(converter_for(float_model, QuantMode.FLOAT32, io_type, None, True), log)
    if quant_bytes is None:
        quant_bytes = float_bytes

    summary = describe_model(quant_bytes)
    _check_integer_only(summary.float_ops, mode, options.allow_float_ops, warnings)
    float_runner = ModelRunner(float_bytes)
    quant_runner = ModelRunner(quant_bytes)
    fidelity = None
    if holdout:
        n_hold = len(next(iter(holdout.values())))
        say(f"measuring fidelity on {n_hold} held-out samples")
        fidelity = compare_outputs(float_runner.run(holdout), quant_runner.run(holdout))
        warnings.extend(_fidelity_warnings(fidelity))
    acc = None
    if eval_inputs is not None:
        say(f"evaluating on {len(labels)} labelled samples")
        acc = _evaluate(eval_data, float_runner, quant_runner, eval_inputs, labels)

    tf = _import_tf()
    report = ConversionReport(
        model=str(model),
        output=str(out_path) if out_path else "",
        mode=mode,
        io_type=io_type,
        target=options.target,
        float_size_bytes=len(float_bytes),
        quantized_size_bytes=len(quant_bytes),
        size_ratio=round(len(quant_bytes) / len(float_bytes), 4),
        calibration_samples=len(next(iter(calib.values()))) if calib else 0,
        holdout_samples=fidelity.samples if fidelity else 0,
        summary=dataclasses.replace(summary, path=str(out_path) if out_path else ""),
        fidelity=fidelity,
        accuracy=acc,
        warnings=tuple(warnings),
        edgeq_version=__version__,
        converter_version=f"tensorflow {tf.__version__}",
    )
    if out_path is not None:
        _write_pair(out_path, quant_bytes, report)
    return ConversionResult(model_bytes=quant_bytes, report=report, converter_log="")


def converter_for(float_model: FloatModel, mode: QuantMode, io_type: IOType, representative: Any, per_channel: bool) -> Any:
    converter = float_model.converter()
    configure_converter(converter, mode, io_type, representative, per_channel)
    return converter


def _check_output_path(out: Path) -> None:
    if out.suffix == ".json":
        raise ConversionError(f"{out}: the output must not end in .json (the report is written there)")
    if out.is_dir():
        raise ConversionError(f"{out}: is a directory; give a file name such as {out / 'model.tflite'}")
    if not out.parent.is_dir():
        raise ConversionError(f"{out.parent}: output directory does not exist")
    if not os.access(out.parent, os.W_OK):
        raise ConversionError(f"{out.parent}: output directory is not writable")


def _check_integer_only(float_ops: tuple[str, ...], mode: QuantMode, allow: bool, warnings: list[str]) -> None:
    if not float_ops or mode not in (QuantMode.INT8, QuantMode.INT16X8):
        return
    ops = ", ".join(float_ops)
    if allow:
        warnings.append(f"op(s) left in float32 (no {mode.value} kernel): {ops}")
        return
    raise ConversionError(
        f"--mode {mode.value}: op(s) {ops} have no {mode.value} kernel and would stay in float32",
        hint="use --mode dynamic or --mode float16 (they keep such ops in float), "
        "or --allow-float-ops to accept a mixed integer/float model",
    )


def _fidelity_warnings(fidelity: Fidelity) -> list[str]:
    found = []
    for out in fidelity.outputs:
        if out.float_undetermined:
            found.append(
                f"output '{out.name}': on {out.float_undetermined} of {fidelity.samples} held-out samples the float model "
                "has no unique top class (an untrained model?); they are left out of top-1 agreement"
            )
        if out.top1_ties:
            found.append(
                f"output '{out.name}': on {out.top1_ties} held-out samples the quantized top score is tied "
                "(scores collapsed by the output's int8 scale); counted as disagreement"
            )
    return found


def _evaluate(path: Any, float_runner: ModelRunner, quant_runner: ModelRunner, inputs: Mapping[str, np.ndarray], labels: np.ndarray):
    float_out = float_runner.run(inputs)
    quant_out = quant_runner.run(inputs)
    heads = [name for name, arr in float_out.items() if is_classifier_output(arr)]
    if len(heads) != 1:
        raise CalibrationDataError(
            f"{path}: labelled evaluation needs exactly one classifier output (N, C); the model has {len(heads)}"
        )
    return accuracy(labels, float_out[heads[0]], quant_out[heads[0]])


def _write_pair(out: Path, model_bytes: bytes, report: ConversionReport) -> None:
    """Write the model and its report so that both or neither replace what was there."""
    report_file = report_path_for(out)
    with atomic_writer(out) as model_tmp, atomic_writer(report_file) as report_tmp:
        model_tmp.write(model_bytes)
        report_tmp.write(json.dumps(report.to_dict(), indent=2).encode() + b"\n")
