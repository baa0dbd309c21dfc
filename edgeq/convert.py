"""Converting a TensorFlow/Keras model to TFLite, quantized, with a report of what it cost.

TensorFlow is imported inside the functions that need it, never at module import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .calibration import ImageOptions, load_labelled, load_samples, split_samples
from .errors import CalibrationDataError, ConversionError, InternalError, ModelError
from .files import atomic_writer
from .health import REFERENCE_SAMPLES, samples_path_for
from .litert import ModelRunner, _first_line, captured_native_output, describe_model
from .metrics import accuracy, compare_outputs, is_classifier_output
from .quantize import FloatGraph, load_float_tflite
from .recipe import CalibrationSettings, Engine, Override, Precision, Recipe, recipe_path_for
from .types import ConversionReport, Fidelity, IOType, QuantMode, TensorSpec

if TYPE_CHECKING:
    from .targets import Target

__all__ = [
    "ConversionResult",
    "ConvertOptions",
    "FloatModel",
    "choose_engine",
    "convert_model",
    "load_float_model",
    "open_source",
    "options_from_recipe",
    "recipe_for",
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
    target_spec: Any = None  # the Target: its runtimes must be able to run the result
    overrides: tuple[Override, ...] = ()  # per-layer precision (litert-quantizer)
    engine: Engine | None = None  # None: chosen from the model and mode
    recipe_versions: Mapping[str, str] | None = None  # --recipe: the versions it was made with

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
    recipe: Recipe | None = None


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


def configure_converter(
    converter: Any, mode: QuantMode, io_type: IOType, representative: Callable[[], Iterator] | None, per_channel: bool
) -> None:
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
            converter._experimental_disable_per_channel = True


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

    converter._optimize_tflite_model = keep_float
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


def _convert(
    model, calibration, output, options: ConvertOptions, eval_data, progress: Progress | None, log: list[str]
) -> ConversionResult:
    say = progress or (lambda _msg: None)
    mode = options.mode
    out_path = Path(output) if output is not None else None
    if out_path is not None:
        _check_output_path(out_path)
    if mode.needs_calibration and calibration is None:
        raise CalibrationDataError(f"--mode {mode.value} needs calibration data (--calib PATH)")

    warnings: list[str] = []
    say(f"loading {model}")
    source = open_source(model)
    engine = choose_engine(source, options)
    io_type = _engine_io_type(options, engine)
    specs = source.inputs if isinstance(source, FloatGraph) else source.input_specs()

    calib, holdout = _calibration_split(calibration, specs, options, warnings)
    eval_inputs = labels = None
    if eval_data is not None:
        eval_inputs, labels = load_labelled(eval_data, specs)

    graph: FloatGraph | None = None
    if engine is Engine.TFLITE_CONVERTER:
        assert isinstance(source, FloatModel)
        quant_bytes, float_bytes = _tf_convert(source, mode, io_type, calib, options.per_channel, say, log)
    else:
        if isinstance(source, FloatGraph):
            graph = source
        else:
            say("converting to a float32 .tflite for litert-quantizer")
            graph = FloatGraph(
                run_converter(converter_for(source, QuantMode.FLOAT32, IOType.FLOAT32, None, True), log),
                source=str(model),
            )
            calib, holdout = rename_inputs(calib, graph), rename_inputs(holdout, graph)
            if eval_inputs is not None:
                eval_inputs = rename_inputs(eval_inputs, graph)
        if graph.signature_added:
            warnings.append("the model had no signature: edgeq added 'serving_default' from its inputs and outputs")
        statistics = None
        if mode.needs_calibration:
            say(f"calibrating on {len(next(iter(calib.values())))} samples (litert-quantizer)")
            statistics = graph.calibrate(calib)
        say(
            f"quantizing to {mode.value}" + (f" with {len(options.overrides)} override(s)" if options.overrides else "")
        )
        quant_bytes = graph.quantize(mode, statistics, options.overrides, options.per_channel)
        float_bytes = graph.model

    summary = describe_model(quant_bytes)
    if _keeps_float(options):
        if summary.float_ops:
            warnings.append(f"op(s) in float32 as the per-layer overrides ask: {', '.join(summary.float_ops)}")
    else:
        _check_integer_only(summary.float_ops, mode, options.allow_float_ops, warnings)
    if options.target_spec is not None:
        from .kernels import check_runs_on_target

        check_runs_on_target(quant_bytes, options.target_spec)
    float_runner = ModelRunner(float_bytes)
    quant_runner = ModelRunner(quant_bytes)
    fidelity = None
    if holdout:
        n_hold = len(next(iter(holdout.values())))
        say(f"measuring fidelity on {n_hold} held-out samples")
        fidelity = compare_outputs(float_runner.run(holdout), quant_runner.run(holdout))
        warnings.extend(_fidelity_warnings(fidelity))
    acc = None
    if eval_inputs is not None and labels is not None:
        say(f"evaluating on {len(labels)} labelled samples")
        acc = _evaluate(eval_data, float_runner, quant_runner, eval_inputs, labels)

    versions = tool_versions(engine, tensorflow=isinstance(source, FloatModel))
    recipe = recipe_for(options, engine, versions)
    warnings.extend(_version_warnings(options.recipe_versions, versions))
    report = ConversionReport(
        model=str(model),
        output=str(out_path) if out_path else "",
        mode=mode,
        io_type=_actual_io_type(summary, io_type),
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
        converter_version=", ".join(f"{k} {v}" for k, v in versions.items() if k != "edgeq"),
        engine=engine.value,
        overrides=tuple(o.describe() for o in options.overrides),
        weights=_weight_census(quant_bytes),
    )
    if out_path is not None:
        write_outputs(out_path, quant_bytes, report, recipe, samples=holdout or None)
    return ConversionResult(model_bytes=quant_bytes, report=report, converter_log="", recipe=recipe)


Source = FloatModel | FloatGraph


def open_source(model: str | os.PathLike) -> Source:
    """A Keras/SavedModel model (TF converter) or a float ``.tflite`` (litert-quantizer)."""
    path = Path(model)
    if path.is_file() and path.suffix.lower() == ".tflite":
        return load_float_tflite(path)
    return load_float_model(path)


def choose_engine(source: Source, options: ConvertOptions) -> Engine:
    """The TF converter for Keras/SavedModel in its own modes; litert-quantizer for .tflite, int4 and overrides."""
    if options.engine is not None:
        if options.engine is Engine.TFLITE_CONVERTER and isinstance(source, FloatGraph):
            raise ConversionError(
                "the recipe's engine is tflite-converter, which needs a Keras or SavedModel model, not a .tflite"
            )
        return options.engine
    if isinstance(source, FloatGraph) or options.overrides or options.mode.needs_litert_quantizer:
        return Engine.LITERT_QUANTIZER
    return Engine.TFLITE_CONVERTER


# what litert-quantizer gives each mode's inputs and outputs: it keeps the float model's I/O tensors in
# the activations' type (int8 or int16), or float where activations stay float
_LITERT_IO = {
    QuantMode.INT8: IOType.INT8,
    QuantMode.INT16X8: IOType.INT16,
    QuantMode.W4A8: IOType.INT8,
    QuantMode.INT4_WEIGHT: IOType.FLOAT32,
    QuantMode.DYNAMIC: IOType.FLOAT32,
    QuantMode.FLOAT16: IOType.FLOAT32,
    QuantMode.FLOAT32: IOType.FLOAT32,
}


def _engine_io_type(options: ConvertOptions, engine: Engine) -> IOType:
    if engine is Engine.TFLITE_CONVERTER:
        return options.resolved_io_type()
    natural = _LITERT_IO[options.mode]
    if options.io_type is not None and options.io_type is not natural:
        raise ConversionError(
            f"--io-type {options.io_type.value} is not possible here: litert-quantizer (used for .tflite input, "
            f"int4 modes and per-layer overrides) gives --mode {options.mode.value} {natural.value} inputs and outputs",
            hint=f"leave --io-type out or use --io-type {natural.value}; for other I/O types convert the Keras/SavedModel "
            "model without overrides",
        )
    return natural


def _actual_io_type(summary: Any, fallback: IOType) -> IOType:
    dtypes = {t.dtype for t in summary.inputs}
    if len(dtypes) == 1 and (only := next(iter(dtypes))) in {t.value for t in IOType}:
        return IOType(only)
    return fallback


def _keeps_float(options: ConvertOptions) -> bool:
    return any(o.precision is Precision.FLOAT for o in options.overrides)


def rename_inputs(arrays: Mapping[str, np.ndarray], graph: FloatGraph) -> dict[str, np.ndarray]:
    """Keras input names -> the float .tflite signature's names (by position when they differ)."""
    names = [spec.name for spec in graph.inputs]
    if not arrays or set(arrays) == set(names):
        return dict(arrays)
    if len(arrays) != len(names):
        raise InternalError(f"the float .tflite has inputs {names}; the data has {list(arrays)}")
    return {new: arrays[old] for old, new in zip(arrays, names)}


def _calibration_split(
    calibration: Any, specs: Any, options: ConvertOptions, warnings: list[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Calibration samples and the disjoint held-out samples (at most MAX_FIDELITY_SAMPLES) that measure fidelity."""
    if calibration is None:
        warnings.append("no calibration data given: fidelity was not measured")
        return {}, {}
    samples = load_samples(calibration, specs, options.image_options)
    if options.mode.needs_calibration:
        split = split_samples(samples, options.calibration_samples, options.seed)
        return split.calibration, split.holdout
    order = np.random.default_rng(options.seed).permutation(len(next(iter(samples.values()))))
    idx = np.sort(order[:MAX_FIDELITY_SAMPLES])
    return {}, {k: v[idx] for k, v in samples.items()}


def _tf_convert(
    source: FloatModel,
    mode: QuantMode,
    io_type: IOType,
    calib: Mapping[str, np.ndarray],
    per_channel: bool,
    say: Progress,
    log: list[str],
) -> tuple[bytes, bytes]:
    """(quantized, float) bytes from the TF converter; the float model is the converter's own when it built one."""
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
        converter = converter_for(source, mode, io_type, representative, per_channel)
        # only calibrated modes build a float model first (dynamic and float16 quantize weights straight away)
        captured = capture_float_model(converter) if mode.needs_calibration else {}
        quant_bytes = run_converter(converter, log)
    float_bytes = captured.get("float")
    if float_bytes is None:
        say("converting the float32 baseline")
        float_bytes = run_converter(converter_for(source, QuantMode.FLOAT32, io_type, None, True), log)
    return (quant_bytes if quant_bytes is not None else float_bytes), float_bytes


def tool_versions(engine: Engine, tensorflow: bool) -> dict[str, str]:
    """The versions that decide a model's bytes: recorded in its recipe and report."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"edgeq": __version__}
    names = (["tensorflow"] if tensorflow else []) + (
        ["litert-quantizer", "ai-edge-litert"] if engine is Engine.LITERT_QUANTIZER else []
    )
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def recipe_for(options: ConvertOptions, engine: Engine, versions: Mapping[str, str]) -> Recipe:
    return Recipe(
        mode=options.mode,
        engine=engine,
        io_type=options.io_type,
        overrides=tuple(options.overrides),
        per_channel=options.per_channel,
        calibration=CalibrationSettings(
            samples=options.calibration_samples,
            seed=options.seed,
            pixel_range=options.image_options.pixel_range,
            mean=options.image_options.mean,
            std=options.image_options.std,
        ),
        versions=dict(versions),
    )


def options_from_recipe(recipe: Recipe, base: ConvertOptions = ConvertOptions()) -> ConvertOptions:
    """Convert options that make the recipe's model again (``edgeq convert --recipe``)."""
    cal = recipe.calibration
    return dataclasses.replace(
        base,
        mode=recipe.mode,
        io_type=recipe.io_type,
        overrides=recipe.overrides,
        per_channel=recipe.per_channel,
        calibration_samples=cal.samples,
        seed=cal.seed,
        image_options=ImageOptions(pixel_range=cal.pixel_range, mean=cal.mean, std=cal.std),
        engine=recipe.engine,
        recipe_versions=dict(recipe.versions),
    )


def _version_warnings(wanted: Mapping[str, str] | None, have: Mapping[str, str]) -> list[str]:
    if not wanted:
        return []
    return [
        f"the recipe was made with {name} {wanted[name]}; this is {name} {have[name]}: the bytes may differ"
        for name in have
        if name in wanted and name != "edgeq" and wanted[name] != have[name]
    ]


def _weight_census(model_bytes: bytes) -> dict[str, dict[str, int]]:
    """Per op type, how many ops have int4, int8 or float weights (from the flatbuffer: the interpreter shows int4 as int8)."""
    from .quantize import weight_census

    return weight_census(model_bytes)


def converter_for(
    float_model: FloatModel, mode: QuantMode, io_type: IOType, representative: Any, per_channel: bool
) -> Any:
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
    if not float_ops or not mode.integer_only:
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


def _evaluate(
    path: Any,
    float_runner: ModelRunner,
    quant_runner: ModelRunner,
    inputs: Mapping[str, np.ndarray],
    labels: np.ndarray,
):
    float_out = float_runner.run(inputs)
    quant_out = quant_runner.run(inputs)
    heads = [name for name, arr in float_out.items() if is_classifier_output(arr)]
    if len(heads) != 1:
        raise CalibrationDataError(
            f"{path}: labelled evaluation needs exactly one classifier output (N, C); the model has {len(heads)}"
        )
    return accuracy(labels, float_out[heads[0]], quant_out[heads[0]])


def write_outputs(
    out: Path,
    model_bytes: bytes,
    report: ConversionReport,
    recipe: Recipe,
    samples: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write the model, its report, its recipe (and reference ``samples``) so that all or none replace what was there.

    ``samples``: held-out inputs (never calibrated on), keyed by input name; the first 32 are kept as
    ``OUT.samples.npz``, which ``edgeq deploy`` uses for its health check when it deploys OUT.
    """
    with (
        atomic_writer(out) as model_tmp,
        atomic_writer(report_path_for(out)) as report_tmp,
        atomic_writer(recipe_path_for(out)) as recipe_tmp,
        atomic_writer(samples_path_for(out)) if samples else contextlib.nullcontext() as samples_tmp,
    ):
        model_tmp.write(model_bytes)
        report_tmp.write(json.dumps(report.to_dict(), indent=2).encode() + b"\n")
        recipe_tmp.write(recipe.to_json().encode())
        if samples_tmp is not None and samples:
            arrays: dict[str, Any] = {k: np.asarray(v[:REFERENCE_SAMPLES]) for k, v in samples.items()}
            np.savez(samples_tmp, **arrays)


# --------------------------------------------------------------------------- target policy


def apply_target(target: Target, options: ConvertOptions, *, mode_given: bool = True) -> ConvertOptions:
    """``options`` adjusted to what ``target`` can run, or ConversionError saying why it cannot.

    Fills what the user did not give (the target's first mode when
    ``mode_given`` is false; its first I/O type that suits the mode when
    ``options.io_type`` is None), turns per-channel weights off where the
    target lacks them, and records the target's name. Runs before any
    TensorFlow work.
    """
    q = target.quantization
    mode = options.mode if mode_given else q.default_mode
    if not q.allows_mode(mode):
        reason = f" {q.notes[0]}" if q.notes else ""
        raise ConversionError(
            f"target {target.name} cannot run --mode {mode.value} models: it runs {', '.join(q.modes)} only.{reason}",
            hint=f"use --mode {' or --mode '.join(q.modes)}, or convert without --target",
        )
    io_type = options.io_type
    if io_type is None:
        io_type = q.default_io_type(mode)
        if io_type is None:  # _check_merged guarantees one for every listed mode
            raise InternalError(f"target {target.name}: no I/O type for mode {mode.value}")
    elif io_type.value not in q.io_types:
        usable = [t.value for t in q.io_types_for(mode)]
        raise ConversionError(
            f"target {target.name} cannot take models with --io-type {io_type.value}: "
            f"its models' inputs and outputs must be {' or '.join(q.io_types)}",
            hint=f"use --io-type {' or '.join(usable)}, or leave --io-type out (the default for {target.name} "
            f"with --mode {mode.value} is {usable[0]})",
        )
    adjusted = dataclasses.replace(
        options,
        mode=mode,
        io_type=io_type,
        per_channel=options.per_channel and q.per_channel,
        target=target.name,
    )
    adjusted.resolved_io_type()  # a mode/io-type mismatch fails here, before any conversion work
    return adjusted
