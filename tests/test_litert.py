"""The host interpreter: ModelRunner's one-sample runs and every tensor's value (what tune's per-layer error reads)."""

from __future__ import annotations

import numpy as np
import pytest
from _models import *  # noqa: F403 - session fixtures
from _models import DIGITS

from edgeq.errors import ModelError
from edgeq.litert import ModelRunner, dequantize, quantize


@pytest.fixture(scope="module")
def samples() -> dict[str, np.ndarray]:
    return {"image": np.load(DIGITS / "eval.npz")["x"][:4]}


def test_tensor_values_after_invoke_agree_with_run(int8_model, samples):
    runner = ModelRunner(int8_model.read_bytes(), preserve_all_tensors=True)
    expected = runner.run(samples)
    (name, info), *_ = runner.outputs.items()
    by_index = {d["index"]: d["name"] for d in runner._interp.get_tensor_details()}
    for i in range(2):
        runner.invoke(samples, i)
        values = runner.tensor_values()
        value, scale = values[by_index[info.index]]
        assert scale == info.scale
        np.testing.assert_array_equal(value, expected[name][i : i + 1])
        # the input as the model took it: quantized from the float sample, dequantized back
        (_, info_in), *_ = runner.inputs.items()
        got_in, _ = values[by_index[info_in.index]]
        x = samples["image"][i : i + 1]
        zero_point = info_in.zero_point or 0
        sent = quantize(x, info_in.scale, zero_point, np.dtype(info_in.dtype))
        np.testing.assert_array_equal(got_in.reshape(sent.shape), dequantize(sent, info_in.scale, zero_point))
    # intermediate tensors are kept: more than the inputs and outputs
    assert len(values) > len(runner.inputs) + len(runner.outputs)


def test_float_tensors_have_no_scale(float_tflite, samples):
    runner = ModelRunner(float_tflite, preserve_all_tensors=True)
    runner.invoke(samples, 0)
    values = runner.tensor_values()
    assert values and all(scale is None for _, scale in values.values())
    assert all(v.dtype == np.float32 for v, _ in values.values())


def test_invoke_names_a_missing_input(float_tflite):
    runner = ModelRunner(float_tflite)
    with pytest.raises(ModelError, match="no data for model input"):
        runner.invoke({"other": np.zeros((1, 8, 8, 1), np.float32)}, 0)
