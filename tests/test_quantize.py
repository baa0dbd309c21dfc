"""Float .tflite input, litert-quantizer variants, mixed precision and recipes that reproduce the same bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _models import *  # noqa: F403 - session fixtures
from _models import DIGITS
from click.testing import CliRunner

from edgeq.cli import cli
from edgeq.convert import ConvertOptions, convert_model
from edgeq.errors import ConversionError, ModelError
from edgeq.litert import ModelRunner, describe_model
from edgeq.quantize import FloatGraph, load_float_tflite, weight_census
from edgeq.recipe import Override, Precision, Recipe
from edgeq.types import QuantMode

CALIB = DIGITS / "calib.npz"
EVAL = DIGITS / "eval.npz"
ROOT = Path(__file__).resolve().parent.parent
TFLITE_RUNTIME_PY = ROOT / ".venv-tflite-runtime" / "bin" / "python"


def _interp_signatures(model: bytes) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=model).get_signature_list()


def test_signatureless_tflite_gets_a_signature_and_converts(signatureless_tflite, tmp_path):
    assert _interp_signatures(signatureless_tflite.read_bytes()) == {}  # the fixture really has none
    out = tmp_path / "nosig_int8.tflite"
    result = convert_model(signatureless_tflite, CALIB, out, ConvertOptions(), eval_data=EVAL)
    report = result.report
    assert report.engine == "litert-quantizer"
    assert any("no signature" in w for w in report.warnings)
    assert list(_interp_signatures(out.read_bytes())) == ["serving_default"]
    assert report.summary.float_ops == ()
    assert report.accuracy is not None and report.accuracy.drop_points < 2.0
    assert report.calibration_samples == 200 and report.holdout_samples == 140
    assert Path(str(out).replace(".tflite", ".recipe.json")).is_file()


def test_tflite_and_keras_give_the_same_fidelity_story(float_tflite, digits_classifier, tmp_path):
    """A float .tflite (litert-quantizer) and its Keras source (TF converter) both land close to float."""
    a = convert_model(float_tflite, CALIB, tmp_path / "a.tflite", eval_data=EVAL).report
    b = convert_model(digits_classifier, CALIB, tmp_path / "b.tflite", eval_data=EVAL).report
    assert a.engine == "litert-quantizer" and b.engine == "tflite-converter"
    assert abs(a.accuracy.quantized_accuracy - b.accuracy.quantized_accuracy) < 0.03
    assert a.accuracy.float_accuracy == pytest.approx(b.accuracy.float_accuracy, abs=1e-9)


def test_quantized_tflite_is_refused_in_one_line(int8_model, tmp_path):
    result = CliRunner().invoke(
        cli, ["convert", str(int8_model), "--calib", str(CALIB), "-o", str(tmp_path / "x.tflite")]
    )
    assert result.exit_code == ModelError.exit_code
    assert "already quantized" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_not_a_tflite_file_is_refused(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="not a TFLite model"):
        load_float_tflite(bad)


@pytest.fixture(scope="module")
def graph(float_tflite) -> FloatGraph:
    return load_float_tflite(float_tflite)


@pytest.fixture(scope="module")
def statistics(graph):
    x = np.load(CALIB)["x"][:100]
    return graph.calibrate({graph.inputs[0].name: x})


@pytest.fixture(scope="module")
def variants(graph, statistics, tmp_path_factory) -> dict[str, Path]:
    """Every mode and two mixed models, written to files, from ONE calibration."""
    folder = tmp_path_factory.mktemp("variants")
    made = {}
    for mode in QuantMode:
        made[mode.value] = graph.quantize(mode, statistics)
    dense = next(layer for layer in graph.layers if layer.op == "FULLY_CONNECTED")
    made["mixed-float"] = graph.quantize(
        QuantMode.INT8, statistics, [Override(Precision.FLOAT, layer=dense.exact_pattern)]
    )
    made["mixed-int16"] = graph.quantize(QuantMode.INT8, statistics, [Override(Precision.INT16, op="SOFTMAX")])
    paths = {}
    for name, data in made.items():
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(data)
    return paths


def test_every_variant_runs_in_ai_edge_litert(variants):
    x = np.load(EVAL)["x"][:20]
    y = np.load(EVAL)["y"][:20]
    for name, path in variants.items():
        runner = ModelRunner(path.read_bytes())
        out = next(iter(runner.run({next(iter(runner.inputs)): x}).values()))
        assert np.mean(out.argmax(1) == y) > 0.7, name


def test_weight_census_says_which_ops_got_int4(variants):
    assert weight_census(variants["w4a8"].read_bytes()) == {"CONV_2D": {"int4": 1}, "FULLY_CONNECTED": {"int4": 1}}
    assert weight_census(variants["int8"].read_bytes()) == {"CONV_2D": {"int8": 1}, "FULLY_CONNECTED": {"int8": 1}}
    assert weight_census(variants["int4-weight"].read_bytes()) == {
        "CONV_2D": {"int4->float": 1},
        "FULLY_CONNECTED": {"int4->float": 1},
    }
    assert weight_census(variants["float32"].read_bytes()) == {
        "CONV_2D": {"float32": 1},
        "FULLY_CONNECTED": {"float32": 1},
    }
    mixed = describe_model(variants["mixed-float"].read_bytes())
    assert mixed.float_ops == ("FULLY_CONNECTED",)


_RUN_ALL = r"""
import json, sys, numpy as np
from tflite_runtime.interpreter import Interpreter
x = np.load(sys.argv[1])["x"][:40]
out = {}
for path in sys.argv[2:]:
    try:
        it = Interpreter(model_path=path); it.allocate_tensors()
        d, o = it.get_input_details()[0], it.get_output_details()[0]
        tops = []
        for sample in x:
            v = sample[None]
            if d["dtype"] != np.float32:
                s, z = d["quantization"]
                v = np.clip(np.round(v / s) + z, np.iinfo(d["dtype"]).min, np.iinfo(d["dtype"]).max)
            it.set_tensor(d["index"], v.astype(d["dtype"])); it.invoke()
            tops.append(int(it.get_tensor(o["index"]).argmax()))
        out[path] = tops
    except Exception as exc:
        out[path] = str(exc).splitlines()[0]
print(json.dumps(out))
"""


@pytest.mark.skipif(not TFLITE_RUNTIME_PY.exists(), reason="the set-up script makes .venv-tflite-runtime")
def test_every_variant_runs_under_tflite_runtime_2_14_or_is_refused_for_it(variants):
    """The device runtime: each variant either runs there AND agrees with the float model, or edgeq refuses it
    for tflite-runtime 2.14 (a runtime can load a model and still compute garbage: that counts as not running)."""
    from edgeq.kernels import unsupported

    proc = subprocess.run(
        [str(TFLITE_RUNTIME_PY), "-c", _RUN_ALL, str(EVAL), *map(str, variants.values())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    ran = json.loads(proc.stdout.strip().splitlines()[-1])
    reference = ran[str(variants["float32"])]
    assert isinstance(reference, list)
    for name, path in variants.items():
        refused = unsupported(path.read_bytes(), "tflite-runtime", "2.14.0")
        got = ran[str(path)]
        works = isinstance(got, list) and np.mean(np.array(got) == np.array(reference)) >= 0.9
        if works:
            assert not refused, f"{name} runs correctly on tflite-runtime 2.14 but edgeq refuses it: {refused}"
        else:
            assert refused, (
                f"{name} fails or computes wrong outputs on tflite-runtime 2.14 ({got if isinstance(got, str) else 'wrong outputs'}) but edgeq would deploy it"
            )


def test_recipe_reproduces_identical_bytes_litert(float_tflite, tmp_path):
    first = tmp_path / "first.tflite"
    runner = CliRunner()
    r1 = runner.invoke(
        cli,
        [
            "convert",
            str(float_tflite),
            "--calib",
            str(CALIB),
            "--layer",
            "dense=float",
            "--op",
            "SOFTMAX=int16",
            "--seed",
            "3",
            "--calib-samples",
            "150",
            "-o",
            str(first),
        ],
    )
    assert r1.exit_code == 0, r1.output
    recipe = json.loads(first.with_suffix(".recipe.json").read_text())
    assert recipe["engine"] == "litert-quantizer" and recipe["calibration"]["seed"] == 3
    assert recipe["overrides"] == [{"layer": "dense", "precision": "float"}, {"op": "SOFTMAX", "precision": "int16"}]
    assert "litert-quantizer" in recipe["versions"]
    again = tmp_path / "again.tflite"
    r2 = runner.invoke(
        cli,
        [
            "convert",
            str(float_tflite),
            "--calib",
            str(CALIB),
            "--recipe",
            str(first.with_suffix(".recipe.json")),
            "-o",
            str(again),
        ],
    )
    assert r2.exit_code == 0, r2.output
    assert again.read_bytes() == first.read_bytes()
    # and a different seed really changes the bytes: the comparison above can fail
    other = tmp_path / "other.tflite"
    assert (
        runner.invoke(
            cli,
            [
                "convert",
                str(float_tflite),
                "--calib",
                str(CALIB),
                "--layer",
                "dense=float",
                "--op",
                "SOFTMAX=int16",
                "--seed",
                "4",
                "--calib-samples",
                "150",
                "-o",
                str(other),
            ],
        ).exit_code
        == 0
    )
    assert other.read_bytes() != first.read_bytes()


def test_recipe_reproduces_identical_bytes_tf_converter(digits_classifier, tmp_path):
    first = tmp_path / "first.tflite"
    convert_model(digits_classifier, CALIB, first, ConvertOptions(seed=5))
    again = tmp_path / "again.tflite"
    result = CliRunner().invoke(
        cli,
        [
            "convert",
            str(digits_classifier),
            "--calib",
            str(CALIB),
            "--recipe",
            str(first.with_suffix(".recipe.json")),
            "-o",
            str(again),
        ],
    )
    assert result.exit_code == 0, result.output
    assert again.read_bytes() == first.read_bytes()


@pytest.mark.parametrize(
    "recipe, fragment, hint",
    [
        ({"mode": "int8", "overides": []}, "unknown key 'overides'", "did you mean 'overrides'?"),
        ({"mode": "int9"}, "mode 'int9'", "did you mean 'int8'?"),
        (
            {"mode": "int8", "overrides": [{"layer": "dense", "precison": "float"}]},
            "unknown key 'precison'",
            "did you mean 'precision'?",
        ),
        ({"mode": "int8", "overrides": [{"layer": "dense", "precision": "fp16"}]}, "precision 'fp16'", None),
        ({"mode": "int8", "overrides": [{"layer": "dens_x", "precision": "float"}]}, "matches no layer", "dense"),
        (
            {"mode": "int8", "overrides": [{"op": "SOFTMAXX", "precision": "float"}]},
            "op type 'SOFTMAXX' is not in this model",
            "SOFTMAX",
        ),
        ({"mode": "int8", "overrides": [{"layer": "(", "precision": "float"}]}, "not a valid regular expression", None),
    ],
)
def test_bad_recipes_are_one_clear_error(float_tflite, tmp_path, recipe, fragment, hint):
    path = tmp_path / "r.recipe.json"
    path.write_text(json.dumps(recipe))
    result = CliRunner().invoke(
        cli,
        ["convert", str(float_tflite), "--calib", str(CALIB), "--recipe", str(path), "-o", str(tmp_path / "o.tflite")],
    )
    assert result.exit_code == ConversionError.exit_code, result.output
    assert fragment in result.output and "Traceback" not in result.output
    if hint:
        assert hint in result.output
    assert not (tmp_path / "o.tflite").exists()


def test_recipe_that_does_not_parse(float_tflite, tmp_path):
    path = tmp_path / "r.recipe.json"
    path.write_text("{ not json")
    result = CliRunner().invoke(
        cli,
        ["convert", str(float_tflite), "--calib", str(CALIB), "--recipe", str(path), "-o", str(tmp_path / "o.tflite")],
    )
    assert result.exit_code == ConversionError.exit_code and "not valid JSON" in result.output


def test_recipe_and_flags_that_it_sets_conflict(float_tflite, tmp_path):
    path = tmp_path / "r.recipe.json"
    path.write_text(json.dumps({"mode": "int8"}))
    result = CliRunner().invoke(
        cli,
        [
            "convert",
            str(float_tflite),
            "--calib",
            str(CALIB),
            "--recipe",
            str(path),
            "--seed",
            "2",
            "-o",
            str(tmp_path / "o.tflite"),
        ],
    )
    assert result.exit_code == 2 and "--recipe already sets --seed" in result.output


def test_recipe_round_trip():
    recipe = Recipe.from_dict(
        {
            "mode": "w4a8",
            "overrides": [{"op": "hard_swish", "precision": "int16"}],
            "calibration": {"samples": 50, "seed": 1},
        }
    )
    assert recipe.overrides == (Override(Precision.INT16, op="HARD_SWISH"),)
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_inspect_layers_lists_the_names_patterns_select(float_tflite):
    result = CliRunner().invoke(cli, ["inspect", str(float_tflite), "--layers", "--json"])
    assert result.exit_code == 0, result.output
    layers = json.loads(result.output)["layers"]
    assert [layer["op"] for layer in layers if layer["has_weights"]] == ["CONV_2D", "FULLY_CONNECTED"]


def test_int4_mode_for_a_target_whose_runtime_lacks_the_kernel_is_refused(digits_classifier, tmp_path):
    """rpi4b-32bit has tflite-runtime 2.14 only: no int4 FULLY_CONNECTED kernel there."""
    result = CliRunner().invoke(
        cli,
        [
            "convert",
            str(digits_classifier),
            "--calib",
            str(CALIB),
            "--mode",
            "w4a8",
            "--target",
            "rpi4b-32bit",
            "-o",
            str(tmp_path / "m.tflite"),
        ],
    )
    assert result.exit_code == ConversionError.exit_code, result.output
    assert "tflite-runtime" in result.output and "FULLY_CONNECTED" in result.output
    assert not (tmp_path / "m.tflite").exists()


def test_cli_reports_int4_ops_in_the_table(digits_classifier, tmp_path):
    result = CliRunner().invoke(
        cli,
        ["convert", str(digits_classifier), "--calib", str(CALIB), "--mode", "w4a8", "-o", str(tmp_path / "m.tflite")],
    )
    assert result.exit_code == 0, result.output
    assert "int4: CONV_2D x1, FULLY_CONNECTED x1" in result.output
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["weights"] == {"CONV_2D": {"int4": 1}, "FULLY_CONNECTED": {"int4": 1}}
    assert report["engine"] == "litert-quantizer"


def test_python_module_import_does_not_pull_tensorflow_for_tflite_input():
    code = "import sys; import edgeq.quantize, edgeq.recipe, edgeq.tune; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
