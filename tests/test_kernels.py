"""Kernel features of quantized models, the capability table, and the table checked against the runtimes installed here.

The variants are real litert-quantizer models of two tiny Keras models, built once per session:
a CNN (CONV_2D x2, FULLY_CONNECTED x2) and a model with DEPTHWISE_CONV_2D and TRANSPOSE_CONV.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from edgeq.errors import ConversionError
from edgeq.kernels import (
    CAPABILITIES,
    NEWEST,
    RUNTIME_FAMILIES,
    FeatureKind,
    check_runs_on_target,
    inspect_kernels,
    parse_version,
    required_features,
    runs_on,
    support_for,
    unsupported,
)
from edgeq.recipe import Override, Precision
from edgeq.targets import load_target
from edgeq.types import QuantMode

TFLITE_RUNTIME_PYTHON = Path(__file__).resolve().parents[1] / ".venv-tflite-runtime" / "bin" / "python"

# What each variant needs: the feature keys required_features reports.
EXPECTED = {
    "float32": set(),
    "float16": set(),
    "int8": {"per-channel:FULLY_CONNECTED"},
    "int8-per-tensor": set(),
    "int16x8": {"int16-activations", "per-channel:FULLY_CONNECTED"},
    "int16x8-per-tensor": {"int16-activations"},
    "w4a8": {"int4-weights:CONV_2D", "int4-weights:FULLY_CONNECTED"},
    "w4a8-conv-only": {"int4-weights:CONV_2D", "per-channel:FULLY_CONNECTED"},
    "w4a8-fc-only": {"int4-weights:FULLY_CONNECTED"},
    "w4a16-conv": {"int4-weights-int16:CONV_2D", "int16-activations"},
    "w4a16-fc": {"int4-weights-int16:FULLY_CONNECTED", "int16-activations"},
    "int4-weight": {"int4-dequantize"},
    "dynamic": {"dynamic-per-channel:CONV_2D", "dynamic-per-channel:FULLY_CONNECTED"},
    "dynamic-per-tensor": {"dynamic:CONV_2D", "dynamic:FULLY_CONNECTED"},
    "dynamic-int4": {"int4-weights-dynamic:CONV_2D", "int4-weights-dynamic:FULLY_CONNECTED"},
    "int8-float-fc": {"per-channel:FULLY_CONNECTED"},
    "int8-int16-conv": {
        "int16-activations",
        "requantize-int8-int16",
        "requantize-int16-int8",
        "per-channel:FULLY_CONNECTED",
    },
    "int16-first-per-tensor": {"int16-activations", "requantize-int16-int8"},
    "b-dynamic": {
        "dynamic-per-channel:DEPTHWISE_CONV_2D",
        "dynamic-per-channel:TRANSPOSE_CONV",
        "dynamic-per-channel:FULLY_CONNECTED",
    },
    "b-dynamic-tconv-per-tensor": {"dynamic:TRANSPOSE_CONV"},
    "b-int16x8-per-tensor": {"int16-activations"},
}


def _rule(regex: str, op: str, activation_bits: int | None, weight_bits: int, granularity: str = "CHANNELWISE") -> dict:
    """A litert-quantizer rule: static with activation bits, or dynamic-range (activation_bits None)."""
    config = {
        "weight_tensor_config": {
            "num_bits": weight_bits,
            "symmetric": True,
            "granularity": granularity,
            "dtype": "INT",
        },
        "compute_precision": "INTEGER",
        "explicit_dequantize": False,
        "skip_checks": False,
        "min_weight_elements": 0,
    }
    if activation_bits is not None:
        config["activation_tensor_config"] = {
            "num_bits": activation_bits, "symmetric": activation_bits == 16, "granularity": "TENSORWISE", "dtype": "INT",
        }  # fmt: skip
    return {"regex": regex, "operation": op, "algorithm_key": "min_max_uniform_quantize", "op_config": config}


def _float_tflite(make_layers, shape) -> bytes:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from edgeq.litert import captured_native_output

    keras.utils.set_random_seed(0)  # before the layers exist: their initial weights come from it
    model = keras.Sequential([keras.Input(shape, name="image"), *make_layers()])
    with captured_native_output():
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _calibration_samples(shape: tuple[int, ...]) -> np.ndarray:
    measured = np.random.default_rng(1).normal(size=(4, *shape))  # the runner's inputs, drawn the same way
    more = np.random.default_rng(0).normal(size=(44, *shape))
    return np.concatenate([measured, more]).astype("float32")


@pytest.fixture(scope="session")
def variants() -> dict[str, bytes]:
    """Every variant of EXPECTED, quantized with edgeq's own recipes where edgeq has the mode, raw rules otherwise."""
    import keras
    from litert_quantizer import quantizer

    from edgeq.litert import captured_native_output
    from edgeq.quantize import FloatGraph

    cnn = FloatGraph(_float_tflite(lambda: [
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a"),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_b"),
        keras.layers.Flatten(),
        keras.layers.Dense(8, activation="relu", name="fc_a"),
        keras.layers.Dense(3, name="fc_b"),
    ], (8, 8, 1)))  # fmt: skip
    other = FloatGraph(_float_tflite(lambda: [
        keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw"),
        keras.layers.Conv2DTranspose(2, 3, padding="same", activation="relu", name="tconv"),
        keras.layers.Flatten(),
        keras.layers.Dense(3, name="fc"),
    ], (8, 8, 2)))  # fmt: skip
    # calibrated on samples that include the runner's inputs, so no activation range clips what is measured
    cnn_stats = cnn.calibrate({cnn.inputs[0].name: _calibration_samples((8, 8, 1))})
    other_stats = other.calibrate({other.inputs[0].name: _calibration_samples((8, 8, 2))})
    conv_b = next(layer for layer in cnn.layers if "conv_b" in layer.name)
    conv_a = next(layer for layer in cnn.layers if "conv_a" in layer.name)
    fc_a = next(layer for layer in cnn.layers if "fc_a" in layer.name)

    def raw(graph: FloatGraph, stats, rules) -> bytes:
        with captured_native_output():
            q = quantizer.Quantizer(bytearray(graph.model), rules)
            return bytes(
                q.quantize(stats if q.need_calibration else None, enable_progress_report=False).quantized_model
            )

    int8, int16, int4, flt = Precision.INT8, Precision.INT16, Precision.INT4, Precision.FLOAT
    made = {
        "float32": cnn.model,
        "float16": cnn.quantize(QuantMode.FLOAT16, None),
        "int8": cnn.quantize(QuantMode.INT8, cnn_stats),
        "int8-per-tensor": cnn.quantize(QuantMode.INT8, cnn_stats, per_channel=False),
        "int16x8": cnn.quantize(QuantMode.INT16X8, cnn_stats),
        "int16x8-per-tensor": cnn.quantize(QuantMode.INT16X8, cnn_stats, per_channel=False),
        "w4a8": cnn.quantize(QuantMode.W4A8, cnn_stats),
        "w4a8-conv-only": cnn.quantize(QuantMode.W4A8, cnn_stats, [Override(int8, op="FULLY_CONNECTED")]),
        "w4a8-fc-only": cnn.quantize(QuantMode.INT8, cnn_stats, [Override(int4, op="FULLY_CONNECTED")]),
        "w4a16-conv": raw(cnn, cnn_stats, [_rule(".*", "*", 16, 8, "TENSORWISE"), _rule(".*", "CONV_2D", 16, 4)]),
        "w4a16-fc": raw(cnn, cnn_stats, [_rule(".*", "*", 16, 8), _rule(".*", "FULLY_CONNECTED", 16, 4)]),
        "int4-weight": cnn.quantize(QuantMode.INT4_WEIGHT, None),
        "dynamic": cnn.quantize(QuantMode.DYNAMIC, None),
        "dynamic-per-tensor": cnn.quantize(QuantMode.DYNAMIC, None, per_channel=False),
        "dynamic-int4": raw(cnn, None, [_rule(".*", "*", None, 4)]),
        "int8-float-fc": cnn.quantize(QuantMode.INT8, cnn_stats, [Override(flt, layer=fc_a.exact_pattern)]),
        "int8-int16-conv": cnn.quantize(QuantMode.INT8, cnn_stats, [Override(int16, layer=conv_b.exact_pattern)]),
        "int16-first-per-tensor": raw(
            cnn,
            cnn_stats,
            [
                _rule(".*", "*", 8, 8, "TENSORWISE"),
                _rule(".*", "INPUT", 16, 8, "TENSORWISE"),
                _rule(conv_a.exact_pattern, "*", 16, 8, "TENSORWISE"),
            ],
        ),
        "b-float32": other.model,
        "b-dynamic": other.quantize(QuantMode.DYNAMIC, None),
        "b-dynamic-tconv-per-tensor": raw(other, None, [_rule(".*", "CONV_2D_TRANSPOSE", None, 8, "TENSORWISE")]),
        "b-int16x8-per-tensor": other.quantize(QuantMode.INT16X8, other_stats, per_channel=False),
    }
    return made


# --------------------------------------------------------------------------- measuring, here and in other environments

# Runs every .tflite of a folder: allocate_tensors(), then invoke() on 4 random inputs; prints JSON
# {name: {"error": str} | {"outputs": [[...], ...]}} (outputs dequantized). Python 3.8+ and numpy 1.x or 2.x.
_RUNNER = textwrap.dedent(
    """
    import glob, json, os, sys
    import numpy as np
    family = sys.argv[2]
    if family == "tflite-runtime":
        import tflite_runtime
        from tflite_runtime.interpreter import Interpreter
        version = tflite_runtime.__version__
    elif family == "ai-edge-litert":
        from importlib.metadata import version as dist_version
        from ai_edge_litert.interpreter import Interpreter
        version = dist_version("ai-edge-litert")
    else:
        import tensorflow as tf
        Interpreter, version = tf.lite.Interpreter, tf.__version__
    results = {}
    for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.tflite"))):
        name = os.path.basename(path)[: -len(".tflite")]
        try:
            it = Interpreter(model_path=path)
            it.allocate_tensors()
            inp, out = it.get_input_details()[0], it.get_output_details()[0]
            x = np.random.default_rng(1).normal(size=(4,) + tuple(inp["shape"][1:])).astype("float32")
            outputs = []
            for row in x:
                v = row[None]
                if inp["dtype"] != np.float32:
                    s, z = inp["quantization"]
                    info = np.iinfo(inp["dtype"])
                    v = np.clip(np.round(v / s + z), info.min, info.max).astype(inp["dtype"])
                it.set_tensor(inp["index"], v)
                it.invoke()
                y = it.get_tensor(out["index"]).astype("float64")
                if out["dtype"] != np.float32:
                    s, z = out["quantization"]
                    y = (y - z) * s
                outputs.append([float(t) for t in y.ravel()])
            results[name] = {"outputs": outputs}
        except Exception as exc:
            results[name] = {"error": " ".join(str(exc).split())[:300]}
    print(json.dumps({"version": version, "results": results}))
    """
)


@dataclasses.dataclass(frozen=True)
class Measured:
    family: str
    version: str
    status: dict[str, str]  # variant -> "runs" | "fails: ..." | "wrong outputs"


def _judge(results: dict) -> dict[str, str]:
    """A variant runs when it loads, invokes and stays near its float model.

    Near: the error's RMS under half the float output's RMS. Quantization moves these tiny untrained
    models by up to about a quarter; the failures measured (zeros, NaN, garbage) are near 100 % or more.
    """
    status = {}
    for name, result in results.items():
        if name in ("float32", "b-float32"):
            continue
        if "error" in result:
            status[name] = "fails: " + result["error"]
            continue
        reference = np.asarray(results["b-float32" if name.startswith("b-") else "float32"]["outputs"])
        got = np.asarray(result["outputs"])
        close = np.all(np.isfinite(got)) and np.linalg.norm(got - reference) <= 0.5 * np.linalg.norm(reference)
        status[name] = "runs" if close else "wrong outputs"
    return status


def _measure(python: str, family: str, folder: Path) -> Measured:
    done = subprocess.run([python, "-c", _RUNNER, str(folder), family], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    payload = json.loads(done.stdout.strip().splitlines()[-1])
    return Measured(family, payload["version"], _judge(payload["results"]))


@pytest.fixture(scope="session")
def variant_dir(variants, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("kernel-variants")
    for name, data in variants.items():
        (folder / f"{name}.tflite").write_bytes(data)
    return folder


def _assert_table_matches(measured: Measured, variants: dict[str, bytes]) -> None:
    wrong = []
    for name, status in sorted(measured.status.items()):
        claimed = runs_on(variants[name], measured.family, measured.version)
        if claimed != (status == "runs"):
            reasons = unsupported(variants[name], measured.family, measured.version)
            wrong.append(f"{name}: measured {status!r}, the table says {'runs' if claimed else reasons}")
    assert not wrong, f"edgeq.kernels.CAPABILITIES disagrees with {measured.family} {measured.version}:\n" + "\n".join(
        wrong
    )


def test_the_table_matches_tflite_runtime(variants, variant_dir):
    """The measurement behind the tflite-runtime column, redone: the table can never drift from it."""
    if not TFLITE_RUNTIME_PYTHON.exists():
        pytest.skip(f"no tflite-runtime environment at {TFLITE_RUNTIME_PYTHON}")
    measured = _measure(str(TFLITE_RUNTIME_PYTHON), "tflite-runtime", variant_dir)
    assert parse_version(measured.version) == parse_version("2.14.0"), (
        "the env should hold tflite-runtime's final release"
    )
    _assert_table_matches(measured, variants)
    # the headline facts, spelled out
    assert measured.status["w4a8-conv-only"] == "runs"
    assert measured.status["w4a8"].startswith("fails") and "FULLY_CONNECTED" in measured.status["w4a8"]
    assert measured.status["int4-weight"].startswith("fails") and "DEQUANTIZE" in measured.status["int4-weight"]
    assert measured.status["int8-int16-conv"].startswith("fails") and "QUANTIZE" in measured.status["int8-int16-conv"]
    assert measured.status["dynamic"] == "wrong outputs"  # per-channel dynamic-range FULLY_CONNECTED: zeros
    assert measured.status["w4a16-conv"] == "wrong outputs"
    for runs in ("int8", "int16x8", "dynamic-per-tensor", "int8-float-fc", "int16-first-per-tensor", "float16"):
        assert measured.status[runs] == "runs", runs


def test_the_table_matches_ai_edge_litert_and_tensorflow_here(variants, variant_dir):
    for family in ("ai-edge-litert", "tensorflow"):
        measured = _measure(sys.executable, family, variant_dir)
        if parse_version(measured.version) > parse_version(NEWEST[family]):
            pytest.fail(
                f"{family} {measured.version} is newer than the table ({NEWEST[family]}): measure it and update edgeq.kernels"
            )
        _assert_table_matches(measured, variants)


# --------------------------------------------------------------------------- what a model needs


def test_required_features_of_each_variant(variants):
    for name, expected in EXPECTED.items():
        assert {f.key for f in required_features(variants[name])} == expected, name


def test_features_name_their_ops_and_count_them(variants):
    by_key = {f.key: f for f in required_features(variants["w4a8"])}
    fc = by_key["int4-weights:FULLY_CONNECTED"]
    assert fc.kind is FeatureKind.INT4_WEIGHTS and fc.ops == ("FULLY_CONNECTED",) and fc.count == 2
    assert str(fc) == "int4-weights:FULLY_CONNECTED"
    int16 = {f.key: f for f in required_features(variants["int8-int16-conv"])}["int16-activations"]
    assert "CONV_2D" in int16.ops and int16.count >= 1
    feature = required_features(variants["int4-weight"])[0]
    assert feature.ops == ("DEQUANTIZE",) and feature.count == 4
    assert json.loads(json.dumps(dataclasses.asdict(feature), default=str))["kind"] == "int4-dequantize"  # a str enum


def test_weights_per_op_type(variants):
    from edgeq.quantize import weight_census

    w4a8_conv = inspect_kernels(variants["w4a8-conv-only"])
    assert w4a8_conv.weights == {"CONV_2D": {"int4": 2}, "FULLY_CONNECTED": {"int8": 2}}
    assert w4a8_conv.weights_text() == "int4: CONV_2D x2; stayed int8: FULLY_CONNECTED x2"
    assert inspect_kernels(variants["int8"]).weights_text() == "int8: CONV_2D x2, FULLY_CONNECTED x2"
    assert inspect_kernels(variants["int4-weight"]).weights == {
        "CONV_2D": {"int4->float": 2},
        "FULLY_CONNECTED": {"int4->float": 2},
    }
    for name, data in variants.items():  # the same census the conversion report shows
        assert inspect_kernels(data).weights == weight_census(data), name


def test_not_a_model_is_a_model_error():
    from edgeq.errors import ModelError

    with pytest.raises(ModelError):
        required_features(b"not a flatbuffer at all")


def test_schema_type_numbers_are_the_schemas():
    from ai_edge_litert import schema_py_generated as schema

    from edgeq import kernels

    t = schema.TensorType
    assert (kernels._INT4, kernels._INT8, kernels._INT16, kernels._FLOAT32, kernels._INT2, kernels._UINT4) == (
        t.INT4, t.INT8, t.INT16, t.FLOAT32, t.INT2, t.UINT4,
    )  # fmt: skip


# --------------------------------------------------------------------------- the table and the answers


def test_the_table_is_well_formed():
    for key, row in CAPABILITIES.items():
        assert set(row) == set(RUNTIME_FAMILIES), key
        for family, s in row.items():
            assert s.source == "measured" and s.evidence, (key, family)
            if s.since is not None:
                parse_version(s.since)
                assert parse_version(s.since) <= parse_version(NEWEST[family]), (key, family)
            if s.lacking is not None:
                assert s.without, (key, family)
                assert s.since is None or parse_version(s.lacking) < parse_version(s.since), (key, family)
            if s.gap is not None:
                assert parse_version(s.since) < parse_version(s.gap[0]) <= parse_version(s.gap[1]), (key, family)


def test_parse_version():
    assert parse_version("2.14.0") == parse_version("2.14") == (2, 14)
    assert parse_version("2.5.0.post1") == (2, 5)
    assert parse_version("1.10") > parse_version("1.9.9")
    with pytest.raises(ValueError):
        parse_version("latest")


def test_unsupported_says_why_and_what_has_it(variants):
    w4a8 = variants["w4a8"]
    reasons = unsupported(w4a8, "tflite-runtime", "2.14")
    assert len(reasons) == 1
    assert reasons[0].startswith(
        "tflite-runtime 2.14 has no FULLY_CONNECTED kernel for int4 weights with int8 activations (measured: fails at prepare"
    )
    assert reasons[0].endswith("ai-edge-litert >= 1.1.0 and tensorflow >= 2.19.1 have it")
    assert unsupported(w4a8, "tflite-runtime", None) == tuple(
        r.replace("2.14 ", f"{NEWEST['tflite-runtime']} (the newest release edgeq knows) ", 1) for r in reasons
    )
    assert unsupported(w4a8, "ai-edge-litert", None) == () and runs_on(w4a8, "ai-edge-litert", "1.1.0")
    assert "ai-edge-litert 1.0.1 has no FULLY_CONNECTED kernel" in unsupported(w4a8, "ai-edge-litert", "1.0.1")[0]
    assert unsupported(variants["w4a8-conv-only"], "tflite-runtime", "2.14.0") == ()
    old = unsupported(variants["w4a8-conv-only"], "tflite-runtime", "2.11.0")
    assert "does not know the int4 type" in old[0]
    # int16 layers inside an int8 model: entering the int16 region is the missing kernel, and a patch release brought it
    mixed = variants["int8-int16-conv"]
    assert runs_on(mixed, "ai-edge-litert", "2.1.3") and not runs_on(mixed, "ai-edge-litert", "2.1.2")
    assert "QUANTIZE kernel from int8 to int16" in unsupported(mixed, "tensorflow", "2.21.0")[0]
    # the silent failures are named as such
    assert "returns zeros" in unsupported(variants["dynamic"], "tflite-runtime", "2.14.0")[0]
    # older than anything measured: not known, rather than known to lack
    assert "not known to have" in unsupported(variants["int16x8-per-tensor"], "tflite-runtime", "2.5.0")[0]
    with pytest.raises(ValueError):
        unsupported(w4a8, "tflite_runtime", None)


def test_a_regression_between_releases_is_recorded():
    s = support_for("int4-weights-dynamic-per-tensor:FULLY_CONNECTED", "tensorflow")
    assert s.gap == ("2.17.1", "2.19.1")


def test_an_unmeasured_feature_is_assumed_for_the_newest_ai_edge_litert_only():
    s = support_for("int4-weights:EMBEDDING_LOOKUP", "ai-edge-litert")
    assert s.source == "assumed" and s.since == NEWEST["ai-edge-litert"]
    assert support_for("int4-weights:EMBEDDING_LOOKUP", "tflite-runtime").since is None


# --------------------------------------------------------------------------- targets


def test_check_refuses_w4a8_with_fc_for_the_32_bit_pi(variants):
    pi32 = load_target("rpi4b-32bit")
    with pytest.raises(ConversionError) as err:
        check_runs_on_target(variants["w4a8"], pi32)
    assert err.value.exit_code == 6
    assert err.value.message.startswith(
        "target rpi4b-32bit cannot run this model: none of its runtimes (tflite-runtime 2.14.0)"
    )
    assert "FULLY_CONNECTED kernel for int4 weights with int8 activations" in err.value.message
    assert (
        "a device with ai-edge-litert >= 1.1.0 or tensorflow >= 2.19.1 runs it (rpi4b-32bit lists only tflite-runtime)"
        in err.value.hint
    )
    assert "--op FULLY_CONNECTED=int8" in err.value.hint
    # the README quotes this error: keep them the same
    readme = (Path(__file__).resolve().parents[1] / "targets" / "README.md").read_text()
    assert err.value.message.splitlines()[1].strip() in readme and err.value.hint in readme


def test_check_accepts_what_a_target_can_run(variants):
    check_runs_on_target(variants["w4a8"], load_target("rpi4b"))  # ai-edge-litert is its first runtime
    check_runs_on_target(variants["w4a8-conv-only"], load_target("rpi4b-32bit"))  # int4 CONV_2D runs on 2.14
    check_runs_on_target(variants["int8"], load_target("rpi4b-32bit"))
    check_runs_on_target(variants["float32"], load_target("coral-dev-board"))  # nothing special: nothing to check
    check_runs_on_target(variants["w4a8-conv-only"], load_target("jetson-nano"))  # tflite-runtime 2.13 has int4 CONV_2D


def test_check_uses_the_targets_versions(variants):
    pinned = types.SimpleNamespace(
        name="old-litert", runtimes=("ai-edge-litert",), runtime_versions={"ai-edge-litert": "2.1.2"}
    )
    with pytest.raises(ConversionError) as err:
        check_runs_on_target(variants["int8-int16-conv"], pinned)
    assert "ai-edge-litert 2.1.2 has no QUANTIZE kernel from int8 to int16" in err.value.message
    assert "--mode int16x8" in err.value.hint  # no installable release runs it: a variant that avoids it
    unpinned = types.SimpleNamespace(name="new-litert", runtimes=("ai-edge-litert",), runtime_versions={})
    check_runs_on_target(variants["int8-int16-conv"], unpinned)
    with pytest.raises(ConversionError) as err:
        check_runs_on_target(variants["dynamic"], load_target("jetson-nano"))
    assert (
        "tflite-runtime 2.13.0 has no dynamic-range FULLY_CONNECTED kernel for per-channel int8 weights"
        in err.value.message
    )
    assert "tensorflow 2.7.0 is not known to have" in err.value.message
    assert "quantization.per_channel = false" in err.value.hint
