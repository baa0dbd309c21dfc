"""Numerical comparisons of model outputs: SQNR, errors, top-1 agreement, accuracy (numpy only)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .types import Accuracy, Fidelity, OutputFidelity

__all__ = ["accuracy", "compare_outputs", "is_classifier_output", "sqnr_db"]


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB; ``inf`` when the outputs are identical."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(test, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def is_classifier_output(array: np.ndarray) -> bool:
    """(N, C) with C >= 2: scores over classes, where top-1 agreement means something."""
    return array.ndim == 2 and array.shape[1] >= 2


def compare_outputs(reference: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray]) -> Fidelity:
    """Per-output fidelity of ``test`` against ``reference`` (same keys, same shapes)."""
    outputs = []
    samples = 0
    for name, ref in reference.items():
        got = np.asarray(test[name], dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        samples = len(ref)
        err = np.abs(ref - got)
        top1 = ties = undetermined = None
        if is_classifier_output(ref):
            top1, ties, undetermined = _top1(ref, got)
        outputs.append(
            OutputFidelity(
                name=name,
                sqnr_db=sqnr_db(ref, got),
                mean_abs_error=float(err.mean()) if err.size else 0.0,
                max_abs_error=float(err.max()) if err.size else 0.0,
                top1_agreement=top1,
                top1_ties=ties,
                float_undetermined=undetermined,
            )
        )
    return Fidelity(samples=samples, outputs=tuple(outputs))


def _tied_top(scores: np.ndarray) -> np.ndarray:
    """Rows whose highest score occurs more than once: no unique top-1 class."""
    return np.sum(scores == scores.max(axis=1, keepdims=True), axis=1) > 1


def _top1(ref: np.ndarray, got: np.ndarray) -> tuple[float | None, int, int]:
    """Top-1 agreement that does not count ties as agreement.

    Rows where the float model has no unique top class say nothing and are
    left out; a quantized row with a tied top score counts as disagreement
    (argmax would pick the first index by accident). Returns (agreement or
    None when no row counts, quantized ties among counted rows, float rows left out).
    """
    counted = ~_tied_top(ref)
    quant_tied = _tied_top(got)
    agree = ~quant_tied & (ref.argmax(axis=1) == got.argmax(axis=1))
    if not counted.any():
        return None, 0, len(ref)
    return float(agree[counted].mean()), int(quant_tied[counted].sum()), int((~counted).sum())


def accuracy(labels: np.ndarray, float_scores: np.ndarray, quant_scores: np.ndarray) -> Accuracy:
    """Top-1 accuracy of both models against labels; the drop is in percentage points."""
    labels = np.asarray(labels).reshape(-1)
    float_acc = float(np.mean(np.asarray(float_scores).argmax(axis=1) == labels))
    quant_acc = float(np.mean(np.asarray(quant_scores).argmax(axis=1) == labels))
    return Accuracy(
        samples=len(labels),
        float_accuracy=float_acc,
        quantized_accuracy=quant_acc,
        drop_points=round((float_acc - quant_acc) * 100.0, 4),
    )
