"""Shared result and option types: frozen dataclasses and str enums that serialise to JSON as they are."""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

__all__ = [
    "Accuracy",
    "ConversionReport",
    "Fidelity",
    "IOType",
    "ModelSummary",
    "OutputFidelity",
    "QuantMode",
    "TensorInfo",
    "TensorSpec",
    "to_jsonable",
]


class QuantMode(str, enum.Enum):
    """How the converter quantizes a model."""

    INT8 = "int8"  # full integer: int8 activations and weights (per-channel), int8-only ops
    INT16X8 = "int16x8"  # int16 activations, int8 weights
    W4A8 = "w4a8"  # int8 activations, int4 weights for CONV_2D and FULLY_CONNECTED (int8 elsewhere)
    INT4_WEIGHT = "int4-weight"  # weight-only: int4 weights dequantized at load, float compute
    DYNAMIC = "dynamic"  # int8 weights, float activations, quantized on the fly
    FLOAT16 = "float16"  # float16 weights
    FLOAT32 = "float32"  # no quantization: the baseline

    @property
    def needs_calibration(self) -> bool:
        return self in (QuantMode.INT8, QuantMode.INT16X8, QuantMode.W4A8)

    @property
    def integer_only(self) -> bool:
        """Every op is meant to run on integers: ops left in float are refused unless allowed."""
        return self in (QuantMode.INT8, QuantMode.INT16X8, QuantMode.W4A8)

    @property
    def needs_litert_quantizer(self) -> bool:
        """Only litert-quantizer makes these (the TF converter has no int4 modes)."""
        return self in (QuantMode.W4A8, QuantMode.INT4_WEIGHT)

    @property
    def allowed_io_types(self) -> tuple[IOType, ...]:
        if self is QuantMode.INT8:
            return (IOType.INT8, IOType.UINT8, IOType.FLOAT32)
        if self is QuantMode.W4A8:
            return (IOType.INT8,)
        if self is QuantMode.INT16X8:
            return (IOType.INT16, IOType.FLOAT32)
        return (IOType.FLOAT32,)

    @property
    def default_io_type(self) -> IOType:
        return IOType.INT8 if self in (QuantMode.INT8, QuantMode.W4A8) else IOType.FLOAT32


class IOType(str, enum.Enum):
    """Element type of a converted model's input and output tensors."""

    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"
    FLOAT32 = "float32"


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input of a float model's signature: ``None`` marks a free dimension."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """An input or output tensor of a .tflite model, with its quantization."""

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None
    per_channel: bool = False


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """What ``edgeq inspect`` shows of a .tflite file."""

    path: str
    size_bytes: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    op_counts: dict[str, int]
    tensor_type_counts: dict[str, int]
    float_ops: tuple[str, ...]
    signatures: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class OutputFidelity:
    """How far one quantized output is from the float model's, on held-out data."""

    name: str
    sqnr_db: float
    mean_abs_error: float
    max_abs_error: float
    top1_agreement: float | None = None  # only for classifier-shaped outputs; ties never count as agreement
    top1_ties: int | None = None  # counted samples whose quantized top score is tied
    float_undetermined: int | None = None  # samples left out: the float model has no unique top class


@dataclasses.dataclass(frozen=True)
class Fidelity:
    samples: int
    outputs: tuple[OutputFidelity, ...]


@dataclasses.dataclass(frozen=True)
class Accuracy:
    """Labelled evaluation: accuracies as fractions, the drop in percentage points."""

    samples: int
    float_accuracy: float
    quantized_accuracy: float
    drop_points: float


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    """Everything ``edgeq convert`` learned; written next to the model as JSON."""

    model: str
    output: str
    mode: QuantMode
    io_type: IOType
    target: str | None
    float_size_bytes: int
    quantized_size_bytes: int
    size_ratio: float
    calibration_samples: int
    holdout_samples: int
    summary: ModelSummary
    fidelity: Fidelity | None
    accuracy: Accuracy | None
    warnings: tuple[str, ...] = ()
    edgeq_version: str = ""
    converter_version: str = ""
    engine: str = ""  # tflite-converter | litert-quantizer
    overrides: tuple[str, ...] = ()  # per-layer precision, as the recipe gave it
    weights: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # op type -> {int4|int8|float...: ops}

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


def to_jsonable(value: Any) -> Any:
    """Turn result objects into plain JSON types (enums become their values)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN and infinity are not JSON; an infinite SQNR means identical outputs

    return value
