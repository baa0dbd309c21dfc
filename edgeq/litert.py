"""The host-side TFLite interpreter: loading, describing and running .tflite models.

LiteRT (``ai_edge_litert``) is preferred; ``tflite_runtime`` and ``tensorflow.lite``
are fallbacks so the same code works where only those are installed.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import ModelError
from .runtimes import RUNTIME_INFO, RUNTIMES
from .types import ModelSummary, TensorInfo, TensorSpec

__all__ = [
    "Interpreter",
    "ModelRunner",
    "captured_native_output",
    "dequantize",
    "describe_model",
    "interpreter_class",
    "load_interpreter",
    "quantize",
]

# Ops that compute nothing in float: conversions between the float and integer domains, and SHAPE
# (it reads a tensor's dimensions only; litert-quantizer feeds it a dequantized copy of an int8 tensor).
_CONVERSION_OPS = frozenset({"QUANTIZE", "DEQUANTIZE", "SHAPE"})
_FLOAT_TYPES = frozenset({"float32", "float16", "float64"})


class Interpreter(Protocol):
    """What edgeq uses of a runtime's ``Interpreter`` (the same API in ai_edge_litert, tflite_runtime, tf.lite)."""

    def allocate_tensors(self) -> None: ...
    def invoke(self) -> None: ...
    def get_input_details(self) -> list[dict[str, Any]]: ...
    def get_output_details(self) -> list[dict[str, Any]]: ...
    def get_tensor_details(self) -> list[dict[str, Any]]: ...
    def set_tensor(self, tensor_index: int, value: np.ndarray) -> None: ...
    def get_tensor(self, tensor_index: int) -> np.ndarray: ...
    def get_signature_list(self) -> dict[str, dict[str, list[str]]]: ...
    def get_signature_runner(self, signature_key: str | None = None) -> Any: ...
    def _get_ops_details(self) -> list[dict[str, Any]]: ...


@contextlib.contextmanager
def captured_native_output(echo: bool = False) -> Iterator[list[str]]:
    """Send fd 1 and 2 (TensorFlow's C++ logs and prints) to a buffer while converting.

    The caller gets a list that holds the captured text once the block ends, so
    a failure can show what the converter said, and a success stays quiet.
    With ``echo`` the text is also passed on to stderr (``--debug``).
    """
    sink: list[str] = []
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    py_buf = io.StringIO()  # Python-level prints (Keras) when sys.stdout is not fd 1, e.g. under CliRunner
    with tempfile.TemporaryFile(mode="w+b") as buf:
        os.dup2(buf.fileno(), 1)
        os.dup2(buf.fileno(), 2)
        try:
            with contextlib.redirect_stdout(py_buf), contextlib.redirect_stderr(py_buf):
                yield sink
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            buf.seek(0)
            text = buf.read().decode("utf-8", "replace") + py_buf.getvalue()
            sink.append(text)
            if echo and text:
                os.write(2, text.encode())


def interpreter_class() -> tuple[type[Any], str]:
    """Return (Interpreter class, runtime name) for the best runtime installed (:data:`edgeq.runtimes.RUNTIMES` order)."""
    for runtime in RUNTIME_INFO.values():
        try:
            module = importlib.import_module(runtime.interpreter_module)
        except ImportError:
            continue
        return module.Interpreter, runtime.name
    raise ModelError(  # pragma: no cover - the package depends on ai-edge-litert
        "no TFLite interpreter is installed",
        hint=f"pip install {RUNTIMES[0]}",
    )


def _no_delegates_option(cls: type[Any]) -> dict[str, Any]:
    """Interpreter kwargs that keep the default delegate (XNNPACK) from rewriting the graph."""
    module = __import__(cls.__module__, fromlist=["OpResolverType"])
    resolver = getattr(module, "OpResolverType", None)
    if resolver is None:  # tensorflow.lite keeps it under experimental
        import tensorflow as tf

        resolver = tf.lite.experimental.OpResolverType
    return {"experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES}


def load_interpreter(
    model: str | os.PathLike[str] | bytes,
    num_threads: int | None = None,
    default_delegates: bool = True,
    preserve_all_tensors: bool = False,
) -> Interpreter:
    """Load a .tflite model (path or bytes) and allocate its tensors.

    ``default_delegates=False`` keeps XNNPACK from taking over nodes, so the
    op list is the model's own (for the op census). ``preserve_all_tensors``
    keeps every intermediate tensor readable after ``invoke()`` (for per-layer error).
    """
    cls, _ = interpreter_class()
    kwargs: dict[str, Any] = {} if default_delegates else _no_delegates_option(cls)
    if num_threads is not None:
        kwargs["num_threads"] = num_threads
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
    interp: Interpreter
    try:
        with warnings.catch_warnings():
            if preserve_all_tensors:  # "intended for debugging purposes only": reading them is what it is for here
                warnings.simplefilter("ignore", UserWarning)
            if isinstance(model, (bytes, bytearray)):
                interp = cls(model_content=bytes(model), **kwargs)
            else:
                path = Path(model)
                if not path.is_file():
                    raise ModelError(f"{path}: no such file")
                interp = cls(model_path=str(path), **kwargs)
        interp.allocate_tensors()
    except ModelError:
        raise
    except (ValueError, RuntimeError) as exc:
        name = "model" if isinstance(model, (bytes, bytearray)) else str(model)
        raise ModelError(
            f"{name}: not a loadable TFLite model ({_first_line(exc)})",
            hint="edgeq inspect expects a .tflite flatbuffer produced by a TFLite converter",
        ) from exc
    return interp


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _dtype_name(dtype: Any) -> str:
    return np.dtype(dtype).name


def _tensor_info(detail: Mapping[str, Any], name: str | None = None) -> TensorInfo:
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", ()), dtype=np.float64)
    zero_points = np.asarray(params.get("zero_points", ()), dtype=np.int64)
    scale = zero_point = None
    if scales.size:
        scale = float(scales[0])
        zero_point = int(zero_points[0]) if zero_points.size else 0
    return TensorInfo(
        name=name or detail["name"],
        index=int(detail["index"]),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=_dtype_name(detail["dtype"]),
        scale=scale,
        zero_point=zero_point,
        per_channel=bool(scales.size > 1),
    )


def _signature_io(interp: Interpreter) -> tuple[str | None, dict[str, int], dict[str, int]]:
    """The first signature's key and its input/output name -> tensor index maps."""
    try:
        signatures = interp.get_signature_list()
    except (AttributeError, ValueError):
        return None, {}, {}
    if not signatures:
        return None, {}, {}
    key = next(iter(signatures))
    runner = interp.get_signature_runner(key)
    ins = {name: int(d["index"]) for name, d in runner.get_input_details().items()}
    outs = {name: int(d["index"]) for name, d in runner.get_output_details().items()}
    return key, ins, outs


def describe_model(model: str | os.PathLike[str] | bytes, interp: Interpreter | None = None) -> ModelSummary:
    """Inputs/outputs with quantization, op census, tensor type census, ops left in float.

    ``model`` is a path or the model's bytes (then ``path`` is empty).
    """
    interp = interp or load_interpreter(model, default_delegates=False)
    _, sig_in, sig_out = _signature_io(interp)
    by_index_in = {v: k for k, v in sig_in.items()}
    by_index_out = {v: k for k, v in sig_out.items()}
    inputs = tuple(_tensor_info(d, by_index_in.get(int(d["index"]))) for d in interp.get_input_details())
    outputs = tuple(_tensor_info(d, by_index_out.get(int(d["index"]))) for d in interp.get_output_details())

    op_counts: Counter[str] = Counter()
    float_ops: list[str] = []
    for op in interp._get_ops_details():
        name = op["op_name"]
        op_counts[name] += 1
        types = [_dtype_name(t) for t in (*op.get("operand_types", ()), *op.get("result_types", ()))]
        if name not in _CONVERSION_OPS and any(t in _FLOAT_TYPES for t in types):
            float_ops.append(name)

    type_counts: Counter[str] = Counter()
    for t in interp.get_tensor_details():
        type_counts[_dtype_name(t["dtype"])] += 1

    signatures: tuple[str, ...] = ()
    try:
        signatures = tuple(interp.get_signature_list())
    except (AttributeError, ValueError):
        pass
    if isinstance(model, (bytes, bytearray)):
        path, size = "", len(model)
    else:
        path, size = str(model), Path(model).stat().st_size
    return ModelSummary(
        path=path,
        size_bytes=size,
        inputs=inputs,
        outputs=outputs,
        op_counts=dict(sorted(op_counts.items())),
        tensor_type_counts=dict(sorted(type_counts.items())),
        float_ops=tuple(sorted(set(float_ops))),
        signatures=signatures,
    )


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """Float values to the integer domain of a tensor (round half to even, saturating)."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, dtype=np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((np.asarray(q, dtype=np.float64) - zero_point) * scale).astype(np.float32)


_Encode = Callable[[TensorInfo, np.ndarray], np.ndarray]  # a tensor's value between float and its own type


class ModelRunner:
    """Runs a .tflite model one sample at a time on float data, whatever its I/O types.

    Inputs are given and outputs returned keyed by signature name (or tensor
    name for models without a signature). Integer inputs are quantized with
    the tensor's scale and zero point, integer outputs dequantized, so float
    and quantized models can be compared value for value.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        num_threads: int | None = None,
        *,
        preserve_all_tensors: bool = False,
    ):
        self._interp = load_interpreter(model, num_threads=num_threads, preserve_all_tensors=preserve_all_tensors)
        _, sig_in, sig_out = _signature_io(self._interp)
        details_in = {int(d["index"]): d for d in self._interp.get_input_details()}
        details_out = {int(d["index"]): d for d in self._interp.get_output_details()}
        if not sig_in:
            sig_in = {d["name"]: i for i, d in details_in.items()}
            sig_out = {d["name"]: i for i, d in details_out.items()}
        self.inputs = {name: _tensor_info(details_in[i], name) for name, i in sig_in.items()}
        self.outputs = {name: _tensor_info(details_out[i], name) for name, i in sig_out.items()}

    def _encode(self, info: TensorInfo, x: np.ndarray) -> np.ndarray:
        dtype = np.dtype(info.dtype)
        if np.issubdtype(dtype, np.integer) and info.scale:
            return quantize(x, info.scale, info.zero_point or 0, dtype)
        return np.asarray(x, dtype=dtype)

    def _decode(self, info: TensorInfo, y: np.ndarray) -> np.ndarray:
        if np.issubdtype(np.dtype(info.dtype), np.integer) and info.scale:
            return dequantize(y, info.scale, info.zero_point or 0)
        return np.asarray(y, dtype=np.float32)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run every sample of ``inputs`` (float arrays of shape (N, ...)); return stacked float outputs."""
        return self._run(inputs, self._encode, self._decode)

    def run_raw(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Like :meth:`run`, with inputs and outputs in the tensors' own types (e.g. int8), unconverted."""
        return self._run(
            inputs,
            lambda info, x: np.asarray(x, dtype=np.dtype(info.dtype)),
            lambda info, y: np.array(y, copy=True),
        )

    def float_input_specs(self) -> tuple[TensorSpec, ...]:
        """The inputs as float data specs (by signature name): what real samples to feed this model look like."""
        return tuple(
            TensorSpec(
                name=name,
                shape=(None, *info.shape[1:]),
                dtype="float32" if info.scale or info.dtype.startswith("float") else info.dtype,
            )
            for name, info in self.inputs.items()
        )

    def quantize_inputs(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Float samples as the model's input tensors take them (quantized for integer inputs)."""
        return {name: self._encode(info, inputs[name]) for name, info in self.inputs.items()}

    def invoke(self, inputs: Mapping[str, np.ndarray], index: int) -> None:
        """Run sample ``index`` of ``inputs`` (float arrays of shape (N, ...), quantized for integer inputs); read the tensors after."""
        self._check_inputs(inputs)
        self._feed(inputs, index, self._encode)
        self._interp.invoke()

    def tensor_values(self) -> dict[str, tuple[np.ndarray, float | None]]:
        """Every tensor the last run left readable, by tensor name: (float value, scale; None for a float tensor).

        Integer tensors are dequantized; those with per-channel (or no)
        quantization are left out. Intermediate tensors are readable only with
        ``preserve_all_tensors=True``.
        """
        values: dict[str, tuple[np.ndarray, float | None]] = {}
        for detail in self._interp.get_tensor_details():
            try:
                value = self._interp.get_tensor(detail["index"])
            except ValueError:  # no data: a tensor the runtime freed or never filled
                continue
            dtype = np.dtype(detail["dtype"])
            params = detail["quantization_parameters"]
            if np.issubdtype(dtype, np.integer) and len(params["scales"]) == 1:
                scale = float(params["scales"][0])
                values[detail["name"]] = (dequantize(value, scale, int(params["zero_points"][0])), scale)
            elif np.issubdtype(dtype, np.floating):
                values[detail["name"]] = (np.asarray(value, dtype=np.float32), None)
        return values

    def _check_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        missing = set(self.inputs) - set(inputs)
        if missing:
            raise ModelError(f"no data for model input(s): {', '.join(sorted(missing))}")

    def _feed(self, inputs: Mapping[str, np.ndarray], index: int, encode: _Encode) -> None:
        for name, info in self.inputs.items():
            sample = np.asarray(inputs[name][index : index + 1])
            self._interp.set_tensor(info.index, encode(info, sample).reshape(info.shape))

    def _run(self, inputs: Mapping[str, np.ndarray], encode: _Encode, decode: _Encode) -> dict[str, np.ndarray]:
        self._check_inputs(inputs)
        n = len(next(iter(inputs.values())))
        results: dict[str, list[np.ndarray]] = {name: [] for name in self.outputs}
        for i in range(n):
            self._feed(inputs, i, encode)
            self._interp.invoke()
            for name, info in self.outputs.items():
                results[name].append(decode(info, self._interp.get_tensor(info.index)))
        return {name: np.concatenate(parts) if parts else np.empty((0,)) for name, parts in results.items()}
