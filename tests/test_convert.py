"""edgeq convert and inspect on small models built in the session (real TensorFlow, real LiteRT)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _models import *  # noqa: F403 - session fixtures
from _models import DIGITS
from click.testing import CliRunner

from edgeq.cli import cli
from edgeq.convert import ConvertOptions, convert_model
from edgeq.errors import ConversionError, ModelError
from edgeq.litert import describe_model, load_interpreter
from edgeq.types import IOType, QuantMode

CALIB = DIGITS / "calib.npz"
EVAL = DIGITS / "eval.npz"


def run_cli(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def int8_result(digits_classifier, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "digits_int8.tflite"
    result = convert_model(digits_classifier, CALIB, out, ConvertOptions(), eval_data=EVAL)
    return out, result


def test_int8_has_int8_io_and_no_float_activations(int8_result):
    out, _result = int8_result
    interp = load_interpreter(out, default_delegates=False)
    assert interp.get_input_details()[0]["dtype"] == np.int8
    assert interp.get_output_details()[0]["dtype"] == np.int8
    float_tensors = [t["name"] for t in interp.get_tensor_details() if np.dtype(t["dtype"]).kind == "f"]
    assert float_tensors == []
    summary = describe_model(out)
    assert summary.float_ops == () and "QUANTIZE" not in summary.op_counts
    assert "CONV_2D" in summary.op_counts and summary.inputs[0].scale > 0


def test_int8_weights_are_per_channel(int8_result):
    out, _ = int8_result
    interp = load_interpreter(out, default_delegates=False)
    per_channel = [t for t in interp.get_tensor_details() if len(t["quantization_parameters"]["scales"]) > 1]
    assert per_channel, "conv weights should carry one scale per output channel"


def test_report_is_written_next_to_the_model_and_tells_the_truth(int8_result):
    out, _result = int8_result
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["mode"] == "int8" and report["io_type"] == "int8"
    assert report["quantized_size_bytes"] == out.stat().st_size
    assert report["float_size_bytes"] > 2 * report["quantized_size_bytes"]
    assert report["size_ratio"] == pytest.approx(report["quantized_size_bytes"] / report["float_size_bytes"], abs=1e-4)
    assert (
        report["calibration_samples"] == 200 and report["holdout_samples"] == 140
    )  # 340 samples: 200 calibrate, the other 140 are held out
    fid = report["fidelity"]["outputs"][0]
    assert 0.9 <= fid["top1_agreement"] <= 1.0 and fid["sqnr_db"] > 15
    acc = report["accuracy"]
    assert acc["samples"] == 357
    assert acc["drop_points"] == pytest.approx((acc["float_accuracy"] - acc["quantized_accuracy"]) * 100, abs=1e-3)


def test_float_accuracy_matches_keras_itself(int8_result, digits_classifier):
    import keras

    _, result = int8_result
    data = np.load(EVAL)
    keras_acc = float(
        np.mean(keras.models.load_model(digits_classifier).predict(data["x"], verbose=0).argmax(1) == data["y"])
    )
    assert result.report.accuracy.float_accuracy == pytest.approx(keras_acc, abs=1 / 357 + 1e-9)


@pytest.mark.parametrize(
    "mode, io_type, in_dtype",
    [
        ("float32", None, np.float32),
        ("float16", None, np.float32),
        ("dynamic", None, np.float32),
        ("int16x8", None, np.float32),
        ("int16x8", "int16", np.int16),
        ("int8", "uint8", np.uint8),
        ("int8", "float32", np.float32),
    ],
)
def test_every_mode_produces_a_loadable_model(digits_classifier, tmp_path, mode, io_type, in_dtype):
    out = tmp_path / f"{mode}.tflite"
    options = ConvertOptions(mode=QuantMode(mode), io_type=IOType(io_type) if io_type else None)
    result = convert_model(digits_classifier, CALIB, out, options)
    interp = load_interpreter(out)
    detail = interp.get_input_details()[0]
    assert detail["dtype"] == in_dtype
    interp.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=in_dtype))
    interp.invoke()
    assert np.all(np.isfinite(interp.get_tensor(interp.get_output_details()[0]["index"]).astype(np.float64)))
    assert result.report.fidelity.outputs[0].sqnr_db > 10
    if mode == "float32":
        assert result.report.size_ratio == 1.0


def test_saved_model_and_h5_inputs(digits_saved_model, digits_h5, tmp_path):
    for source in (digits_saved_model, digits_h5):
        out = tmp_path / (Path(source).stem + ".tflite")
        report = convert_model(source, CALIB, out).report
        assert report.summary.inputs[0].dtype == "int8" and out.exists()


def test_two_inputs_calibrated_by_name(two_input_model, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "c.npz", img=rng.random((30, 8, 8, 1), dtype=np.float32), meta=rng.random((30, 4), dtype=np.float32)
    )
    report = convert_model(two_input_model, tmp_path / "c.npz", tmp_path / "two.tflite").report
    assert sorted(t.name for t in report.summary.inputs) == ["img", "meta"]
    assert all(t.dtype == "int8" for t in report.summary.inputs)
    # each input has its own calibrated range: 'meta' in [0,1) gives scale ~1/255
    meta = next(t for t in report.summary.inputs if t.name == "meta")
    assert meta.scale == pytest.approx(1 / 255, rel=0.05)


def test_image_folder_calibration(digits_classifier, tmp_path):
    report = convert_model(digits_classifier, DIGITS / "images", tmp_path / "m.tflite").report
    assert report.calibration_samples == 80 and report.holdout_samples == 20


def test_op_without_int8_kernel_is_named_and_nothing_written(sin_model_dir, vector_calib, tmp_path):
    out = tmp_path / "sin.tflite"
    with pytest.raises(ConversionError) as err:
        convert_model(sin_model_dir, vector_calib, out)
    assert "SIN" in err.value.message and "--mode dynamic" in err.value.hint
    assert list(tmp_path.iterdir()) == [vector_calib]
    # the suggested mode works, and --allow-float-ops accepts the mixed model with a warning
    assert convert_model(
        sin_model_dir, vector_calib, out, ConvertOptions(mode=QuantMode.DYNAMIC)
    ).report.summary.float_ops
    mixed = convert_model(sin_model_dir, vector_calib, out, ConvertOptions(allow_float_ops=True)).report
    assert any("SIN" in w for w in mixed.warnings)


def test_failed_run_leaves_previous_output_and_no_temp_files(digits_classifier, tmp_path):
    out = tmp_path / "m.tflite"
    out.write_bytes(b"previous model")
    out.with_suffix(".json").write_text("{}")
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((10, 8, 8, 3), np.float32))
    result = run_cli("convert", digits_classifier, "--calib", bad, "-o", out)
    assert result.exit_code == 4
    assert out.read_bytes() == b"previous model" and out.with_suffix(".json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy", "m.json", "m.tflite"]


def test_cli_convert_json_and_table(digits_classifier, tmp_path):
    out = tmp_path / "m.tflite"
    result = run_cli("convert", digits_classifier, "--calib", CALIB, "--eval", EVAL, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["accuracy"]["samples"] == 357 and report["output"] == str(out)
    table = run_cli("convert", digits_classifier, "--calib", CALIB, "-o", out)
    assert table.exit_code == 0 and "size ratio" in table.stdout and "top-1 agreement" in table.stdout


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (["{missing}", "--calib", "{calib}"], 5, "no such file or directory"),
        (["{text}", "--calib", "{calib}"], 5, "unsupported model file '.txt'"),
        (["{emptydir}", "--calib", "{calib}"], 5, "not a SavedModel directory"),
        (["{corrupt}", "--calib", "{calib}"], 5, "could not load the Keras model"),
        (["{model}", "--calib", "{calib}", "--mode", "int4"], 2, "Invalid value for '--mode'"),
        (
            ["{model}", "--calib", "{calib}", "--mode", "dynamic", "--io-type", "int8"],
            6,
            "--io-type int8 is not possible with --mode dynamic",
        ),
        (["{model}"], 4, "needs calibration data"),
        (["{model}", "--calib", "{tmp}/none.npz"], 4, "none.npz: no such file"),
        (["{model}", "--calib", "{emptydir}"], 4, "no PNG or JPEG images"),
        (["{model}", "--calib", "{calib}", "--eval", "{calib}"], 4, "no labels"),
    ],
)
def test_bad_input_gets_one_clear_line(digits_classifier, tmp_path, args, code, fragment):
    (tmp_path / "model.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt.keras").write_bytes(b"PK\x03\x04 not really a zip")
    values = dict(
        missing=tmp_path / "nope.keras",
        text=tmp_path / "model.txt",
        emptydir=tmp_path / "empty",
        corrupt=tmp_path / "corrupt.keras",
        model=digits_classifier,
        calib=CALIB,
        tmp=tmp_path,
    )
    out = tmp_path / "out.tflite"
    result = run_cli("convert", *[a.format(**values) for a in args], "-o", out)
    assert result.exit_code == code, result.output
    assert fragment in result.stderr
    if code != 2:
        assert result.stderr.startswith("Error: ")
    assert not out.exists()


def test_inspect_cli(int8_result, tmp_path):
    out, _ = int8_result
    result = run_cli("inspect", out, "--json")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)["summary"]
    assert summary["inputs"][0]["dtype"] == "int8" and summary["op_counts"]["CONV_2D"] == 1
    assert summary["size_bytes"] == out.stat().st_size
    text = run_cli("inspect", out)
    assert "op census" in text.stdout and "FULLY_CONNECTED" in text.stdout
    (tmp_path / "junk.tflite").write_bytes(b"\0" * 64)
    bad = run_cli("inspect", tmp_path / "junk.tflite")
    assert bad.exit_code == 5 and "not a loadable TFLite model" in bad.stderr


def test_inspect_per_layer(int8_result, digits_classifier):
    out, _ = int8_result
    result = run_cli(
        "inspect", out, "--per-layer", "--float-model", digits_classifier, "--calib", CALIB, "--top", "3", "--json"
    )
    assert result.exit_code == 0, result.output
    layers = json.loads(result.stdout)["layers"]
    assert len(layers) == 3
    ratios = [layer["rmse_over_scale"] for layer in layers]
    assert ratios == sorted(ratios, reverse=True) and all(r > 0 for r in ratios)
    usage = run_cli("inspect", out, "--per-layer")
    assert usage.exit_code == 2 and "--float-model" in usage.stderr


def test_model_error_for_saved_model_without_serving_signature(tmp_path):
    import tensorflow as tf

    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(tmp_path / "sm"))
    with pytest.raises(ModelError, match="no 'serving_default' signature"):
        convert_model(tmp_path / "sm", CALIB, tmp_path / "o.tflite")


def test_float_reference_is_the_converters_own_float_model(digits_classifier):
    """The captured pre-quantization model computes what a separate float32 conversion computes."""
    from edgeq import convert as conv
    from edgeq.litert import ModelRunner

    loaded = conv.load_float_model(digits_classifier)
    data = {"image": np.load(CALIB)["x"][:20]}
    converter = conv.converter_for(
        loaded, QuantMode.INT8, IOType.INT8, lambda: iter([{"image": data["image"][:1]}]), True
    )
    captured = conv.capture_float_model(converter)
    conv.run_converter(converter, [])
    assert "float" in captured, "TensorFlow no longer calls _optimize_tflite_model: the fallback conversion is used"
    separate = conv.run_converter(conv.converter_for(loaded, QuantMode.FLOAT32, IOType.FLOAT32, None, True), [])
    a = ModelRunner(captured["float"]).run(data)
    b = ModelRunner(separate).run(data)
    np.testing.assert_allclose(a["output_0"], b["output_0"], rtol=1e-6, atol=1e-7)
    assert abs(len(captured["float"]) - len(separate)) / len(separate) < 0.01


def test_without_the_capture_hook_the_float_model_is_converted_separately(digits_classifier, tmp_path, monkeypatch):
    from edgeq import convert as conv

    monkeypatch.setattr(conv, "capture_float_model", lambda converter: {})
    report = convert_model(digits_classifier, CALIB, tmp_path / "m.tflite").report
    assert report.float_size_bytes > 2 * report.quantized_size_bytes
    assert report.fidelity.outputs[0].top1_agreement >= 0.9
