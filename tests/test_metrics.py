"""Output comparison metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeq.metrics import accuracy, compare_outputs, sqnr_db


def test_sqnr_known_values():
    ref = np.ones(100)
    assert math.isclose(sqnr_db(ref, ref + 0.1), 20.0, rel_tol=1e-9)  # signal 100, noise 1
    assert sqnr_db(ref, ref) == math.inf


def test_compare_outputs_top1_and_errors():
    ref = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    got = np.array([[0.8, 0.2], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7]])
    fid = compare_outputs({"p": ref}, {"p": got})
    out = fid.outputs[0]
    assert fid.samples == 4 and out.top1_agreement == 0.75
    assert math.isclose(out.max_abs_error, 0.2) and math.isclose(out.mean_abs_error, (0.1 * 2 + 0.2 * 2) / 8)


def test_regression_outputs_get_no_top1():
    fid = compare_outputs({"v": np.ones((3, 1))}, {"v": np.ones((3, 1))})
    assert fid.outputs[0].top1_agreement is None


def test_accuracy_drop_in_points():
    labels = np.array([0, 1, 1, 0])
    float_scores = np.eye(2)[[0, 1, 1, 0]]
    quant_scores = np.eye(2)[[0, 1, 0, 0]]
    acc = accuracy(labels, float_scores, quant_scores)
    assert acc.float_accuracy == 1.0 and acc.quantized_accuracy == 0.75 and acc.drop_points == 25.0


def test_ties_never_count_as_top1_agreement():
    ref = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.4, 0.3, 0.3]])
    got = np.array([[0.0, 0.0, 0.0], [0.1, 0.8, 0.1], [0.5, 0.3, 0.2]])  # row 0 collapsed to a tie at index 0
    out = compare_outputs({"p": ref}, {"p": got}).outputs[0]
    assert out.top1_agreement == pytest.approx(2 / 3) and out.top1_ties == 1 and out.float_undetermined == 0


def test_float_rows_without_a_unique_top_are_left_out():
    uniform = np.full((4, 10), 0.1)
    out = compare_outputs({"p": uniform}, {"p": np.zeros((4, 10))}).outputs[0]
    assert out.top1_agreement is None and out.float_undetermined == 4
