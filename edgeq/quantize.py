"""Quantizing float ``.tflite`` models with litert-quantizer: layers, recipes, one calibration, many variants.

No TensorFlow here: a float ``.tflite`` (published, or made by the TF converter
from a Keras model) is calibrated once (:meth:`FloatGraph.calibrate`), then any
number of variants are quantized from the stored statistics
(:meth:`FloatGraph.quantize`): full int8, int16 activations, int4 weights,
weight-only int4, dynamic range, float16, and mixed models where layers chosen
by name or op type stay float or use other precisions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import ConversionError, ModelError
from .litert import _first_line, captured_native_output
from .recipe import Override, Precision
from .types import QuantMode, TensorSpec

__all__ = [
    "FloatGraph",
    "Layer",
    "litert_quantizer_version",
    "litert_recipe",
    "load_float_tflite",
    "model_layers",
    "resolve_overrides",
    "weight_census",
]

SIGNATURE_KEY = "serving_default"
_STATIC_KEY = "min_max_uniform_quantize"
# Ops that only move or reshape data: never worth keeping in float on their own.
_DATA_MOVEMENT = frozenset(
    {
        "RESHAPE",
        "SHAPE",
        "STRIDED_SLICE",
        "PACK",
        "UNPACK",
        "SQUEEZE",
        "EXPAND_DIMS",
        "TRANSPOSE",
        "CONCATENATION",
        "SLICE",
        "GATHER",
        "QUANTIZE",
        "DEQUANTIZE",
        "SPLIT",
        "PAD",
        "PADV2",
    }
)
# Ops with a weight tensor that int4 can take (LiteRT has int4 kernels for these two only).
INT4_WEIGHT_OPS = ("CONV_2D", "FULLY_CONNECTED")


def litert_quantizer_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("litert-quantizer")
    except PackageNotFoundError:  # pragma: no cover - a declared dependency
        return "not installed"


@dataclasses.dataclass(frozen=True)
class Layer:
    """One op of the float graph, named as recipes name it: by its output tensor name(s)."""

    index: int
    op: str  # op type, e.g. FULLY_CONNECTED
    name: str  # output tensor names joined by ';' (litert-quantizer's scope without its trailing ';')
    inputs: tuple[int, ...]  # tensor indices
    outputs: tuple[int, ...]
    has_weights: bool
    output_names: tuple[str, ...] = ()  # each output tensor's own name (names may themselves contain ';')

    @property
    def exact_pattern(self) -> str:
        """A regex that selects exactly this layer (litert-quantizer searches it in ``name + ';'``)."""
        return "^" + re.escape(self.name) + ";$"

    @property
    def data_movement(self) -> bool:
        return self.op in _DATA_MOVEMENT


# --------------------------------------------------------------------------- flatbuffer helpers


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _read(model: bytes) -> Any:
    from ai_edge_litert.tools import flatbuffer_utils

    try:
        return flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    except Exception as exc:  # flatbuffers raises struct/index errors on garbage
        raise ModelError(f"not a TFLite flatbuffer ({type(exc).__name__})") from exc


def _write(model_obj: Any) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model_obj))


def _op_names() -> dict[int, str]:
    schema = _schema()
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _name(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")


def _is_quantized(model_obj: Any) -> bool:
    for subgraph in model_obj.subgraphs or ():
        for tensor in subgraph.tensors or ():
            q = tensor.quantization
            if q is not None and q.scale is not None and len(q.scale):
                return True
    return False


def _graph_layers(model_obj: Any) -> tuple[Layer, ...]:
    names = _op_names()
    subgraph = model_obj.subgraphs[0]
    tensors = subgraph.tensors
    buffers = model_obj.buffers or []
    layers = []
    for i, op in enumerate(subgraph.operators or ()):
        code = model_obj.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode or 0))
        op_name = (
            names.get(builtin, f"OP_{builtin}")
            if builtin != _schema().BuiltinOperator.CUSTOM
            else f"CUSTOM:{_name(code.customCode)}"
        )
        outs = tuple(int(t) for t in op.outputs if t >= 0)
        ins = tuple(int(t) for t in op.inputs if t >= 0)
        out_names = [_name(tensors[t].name) for t in outs] or [_name(tensors[t].name) for t in ins]

        def constant(t: int) -> bool:
            b = tensors[t].buffer
            return 0 < b < len(buffers) and buffers[b].data is not None and len(buffers[b].data) > 0

        weights = any(constant(t) and len(tensors[t].shape if tensors[t].shape is not None else ()) >= 2 for t in ins)
        layers.append(
            Layer(
                index=i,
                op=op_name,
                name=";".join(n for n in out_names if n),
                inputs=ins,
                outputs=outs,
                has_weights=weights,
                output_names=tuple(_name(tensors[t].name) for t in outs),
            )
        )
    return tuple(layers)


def _add_default_signature(model_obj: Any) -> None:
    """Give a signature-less model the ``serving_default`` signature its inputs and outputs imply."""
    schema = _schema()
    subgraph = model_obj.subgraphs[0]

    def mapping(indices: Sequence[int], prefix: str) -> list[Any]:
        used: set[str] = set()
        maps = []
        for n, index in enumerate(indices):
            name = _name(subgraph.tensors[index].name) or f"{prefix}_{n}"
            if name in used:
                name = f"{prefix}_{n}"
            used.add(name)
            tm = schema.TensorMapT()
            tm.name = name
            tm.tensorIndex = int(index)
            maps.append(tm)
        return maps

    sig = schema.SignatureDefT()
    sig.inputs = mapping(list(subgraph.inputs), "input")
    sig.outputs = mapping(list(subgraph.outputs), "output")
    sig.signatureKey = SIGNATURE_KEY
    sig.subgraphIndex = 0
    model_obj.signatureDefs = [sig]


# --------------------------------------------------------------------------- recipes


def _static(
    regex: str, operation: str, activation_bits: int, weight_bits: int, per_channel: bool = True
) -> dict[str, Any]:
    return {
        "regex": regex,
        "operation": operation,
        "algorithm_key": _STATIC_KEY,
        "op_config": {
            "activation_tensor_config": {
                "num_bits": activation_bits,
                "symmetric": activation_bits == 16,  # int16 activations are symmetric in LiteRT's int16x8 kernels
                "granularity": "TENSORWISE",
                "dtype": "INT",
            },
            "weight_tensor_config": {
                "num_bits": weight_bits,
                "symmetric": True,
                "granularity": "CHANNELWISE" if per_channel else "TENSORWISE",
                "dtype": "INT",
            },
            "compute_precision": "INTEGER",
            "explicit_dequantize": False,
            "skip_checks": False,
            "min_weight_elements": 0,
        },
    }


def _weights_only(regex: str, operation: str, bits: int, dynamic: bool, per_channel: bool = True) -> dict[str, Any]:
    return {
        "regex": regex,
        "operation": operation,
        "algorithm_key": _STATIC_KEY,
        "op_config": {
            "weight_tensor_config": {
                "num_bits": bits,
                "symmetric": True,
                "granularity": "CHANNELWISE" if per_channel else "TENSORWISE",
                "dtype": "INT",
            },
            # dynamic: integer kernels quantize activations on the fly; weight-only: float compute
            "compute_precision": "INTEGER" if dynamic else "FLOAT",
            "explicit_dequantize": not dynamic,
            "skip_checks": False,
            "min_weight_elements": 0,
        },
    }


def _float16(regex: str) -> dict[str, Any]:
    return {
        "regex": regex,
        "operation": "*",
        "algorithm_key": "float_casting",
        "op_config": {
            "weight_tensor_config": {"num_bits": 16, "symmetric": False, "granularity": "TENSORWISE", "dtype": "FLOAT"},
            "compute_precision": "FLOAT",
            "explicit_dequantize": True,
            "skip_checks": False,
            "min_weight_elements": 0,
        },
    }


def _precision_rule(regex: str, operation: str, precision: Precision, per_channel: bool) -> dict[str, Any]:
    if precision is Precision.FLOAT:
        return {"regex": regex, "operation": operation, "algorithm_key": "no_quantize"}
    if precision is Precision.INT16:
        return _static(regex, operation, 16, 8, per_channel)
    if precision is Precision.INT8:
        return _static(regex, operation, 8, 8, per_channel)
    return _static(regex, operation, 8, 4, per_channel)  # INT4: int4 weights, int8 activations


def litert_recipe(
    mode: QuantMode, overrides: Sequence[Override] = (), per_channel: bool = True
) -> list[dict[str, Any]]:
    """litert-quantizer's recipe (a list of rules; later rules win) for an edgeq mode and overrides."""
    if mode is QuantMode.INT8:
        rules = [_static(".*", "*", 8, 8, per_channel)]
    elif mode is QuantMode.INT16X8:
        rules = [_static(".*", "*", 16, 8, per_channel)]
    elif mode is QuantMode.W4A8:
        rules = [_static(".*", "*", 8, 8, per_channel)] + [
            _static(".*", op, 8, 4, per_channel) for op in INT4_WEIGHT_OPS
        ]
    elif mode is QuantMode.INT4_WEIGHT:
        rules = [_weights_only(".*", "*", 4, dynamic=False, per_channel=per_channel)]
    elif mode is QuantMode.DYNAMIC:
        rules = [_weights_only(".*", "*", 8, dynamic=True, per_channel=per_channel)]
    elif mode is QuantMode.FLOAT16:
        rules = [_float16(".*")]
    else:
        raise ConversionError("float32 has no quantization recipe")  # callers keep the float model as it is
    for o in overrides:
        if o.layer is not None:
            rules.append(_precision_rule(o.layer, o.op or "*", o.precision, per_channel))
        else:
            rules.append(_precision_rule(".*", o.op or "*", o.precision, per_channel))
    return rules


def resolve_overrides(
    overrides: Sequence[Override], layers: Sequence[Layer], where: str = "recipe"
) -> dict[Override, tuple[Layer, ...]]:
    """The layers each override selects; a pattern or op type that selects none is an error with the closest name."""
    found: dict[Override, tuple[Layer, ...]] = {}
    ops = sorted({layer.op for layer in layers})
    for o in overrides:
        if o.op is not None and o.op not in ops:
            close = difflib.get_close_matches(o.op.upper(), ops, n=1, cutoff=0.5)
            raise ConversionError(
                f"{where}: op type {o.op!r} is not in this model",
                hint=(f"did you mean {close[0]!r}? " if close else "") + f"the model's op types: {', '.join(ops)}",
            )
        selected = tuple(
            layer
            for layer in layers
            if (o.op is None or layer.op == o.op) and (o.layer is None or re.search(o.layer, layer.name + ";"))
        )
        if not selected:
            names = [layer.name for layer in layers]
            close = difflib.get_close_matches(o.layer or "", names, n=1, cutoff=0.3)
            if not close:  # a short pattern against long fused names: compare with the name's parts
                parts = {part: layer.name for layer in layers for part in re.split(r"[;/]", layer.name) if part}
                near = difflib.get_close_matches(o.layer or "", list(parts), n=1, cutoff=0.5)
                close = [parts[near[0]]] if near else []
            raise ConversionError(
                f"{where}: layer pattern {o.layer!r} matches no layer of this model",
                hint=f"the closest layer name is {close[0]!r}"
                if close
                else "list the layers with `edgeq inspect --layers MODEL`",
            )
        found[o] = selected
    return found


# --------------------------------------------------------------------------- the float graph


class FloatGraph:
    """A float ``.tflite`` model ready for litert-quantizer: signature, layers, calibration, variants."""

    def __init__(self, model: bytes, source: str = "model"):
        obj = _read(model)
        if not obj.subgraphs:
            raise ModelError(f"{source}: the model has no subgraph")
        if _is_quantized(obj):
            raise ModelError(
                f"{source}: the model is already quantized",
                hint="give the float model it was made from; edgeq quantizes float models only",
            )
        self.source = source
        self.signature_added = not obj.signatureDefs
        if self.signature_added:
            # litert-quantizer calibrates through a signature; published models often have none
            _add_default_signature(obj)
            model = _write(obj)
        elif len(obj.signatureDefs) > 1:
            keys = ", ".join(_name(s.signatureKey) for s in obj.signatureDefs)
            raise ModelError(
                f"{source}: the model has {len(obj.signatureDefs)} signatures ({keys}); edgeq quantizes models with one"
            )
        self.model = bytes(model)
        sig = obj.signatureDefs[0]
        self.signature_key = _name(sig.signatureKey)
        if sig.subgraphIndex:
            raise ModelError(
                f"{source}: the signature runs subgraph {sig.subgraphIndex}; edgeq needs it to run the main subgraph"
            )
        self.layers = _graph_layers(obj)
        tensors = obj.subgraphs[0].tensors
        schema = _schema()
        types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        self.inputs = tuple(
            TensorSpec(
                name=_name(m.name),
                shape=(None, *[int(d) if d >= 0 else None for d in list(tensors[m.tensorIndex].shape)[1:]]),
                dtype=types.get(int(tensors[m.tensorIndex].type), "float32"),
            )
            for m in sig.inputs
        )
        self.output_names = tuple(_name(m.name) for m in sig.outputs)

    def layer_by_name(self) -> dict[str, Layer]:
        return {layer.name: layer for layer in self.layers}

    def calibration_data(self, samples: Mapping[str, np.ndarray]) -> dict[str, list[dict[str, np.ndarray]]]:
        names = [spec.name for spec in self.inputs]
        n = len(samples[names[0]])
        return {self.signature_key: [{k: np.asarray(samples[k][i : i + 1]) for k in names} for i in range(n)]}

    def calibrate(self, samples: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Min/max statistics of every tensor over ``samples``: enough for every variant :meth:`quantize` makes."""
        from litert_quantizer import quantizer

        with captured_native_output(), _quiet():
            q = quantizer.Quantizer(bytearray(self.model), litert_recipe(QuantMode.INT8))
            try:
                return q.calibrate(self.calibration_data(samples), num_threads=max(1, os.cpu_count() or 1))
            except (ValueError, RuntimeError) as exc:
                raise ConversionError(f"calibration failed: {_first_line(exc)}") from exc

    def quantize(
        self,
        mode: QuantMode,
        statistics: Mapping[str, Any] | None,
        overrides: Sequence[Override] = (),
        per_channel: bool = True,
    ) -> bytes:
        """One variant of the model, from stored calibration ``statistics`` (not re-calibrated)."""
        if mode is QuantMode.FLOAT32 and not overrides:
            return self.model
        if mode is QuantMode.FLOAT32:
            raise ConversionError("float32 takes no per-layer overrides (every layer is already float)")
        resolve_overrides(overrides, self.layers)
        from litert_quantizer import quantizer

        rules = litert_recipe(mode, overrides, per_channel)
        with captured_native_output(), _quiet():
            try:
                q = quantizer.Quantizer(bytearray(self.model), rules)
                if q.need_calibration and not statistics:
                    raise ConversionError(f"--mode {mode.value} needs calibration data (--calib PATH)")
                result = q.quantize(
                    dict(statistics or {}) if q.need_calibration else None, enable_progress_report=False
                )
            except ConversionError:
                raise
            except (ValueError, RuntimeError, KeyError, NotImplementedError) as exc:
                raise ConversionError(
                    f"litert-quantizer could not make the {mode.value} variant: {_first_line(exc)}"
                ) from exc
        return bytes(result.quantized_model)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence litert-quantizer's calibrator warning about preserving every tensor: that is what calibration needs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*", category=UserWarning)
        yield


def load_float_tflite(path: str | os.PathLike) -> FloatGraph:
    """Open a float ``.tflite`` file (refusing quantized ones)."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(
            f"{path}: not a TFLite model (no TFL3 identifier)",
            hint="give a .tflite flatbuffer, a SavedModel directory or a .keras/.h5 file",
        )
    return FloatGraph(data, source=str(path))


def model_layers(path: str | os.PathLike) -> tuple[Layer, ...]:
    """The layers of any ``.tflite`` file (float or quantized), as recipes name them."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    return _graph_layers(_read(path.read_bytes()))


def weight_census(model: bytes) -> dict[str, dict[str, int]]:
    """Per op type, how many ops take int4 / int8 / float16 / float32 weights (``int4->float``: weight-only, dequantized)."""
    from .kernels import inspect_kernels

    return inspect_kernels(model).weights


def layers_summary(layers: Iterable[Layer]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for layer in layers:
        counts[layer.op] = counts.get(layer.op, 0) + 1
    return dict(sorted(counts.items()))
