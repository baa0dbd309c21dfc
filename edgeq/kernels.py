"""Kernels: which special TFLite kernels a model needs, and which runtime releases have them.

A quantized model is more than int8: litert-quantizer also writes int4
weights (with int8, int16 or float activations), int4 tensors dequantized
at load, int16 activations, QUANTIZE ops between int16 and int8 regions and
dynamic-range ops with per-channel weights. :func:`required_features` reads
those needs from the flatbuffer (no interpreter: the Python API shows int4
tensors as int8), and :data:`CAPABILITIES` says, per runtime family, from
which release on each need is met.

Every entry of the table was measured: litert-quantizer 0.11 variants of two
small Keras models run under each release (``allocate_tensors()``, then
``invoke()`` on random inputs, outputs compared with ai-edge-litert 2.3.0's).
A release "has" a feature when the model runs AND its outputs agree: old
runtimes load some of these models and return zeros or garbage, because
litert-quantizer stamps every op as version 1, so the op-version check that
would refuse them never fires. tests/test_kernels.py re-measures the
tflite-runtime 2.14 column whenever that runtime is installed.

A feature the table has no row for (an op never measured) is assumed to run
on the newest ai-edge-litert only, the runtime litert-quantizer writes for,
and is not known to run anywhere else.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .errors import ConversionError, ModelError
from .runtimes import RUNTIMES

__all__ = [
    "CAPABILITIES",
    "NEWEST",
    "RUNTIME_FAMILIES",
    "FeatureKind",
    "KernelFeature",
    "ModelKernels",
    "RuntimeTarget",
    "Support",
    "check_runs_on_target",
    "inspect_kernels",
    "parse_version",
    "required_features",
    "runs_on",
    "support_for",
    "unsupported",
]

RUNTIME_FAMILIES = RUNTIMES  # the table's columns: every runtime edgeq knows

# The newest release of each family that the table was measured against: what an unknown version
# is taken to be. tflite-runtime 2.14.0 is that package's final release.
NEWEST: Mapping[str, str] = {"ai-edge-litert": "2.3.0", "tflite-runtime": "2.14.0", "tensorflow": "2.21.0"}


# --------------------------------------------------------------------------- what a model needs


class FeatureKind(str, enum.Enum):
    """A kind of kernel beyond plain int8 / float: the features a runtime may lack."""

    INT4_WEIGHTS = "int4-weights"  # int4 filter, int8 activations (w4a8)
    INT4_WEIGHTS_INT16 = "int4-weights-int16"  # int4 filter, int16 activations
    INT4_WEIGHTS_DYNAMIC = "int4-weights-dynamic"  # per-channel int4 filter, float activations quantized on the fly
    INT4_WEIGHTS_DYNAMIC_PER_TENSOR = "int4-weights-dynamic-per-tensor"  # the same with one scale for the whole filter
    INT4_DEQUANTIZE = "int4-dequantize"  # DEQUANTIZE of an int4 constant: weight-only int4
    DYNAMIC = "dynamic"  # dynamic-range op with per-tensor int8 weights
    DYNAMIC_PER_CHANNEL = "dynamic-per-channel"  # dynamic-range op with per-channel int8 weights
    PER_CHANNEL = "per-channel"  # integer op with per-channel weights where the int8 spec has per-tensor ones
    INT16_ACTIVATIONS = "int16-activations"  # ops computing on int16 activations (16x8)
    REQUANTIZE_INT8_INT16 = "requantize-int8-int16"  # QUANTIZE int8 -> int16: entering an int16 region
    REQUANTIZE_INT16_INT8 = "requantize-int16-int8"  # QUANTIZE int16 -> int8: leaving an int16 region
    LOW_BIT_TENSORS = "low-bit-tensors"  # int2 / uint4 constants: nothing measured runs them

    @property
    def per_op(self) -> bool:
        """Kinds whose kernels differ per op type: one feature (and one table row) per op type."""
        return self in _PER_OP


_PER_OP = frozenset(
    {
        FeatureKind.INT4_WEIGHTS,
        FeatureKind.INT4_WEIGHTS_INT16,
        FeatureKind.INT4_WEIGHTS_DYNAMIC,
        FeatureKind.INT4_WEIGHTS_DYNAMIC_PER_TENSOR,
        FeatureKind.DYNAMIC,
        FeatureKind.DYNAMIC_PER_CHANNEL,
        FeatureKind.PER_CHANNEL,
    }
)


@dataclasses.dataclass(frozen=True)
class KernelFeature:
    """One kernel feature a model needs: its kind, the op types involved and how many ops need it."""

    kind: FeatureKind
    ops: tuple[str, ...]  # op types, sorted; exactly one for per-op kinds
    count: int  # ops of the model that need it

    @property
    def key(self) -> str:
        """The table row: ``int4-weights:FULLY_CONNECTED`` for per-op kinds, the kind alone otherwise."""
        return f"{self.kind.value}:{self.ops[0]}" if self.kind.per_op else self.kind.value

    def __str__(self) -> str:
        return self.key

    def describe(self) -> str:
        """The kernel in words, for reasons: "FULLY_CONNECTED kernel for int4 weights with int8 activations"."""
        op = self.ops[0] if self.ops else "?"
        kind = self.kind
        if kind is FeatureKind.INT4_WEIGHTS:
            return f"{op} kernel for int4 weights with int8 activations"
        if kind is FeatureKind.INT4_WEIGHTS_INT16:
            return f"{op} kernel for int4 weights with int16 activations"
        if kind is FeatureKind.INT4_WEIGHTS_DYNAMIC:
            return f"dynamic-range {op} kernel for per-channel int4 weights"
        if kind is FeatureKind.INT4_WEIGHTS_DYNAMIC_PER_TENSOR:
            return f"dynamic-range {op} kernel for per-tensor int4 weights"
        if kind is FeatureKind.INT4_DEQUANTIZE:
            return "DEQUANTIZE kernel for int4 tensors (weight-only int4)"
        if kind is FeatureKind.DYNAMIC:
            return f"dynamic-range {op} kernel for per-tensor int8 weights"
        if kind is FeatureKind.DYNAMIC_PER_CHANNEL:
            return f"dynamic-range {op} kernel for per-channel int8 weights"
        if kind is FeatureKind.PER_CHANNEL:
            return f"integer {op} kernel for per-channel weights"
        if kind is FeatureKind.INT16_ACTIVATIONS:
            return f"int16-activation kernels ({', '.join(self.ops)})"
        if kind is FeatureKind.REQUANTIZE_INT8_INT16:
            return "QUANTIZE kernel from int8 to int16 (for int16 layers inside an int8 model)"
        if kind is FeatureKind.REQUANTIZE_INT16_INT8:
            return "QUANTIZE kernel from int16 to int8"
        return f"kernels for int2/uint4 tensors ({', '.join(self.ops)})"


@dataclasses.dataclass(frozen=True)
class ModelKernels:
    """What :func:`inspect_kernels` reads from a model: the features it needs and its weights per op type."""

    features: tuple[KernelFeature, ...]
    weights: dict[str, dict[str, int]]  # op type -> {"int4": n, "int8": n, "int4->float": n, "float32": n, ...}

    def weights_text(self) -> str:
        return weights_text(self.weights)


def weights_text(weights: dict[str, dict[str, int]]) -> str:
    """``int4: CONV_2D x2; stayed int8: FULLY_CONNECTED x1`` (``stayed`` only beside int4 weights)."""
    by_kind: dict[str, list[str]] = {}
    for op, counts in weights.items():
        for kind, n in counts.items():
            by_kind.setdefault(kind, []).append(f"{op} x{n}")
    has_int4 = any(kind.startswith("int4") for kind in by_kind)
    order = sorted(by_kind, key=lambda k: (not k.startswith("int4"), k))
    parts = []
    for kind in order:
        label = f"stayed {kind}" if has_int4 and kind == "int8" else kind
        parts.append(f"{label}: {', '.join(by_kind[kind])}")
    return "; ".join(parts)


# TensorType values of the TFLite schema (schema_py_generated.TensorType), kept here so that reading
# a model needs no lookup; tests check them against the schema.
_FLOAT32, _FLOAT16, _UINT8, _INT16, _INT8, _INT4, _INT2, _UINT4 = 0, 1, 3, 7, 9, 17, 19, 20
_FLOATS = frozenset({_FLOAT32, _FLOAT16})
_LOW_BIT = frozenset({_INT2, _UINT4})
# Ops whose per-channel weights are part of TFLite's int8 quantization spec (per-axis from the start).
_PER_AXIS_IN_SPEC = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D", "CONV_3D_TRANSPOSE"})


def _read(model: bytes) -> Any:
    from ai_edge_litert.tools import flatbuffer_utils

    if len(model) < 8 or bytes(model[4:8]) != b"TFL3":
        raise ModelError("not a TFLite model (no TFL3 identifier)")
    try:
        return flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    except Exception as exc:  # flatbuffers raises struct/index errors on garbage
        raise ModelError(f"not a TFLite flatbuffer ({type(exc).__name__})") from exc


def _names(enum_class: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}


def inspect_kernels(model: bytes) -> ModelKernels:
    """The kernel features ``model`` needs and its weights per op type, read from the flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    obj = _read(model)
    op_names, type_names = _names(schema.BuiltinOperator), _names(schema.TensorType)
    buffers = obj.buffers or []
    found: dict[tuple[FeatureKind, str], int] = {}  # (kind, op or "") -> ops
    int16_ops: dict[str, int] = {}
    low_bit_ops: dict[str, int] = {}
    weights: dict[str, dict[str, int]] = {}

    def need(kind: FeatureKind, op: str = "") -> None:
        found[(kind, op)] = found.get((kind, op), 0) + 1

    for subgraph in obj.subgraphs or ():
        tensors = subgraph.tensors or []
        # the helpers below read this subgraph's tensors (bound as defaults: they are used in this iteration only)

        def constant(t: int, tensors: list[Any] = tensors) -> bool:
            b = tensors[t].buffer
            if not 0 < b < len(buffers):
                return False
            buf = buffers[b]
            return (buf.data is not None and len(buf.data) > 0) or bool(getattr(buf, "offset", 0))

        def weight_like(t: int, tensors: list[Any] = tensors) -> bool:
            shape = tensors[t].shape if tensors[t].shape is not None else ()
            return constant(t) and len(shape) >= 2

        def per_channel(t: int, tensors: list[Any] = tensors) -> bool:
            q = tensors[t].quantization
            return q is not None and q.scale is not None and len(q.scale) > 1

        ops = []
        for op in subgraph.operators or ():
            code = obj.operatorCodes[op.opcodeIndex]
            builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode or 0))
            name = op_names.get(builtin, f"OP_{builtin}")
            ins = [int(t) for t in (op.inputs if op.inputs is not None else ()) if t >= 0]
            outs = [int(t) for t in (op.outputs if op.outputs is not None else ()) if t >= 0]
            ops.append((name, ins, outs))
        producer = {t: (name, ins) for name, ins, outs in ops for t in outs}

        for name, ins, outs in ops:
            in_types = [int(tensors[t].type) for t in ins]
            out_type = int(tensors[outs[0]].type) if outs else None
            if any(t in _LOW_BIT for t in in_types):
                low_bit_ops[name] = low_bit_ops.get(name, 0) + 1
            if name == "DEQUANTIZE":
                if in_types and in_types[0] == _INT4:
                    need(FeatureKind.INT4_DEQUANTIZE)
                continue
            if name == "QUANTIZE":
                if in_types and in_types[0] == _INT8 and out_type == _INT16:
                    need(FeatureKind.REQUANTIZE_INT8_INT16)
                elif in_types and in_types[0] == _INT16 and out_type == _INT8:
                    need(FeatureKind.REQUANTIZE_INT16_INT8)
                continue
            if out_type == _INT16:
                int16_ops[name] = int16_ops.get(name, 0) + 1

            # The weight: the first constant input of two or more dimensions, or one dequantized at load.
            kind: str | None = None
            w: int | None = None
            wtype: int | None = None
            for t in ins:
                if weight_like(t):
                    w = t
                    wtype = int(tensors[t].type)
                    kind = type_names.get(wtype, "?").lower()
                    break
                p = producer.get(t)
                if p is not None and p[0] == "DEQUANTIZE" and p[1] and weight_like(p[1][0]):
                    w, wtype = None, None
                    kind = type_names.get(int(tensors[p[1][0]].type), "?").lower() + "->float"
                    break
            if kind is None:
                continue
            counts = weights.setdefault(name, {})
            counts[kind] = counts.get(kind, 0) + 1
            if w is None:
                continue
            if wtype == _INT4:
                if out_type in (_INT8, _UINT8):
                    need(FeatureKind.INT4_WEIGHTS, name)
                elif out_type == _INT16:
                    need(FeatureKind.INT4_WEIGHTS_INT16, name)
                elif out_type in _FLOATS:
                    need(
                        FeatureKind.INT4_WEIGHTS_DYNAMIC
                        if per_channel(w)
                        else FeatureKind.INT4_WEIGHTS_DYNAMIC_PER_TENSOR,
                        name,
                    )
            elif wtype == _INT8 and out_type in _FLOATS:
                need(FeatureKind.DYNAMIC_PER_CHANNEL if per_channel(w) else FeatureKind.DYNAMIC, name)
            elif (
                wtype == _INT8
                and out_type in (_INT8, _UINT8, _INT16)
                and per_channel(w)
                and name not in _PER_AXIS_IN_SPEC
            ):
                need(FeatureKind.PER_CHANNEL, name)

    features = []
    for (feature_kind, op), n in found.items():
        involved = (op,) if op else ("DEQUANTIZE",) if feature_kind is FeatureKind.INT4_DEQUANTIZE else ("QUANTIZE",)
        features.append(KernelFeature(feature_kind, involved, n))
    if int16_ops:
        features.append(KernelFeature(FeatureKind.INT16_ACTIVATIONS, tuple(sorted(int16_ops)), sum(int16_ops.values())))
    if low_bit_ops:
        features.append(
            KernelFeature(FeatureKind.LOW_BIT_TENSORS, tuple(sorted(low_bit_ops)), sum(low_bit_ops.values()))
        )
    kinds = list(FeatureKind)
    features.sort(key=lambda f: (kinds.index(f.kind), f.ops))
    return ModelKernels(tuple(features), dict(sorted((op, dict(sorted(c.items()))) for op, c in weights.items())))


def required_features(model: bytes) -> tuple[KernelFeature, ...]:
    """The kernel features beyond plain int8 / float that ``model`` (the bytes of a .tflite) needs."""
    return inspect_kernels(model).features


# --------------------------------------------------------------------------- which releases have them


@dataclasses.dataclass(frozen=True)
class Support:
    """Which releases of one runtime family have one kernel feature."""

    since: str | None  # the oldest release known to have it; None: no release has it (up to NEWEST)
    source: str  # "measured" (on this project's machines; `evidence` says which releases) | "public" | "assumed"
    evidence: str  # the releases measured with and without it
    lacking: str | None = None  # the newest release measured WITHOUT it (before `since`)
    without: str = ""  # what a release without it does: "fails at prepare", "runs, returns zeros", ...
    gap: tuple[str, str] | None = None  # releases after `since` that lost it again: (first, last), both measured


def _m(
    since: str | None, evidence: str, lacking: str | None = None, without: str = "", gap: tuple[str, str] | None = None
) -> Support:
    return Support(since, "measured", evidence, lacking, without, gap)


_PREPARE = "fails at prepare"
_WRONG = "runs, but returns wrong outputs"
_GARBAGE = "runs, but returns garbage that changes from run to run"
_ZEROS = "runs, but returns zeros"
_NO_INT4 = "does not know the int4 type"

# Per feature row, per runtime family: the oldest release that has it. Measured on x86-64 (manylinux
# wheels from PyPI, each release in its own virtualenv) with litert-quantizer 0.11 models: the variants and
# the runner of tests/test_kernels.py, plus variants that quantize one op type at a time: ai-edge-litert 1.0.0, 1.0.1,
# 1.1.0, 1.1.2, 1.2.0, 1.3.0, 1.4.0, 2.0.2, 2.1.0-2.1.3, 2.1.6, 2.2.0, 2.3.0; tflite-runtime 2.7.0, 2.9.1,
# 2.10.0, 2.11.0, 2.12.0, 2.13.0, 2.14.0; tensorflow (tf.lite.Interpreter) 2.12.1, 2.13.1, 2.14.1, 2.15.1,
# 2.16.2, 2.17.1, 2.18.1, 2.19.1, 2.20.0, 2.21.0. "Oldest measured" means older releases were not run:
# a version below it is "not known to have" the feature, not "known to lack" it.
CAPABILITIES: Mapping[str, Mapping[str, Support]] = {
    "int4-weights:CONV_2D": {
        # measured: every ai-edge-litert release runs it
        "ai-edge-litert": _m("1.0.0", "1.0.0 (the first release) to 2.3.0 run it"),
        # measured: 2.11.0 does not know the int4 type; 2.12.0-2.14.0 run it. (A public note dates int4
        # kernels to TF Lite 2.11; measurement disagrees, so the measurement is recorded.)
        "tflite-runtime": _m("2.12.0", "2.12.0-2.14.0 run it; 2.7.0-2.11.0 fail", "2.11.0", _NO_INT4),
        # measured: 2.12.1-2.21.0 run it
        "tensorflow": _m("2.12.1", "2.12.1-2.21.0 run it (older releases not measured)"),
    },
    "int4-weights:FULLY_CONNECTED": {
        # measured: 1.0.0 and 1.0.1 fail at prepare (fully_connected.cc: int4 filters only with int16 inputs)
        "ai-edge-litert": _m("1.1.0", "1.1.0-2.3.0 run it; 1.0.0, 1.0.1 fail at prepare", "1.0.1", _PREPARE),
        # measured: 2.14.0 fails at prepare (fully_connected.cc:409 filter->type == kTfLiteInt8)
        "tflite-runtime": _m(None, "2.7.0-2.14.0 fail", "2.14.0", _PREPARE),
        # measured: 2.18.1 fails at prepare; 2.19.1-2.21.0 run it
        "tensorflow": _m("2.19.1", "2.19.1-2.21.0 run it; 2.12.1-2.18.1 fail at prepare", "2.18.1", _PREPARE),
    },
    "int4-weights-int16:CONV_2D": {
        # measured: 1.0.x run it with wrong outputs
        "ai-edge-litert": _m("1.1.0", "1.1.0-2.3.0 run it; 1.0.0, 1.0.1 return wrong outputs", "1.0.1", _WRONG),
        # measured: 2.12.0-2.14.0 run it with wrong outputs (the int16 path does not unpack int4)
        "tflite-runtime": _m(None, "2.12.0-2.14.0 return wrong outputs; older ones do not know int4", "2.14.0", _WRONG),
        # measured: 2.12.1-2.18.1 wrong outputs; 2.19.1-2.21.0 right
        "tensorflow": _m("2.19.1", "2.19.1-2.21.0 run it; 2.12.1-2.18.1 return wrong outputs", "2.18.1", _WRONG),
    },
    "int4-weights-int16:FULLY_CONNECTED": {
        # measured: every release runs it
        "ai-edge-litert": _m("1.0.0", "1.0.0-2.3.0 run it"),
        # measured: fails at prepare
        "tflite-runtime": _m(None, "2.7.0-2.14.0 fail", "2.14.0", _PREPARE),
        # measured: 2.17.1 fails at prepare; 2.18.1-2.21.0 run it
        "tensorflow": _m("2.18.1", "2.18.1-2.21.0 run it; 2.12.1-2.17.1 fail at prepare", "2.17.1", _PREPARE),
    },
    "int4-weights-dynamic:CONV_2D": {
        # measured: 1.0.x return values around 1e7 (garbage)
        "ai-edge-litert": _m("1.1.0", "1.1.0-2.3.0 run it; 1.0.0, 1.0.1 return garbage", "1.0.1", _WRONG),
        # measured: 2.12.0-2.14.0 return NaN or garbage; older releases do not know int4
        "tflite-runtime": _m(None, "2.12.0-2.14.0 return NaN/garbage; 2.7.0-2.11.0 fail", "2.14.0", _WRONG),
        # measured: 2.12.1-2.18.1 wrong; 2.19.1-2.21.0 right
        "tensorflow": _m("2.19.1", "2.19.1-2.21.0 run it; 2.12.1-2.18.1 return wrong outputs", "2.18.1", _WRONG),
    },
    "int4-weights-dynamic-per-tensor:CONV_2D": {
        # measured: the same releases as with per-channel weights
        "ai-edge-litert": _m("1.1.0", "1.1.0-2.3.0 run it; 1.0.0, 1.0.1 return garbage", "1.0.1", _WRONG),
        "tflite-runtime": _m(None, "2.12.0-2.14.0 return garbage; 2.7.0-2.11.0 fail", "2.14.0", _WRONG),
        "tensorflow": _m("2.19.1", "2.19.1-2.21.0 run it; 2.12.1-2.18.1 return wrong outputs", "2.18.1", _WRONG),
    },
    "int4-weights-dynamic:FULLY_CONNECTED": {
        # measured: every release runs it
        "ai-edge-litert": _m("1.0.0", "1.0.0-2.3.0 run it"),
        # measured: 2.13.0 and 2.14.0 run it and return zeros (the per-channel scales are ignored)
        "tflite-runtime": _m(None, "2.13.0, 2.14.0 return zeros; 2.7.0-2.12.0 fail", "2.14.0", _ZEROS),
        # measured: 2.13.1-2.15.1 return zeros; 2.16.2-2.21.0 right
        "tensorflow": _m("2.16.2", "2.16.2-2.21.0 run it; 2.13.1-2.15.1 return zeros, 2.12.1 fails", "2.15.1", _ZEROS),
    },
    "int4-weights-dynamic-per-tensor:FULLY_CONNECTED": {
        # measured: 1.0.0-1.2.0 fail at prepare in XNNPACK ("unsupported per-tensor quantization scale parameter for INT4 tensor")
        "ai-edge-litert": _m("1.3.0", "1.3.0-2.3.0 run it; 1.0.0-1.2.0 fail at prepare", "1.2.0", _PREPARE),
        # measured: 2.14.0 runs it; 2.13.0 returns wrong outputs
        "tflite-runtime": _m(
            "2.14.0", "2.14.0 runs it; 2.13.0 returns wrong outputs; 2.7.0-2.12.0 fail", "2.13.0", _WRONG
        ),
        # measured: 2.14.1-2.16.2 run it, 2.17.1-2.19.1 fail at prepare in XNNPACK (a regression), 2.20.0-2.21.0 run it
        "tensorflow": _m(
            "2.14.1",
            "2.14.1-2.16.2 and 2.20.0-2.21.0 run it; 2.17.1-2.19.1 fail at prepare; 2.13.1 returns wrong outputs",
            "2.13.1",
            _WRONG,
            gap=("2.17.1", "2.19.1"),
        ),
    },
    "int4-dequantize": {
        # measured: every release runs it
        "ai-edge-litert": _m("1.0.0", "1.0.0-2.3.0 run it"),
        # measured: 2.14.0 fails at prepare (dequantize.cc:58 input type)
        "tflite-runtime": _m(None, "2.7.0-2.14.0 fail", "2.14.0", _PREPARE),
        # measured: 2.17.1 fails at prepare; 2.18.1-2.21.0 run it
        "tensorflow": _m("2.18.1", "2.18.1-2.21.0 run it; 2.12.1-2.17.1 fail at prepare", "2.17.1", _PREPARE),
    },
    "dynamic:CONV_2D": {
        "ai-edge-litert": _m("1.0.0", "1.0.0-2.3.0 run it"),
        "tflite-runtime": _m("2.7.0", "2.7.0-2.14.0 run it (older releases not measured)"),
        "tensorflow": _m("2.12.1", "2.12.1-2.21.0 run it (older releases not measured)"),
    },
    "dynamic:FULLY_CONNECTED": {
        "ai-edge-litert": _m("1.0.0", "1.0.0-2.3.0 run it"),
        "tflite-runtime": _m("2.7.0", "2.7.0-2.14.0 run it (older releases not measured)"),
        "tensorflow": _m("2.12.1", "2.12.1-2.21.0 run it (older releases not measured)"),
    },
    "dynamic:DEPTHWISE_CONV_2D": {
        # measured: litert-quantizer's per-tensor dynamic-range DEPTHWISE_CONV_2D returns garbage that differs
        # from run to run on every release of every family (per-channel weights are fine: see below)
        "ai-edge-litert": _m(None, "1.0.0-2.3.0 return garbage", "2.3.0", _GARBAGE),
        "tflite-runtime": _m(None, "2.7.0-2.14.0 return garbage", "2.14.0", _GARBAGE),
        "tensorflow": _m(None, "2.12.1-2.21.0 return garbage", "2.21.0", _GARBAGE),
    },
    "dynamic:TRANSPOSE_CONV": {
        # measured: 1.0.x fail at prepare (transpose_conv.cc: one scale per output channel expected)
        "ai-edge-litert": _m("1.1.0", "1.1.0-2.3.0 run it; 1.0.0, 1.0.1 fail at prepare", "1.0.1", _PREPARE),
        # measured: transpose_conv.cc weights->type != input->type
        "tflite-runtime": _m(None, "2.7.0-2.14.0 fail at prepare", "2.14.0", _PREPARE),
        "tensorflow": _m("2.19.1", "2.19.1-2.21.0 run it; 2.12.1-2.18.1 fail at prepare", "2.18.1", _PREPARE),
    },
    "dynamic-per-channel:CONV_2D": {
        "ai-edge-litert": _m("1.0.0", "1.0.0-2.3.0 run it"),
        "tflite-runtime": _m("2.7.0", "2.7.0-2.14.0 run it (older releases not measured)"),
        "tensorflow": _m("2.12.1", "2.12.1-2.21.0 run it (older releases not measured)"),
    },
    "dynamic-per-channel:FULLY_CONNECTED": {
        "ai-edge-litert": _m("1.0.0", "1.0.0-2.3.0 run it"),
        # measured: every tflite-runtime runs it and returns zeros (the per-channel scales are ignored)
        "tflite-runtime": _m(None, "2.7.0-2.14.0 return zeros", "2.14.0", _ZEROS),
        # measured: 2.15.1 returns zeros; 2.16.2-2.21.0 right
        "tensorflow": _m("2.16.2", "2.16.2-2.21.0 run it; 2.12.1-2.15.1 return zeros", "2.15.1", _ZEROS),
    },
    "dynamic-per-channel:DEPTHWISE_CONV_2D": {
        "ai-edge-litert": _m("1.0.0", "1.0.0-2.3.0 run it"),
        "tflite-runtime": _m("2.7.0", "2.7.0-2.14.0 run it (older releases not measured)"),
        "tensorflow": _m("2.12.1", "2.12.1-2.21.0 run it (older releases not measured)"),
    },
    "dynamic-per-channel:TRANSPOSE_CONV": {
        "ai-edge-litert": _m("1.0.0", "1.0.0-2.3.0 run it"),
        # measured: transpose_conv.cc weights->type != input->type
        "tflite-runtime": _m(None, "2.7.0-2.14.0 fail at prepare", "2.14.0", _PREPARE),
        "tensorflow": _m("2.17.1", "2.17.1-2.21.0 run it; 2.12.1-2.16.2 fail at prepare", "2.16.2", _PREPARE),
    },
    "per-channel:FULLY_CONNECTED": {
        "ai-edge-litert": _m("1.0.0", "1.0.0-2.3.0 run it"),
        # measured: 2.7.0 and 2.9.1 run it and return wrong outputs (one scale for every channel)
        "tflite-runtime": _m("2.10.0", "2.10.0-2.14.0 run it; 2.7.0, 2.9.1 return wrong outputs", "2.9.1", _WRONG),
        "tensorflow": _m("2.12.1", "2.12.1-2.21.0 run it (older releases not measured)"),
    },
    "int16-activations": {
        # measured on CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, FULLY_CONNECTED, RESHAPE, RELU with per-tensor
        # weights (per-channel FULLY_CONNECTED is its own row); other ops with int16 activations are taken to match
        "ai-edge-litert": _m("1.0.0", "1.0.0-2.3.0 run it"),
        "tflite-runtime": _m("2.7.0", "2.7.0-2.14.0 run it (older releases not measured)"),
        "tensorflow": _m("2.12.1", "2.12.1-2.21.0 run it (older releases not measured)"),
    },
    "requantize-int8-int16": {
        # measured: a patch release added it: 2.1.2 fails at prepare, 2.1.3 runs it
        "ai-edge-litert": _m("2.1.3", "2.1.3-2.3.0 run it; 1.0.0-2.1.2 fail at prepare", "2.1.2", _PREPARE),
        # measured: quantize.cc:136 output->type == kTfLiteUInt8 || output->type == kTfLiteInt8
        "tflite-runtime": _m(None, "2.7.0-2.14.0 fail at prepare", "2.14.0", _PREPARE),
        # measured: even 2.21.0 fails at prepare (quantize.cc:191)
        "tensorflow": _m(None, "2.12.1-2.21.0 fail at prepare", "2.21.0", _PREPARE),
    },
    "requantize-int16-int8": {
        "ai-edge-litert": _m("1.0.0", "1.0.0-2.3.0 run it"),
        "tflite-runtime": _m("2.7.0", "2.7.0-2.14.0 run it (older releases not measured)"),
        "tensorflow": _m("2.12.1", "2.12.1-2.21.0 run it (older releases not measured)"),
    },
}

# A feature without a row: litert-quantizer wrote it for LiteRT, so only the newest ai-edge-litert is assumed to run it.
_UNMEASURED: Mapping[str, Support] = {
    "ai-edge-litert": Support(NEWEST["ai-edge-litert"], "assumed", "not measured; assumed for the newest release only"),
    "tflite-runtime": Support(None, "assumed", "not measured"),
    "tensorflow": Support(None, "assumed", "not measured"),
}


def support_for(feature: KernelFeature | str, runtime: str) -> Support:
    """The table's entry for ``feature`` (or its key) on ``runtime``; an unmeasured feature gets the assumption above."""
    _check_runtime(runtime)
    key = feature.key if isinstance(feature, KernelFeature) else str(feature)
    row = CAPABILITIES.get(key)
    return row[runtime] if row is not None and runtime in row else _UNMEASURED[runtime]


# --------------------------------------------------------------------------- versions


def parse_version(text: str) -> tuple[int, ...]:
    """``"2.14.0"`` -> ``(2, 14)``: the leading numeric part, trailing zeros dropped so 2.14 == 2.14.0.

    Suffixes after the numbers are ignored (``2.5.0.post1`` -> ``(2, 5)``).
    """
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", str(text))
    if not match:
        raise ValueError(f"not a version: {text!r}")
    parts = [int(p) for p in match.group(1).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _check_runtime(runtime: str) -> None:
    if runtime not in RUNTIME_FAMILIES:
        raise ValueError(f"unknown runtime {runtime!r}: one of {', '.join(RUNTIME_FAMILIES)}")


def _in_gap(support: Support, version: tuple[int, ...]) -> bool:
    gap = support.gap
    return gap is not None and parse_version(gap[0]) <= version <= parse_version(gap[1])


def _has(support: Support, version: tuple[int, ...]) -> bool:
    return support.since is not None and version >= parse_version(support.since) and not _in_gap(support, version)


# --------------------------------------------------------------------------- the questions


def _alternatives(feature: KernelFeature) -> str:
    options = [f"{rt} >= {s.since}" for rt in RUNTIME_FAMILIES if (s := support_for(feature, rt)).since is not None]
    if not options:
        return "no runtime release edgeq measured has it"
    verb = "has it" if len(options) == 1 else "have it"
    return f"{' and '.join(options) if len(options) <= 2 else ', '.join(options[:-1]) + ' and ' + options[-1]} {verb}"


def _reason(feature: KernelFeature, runtime: str, shown: str, version: tuple[int, ...]) -> str | None:
    support = support_for(feature, runtime)
    if _has(support, version):
        return None
    what = feature.describe()
    label = "measured" if support.source == "measured" else support.source
    if support.gap is not None and _in_gap(support, version):
        text = f"{runtime} {shown} has no {what} ({label}: releases {support.gap[0]}-{support.gap[1]} lost it; {support.evidence})"
    elif support.since is None and support.lacking is None:
        text = f"{runtime} {shown} is not known to have the {what} ({support.evidence})"
    elif support.since is None:
        assert support.lacking is not None
        if version <= parse_version(support.lacking):
            text = f"{runtime} {shown} has no {what} ({label}: {support.without}; {support.evidence})"
        else:
            text = f"{runtime} {shown} is not known to have the {what} (no release up to {support.lacking} has it)"
    elif support.lacking is not None and version <= parse_version(support.lacking):
        text = f"{runtime} {shown} has no {what} ({label}: {support.without}; {support.evidence})"
    else:
        text = f"{runtime} {shown} is not known to have the {what} (the oldest release known to have it is {support.since})"
    return f"{text}; {_alternatives(feature)}"


def _missing(features: Iterable[KernelFeature], runtime: str, version: str | None) -> tuple[str, ...]:
    _check_runtime(runtime)
    shown = version if version is not None else f"{NEWEST[runtime]} (the newest release edgeq knows)"
    parsed = parse_version(version if version is not None else NEWEST[runtime])
    return tuple(r for f in features if (r := _reason(f, runtime, shown, parsed)) is not None)


def unsupported(model: bytes, runtime: str, version: str | None = None) -> tuple[str, ...]:
    """One reason per kernel feature ``model`` needs that ``runtime`` ``version`` lacks; empty when it can run the model.

    ``version=None``: the newest release of that family edgeq knows (:data:`NEWEST`).
    """
    return _missing(required_features(model), runtime, version)


def runs_on(model: bytes, runtime: str, version: str | None = None) -> bool:
    return not unsupported(model, runtime, version)


def _variant_hint(feature: KernelFeature) -> str:
    op = feature.ops[0] if feature.ops else ""
    kind = feature.kind
    if kind is FeatureKind.INT4_WEIGHTS:
        return f"keep {op} weights int8 (--op {op}=int8, or --mode int8)"
    if kind is FeatureKind.INT4_WEIGHTS_INT16:
        return f"use int8 weights for {op} (--op {op}=int16 gives int16 activations with int8 weights)"
    if kind in (FeatureKind.INT4_WEIGHTS_DYNAMIC, FeatureKind.INT4_WEIGHTS_DYNAMIC_PER_TENSOR):
        return "use int8 weights (--mode dynamic)"
    if kind is FeatureKind.INT4_DEQUANTIZE:
        return "use --mode dynamic or --mode float16 instead of int4-weight"
    if kind is FeatureKind.DYNAMIC_PER_CHANNEL:
        return "use per-tensor weights (quantization.per_channel = false in the target) or --mode float16 / int8"
    if kind is FeatureKind.DYNAMIC:
        return "use per-channel weights or --mode float16 / int8"
    if kind is FeatureKind.PER_CHANNEL:
        return "use per-tensor weights (quantization.per_channel = false in the target)"
    if kind is FeatureKind.INT16_ACTIVATIONS:
        return "use --mode int8"
    if kind in (FeatureKind.REQUANTIZE_INT8_INT16, FeatureKind.REQUANTIZE_INT16_INT8):
        return "make the whole model int16 (--mode int16x8), or keep those layers float instead of int16 (--layer PATTERN=float)"
    return "quantize to int8 or int4"


class RuntimeTarget(Protocol):
    """What the runtime check reads of a target (:class:`edgeq.targets.Target` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def runtimes(self) -> tuple[str, ...]: ...  # preferred first
    @property
    def runtime_versions(self) -> Mapping[str, str]: ...  # runtime -> the newest release the device can have


def target_reasons(
    model: bytes, target: RuntimeTarget, features: tuple[KernelFeature, ...] | None = None
) -> tuple[str, ...]:
    """Why none of ``target``'s runtimes can run ``model`` (one reason per missing kernel); empty when one can."""
    features = required_features(model) if features is None else features
    if not features:
        return ()
    versions = target.runtime_versions
    reasons: list[str] = []
    for runtime in target.runtimes:
        if runtime not in RUNTIME_FAMILIES:
            continue
        missing = _missing(features, runtime, versions.get(runtime))
        if not missing:
            return ()
        reasons.extend(missing)
    return tuple(dict.fromkeys(reasons))


def check_runs_on_target(model: bytes, target: RuntimeTarget) -> None:
    """Raise ConversionError when none of ``target``'s runtimes (at its ``runtime_versions``) can run ``model``."""
    features = required_features(model)
    reasons = target_reasons(model, target, features)
    if not reasons:
        return
    versions = target.runtime_versions
    runtimes = target.runtimes
    name = target.name
    hints: list[str] = []
    elsewhere: list[str] = []
    for family in RUNTIME_FAMILIES:
        sinces = [since for f in features if (since := support_for(f, family).since) is not None]
        if len(sinces) < len(features):
            continue
        need = max(sinces, key=parse_version)
        if family not in runtimes:
            elsewhere.append(f"{family} >= {need}")
            continue
        cap = versions.get(family)
        if cap is None or parse_version(cap) >= parse_version(need):
            hints.append(f"install {family} >= {need} on the device")
        # else: the device cannot install a release new enough
    if elsewhere:
        hints.append(f"a device with {' or '.join(elsewhere)} runs it ({name} lists only {', '.join(runtimes)})")
    lacking_everywhere = [
        f
        for f in features
        if all(
            _reason(f, rt, "", parse_version(versions.get(rt) or NEWEST[rt]))
            for rt in runtimes
            if rt in RUNTIME_FAMILIES
        )
    ]
    for feature in lacking_everywhere:
        hint = _variant_hint(feature)
        if hint not in hints:
            hints.append(hint)
    listed = ", ".join(f"{rt} {versions.get(rt) or NEWEST[rt]}" for rt in runtimes)
    raise ConversionError(
        f"target {name} cannot run this model: none of its runtimes ({listed}) has the kernels it needs:\n"
        + "\n".join(f"  - {r}" for r in reasons),
        hint="; or ".join(hints) if hints else None,
    )
