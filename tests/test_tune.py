"""edgeq tune: the budget search on real models, disjoint data, devices, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _models import *  # noqa: F403 - session fixtures
from _models import DIGITS
from click.testing import CliRunner
from test_bench import device_pythons  # noqa: F401 - session fixture: device Pythons with each runtime

from edgeq.cli import cli
from edgeq.convert import open_source
from edgeq.errors import CalibrationDataError, ConversionError, ModelError
from edgeq.quantize import FloatGraph
from edgeq.tune import Budget, TuneOptions, pareto_front, prepare, run_tune, search, split_data
from edgeq.types import QuantMode

CALIB = DIGITS / "calib.npz"
EVAL = DIGITS / "eval.npz"


@pytest.fixture(scope="module")
def ruined_graph(ruined_layer_model) -> FloatGraph:
    from edgeq.convert import converter_for, run_converter
    from edgeq.types import IOType

    source = open_source(ruined_layer_model)
    return FloatGraph(run_converter(converter_for(source, QuantMode.FLOAT32, IOType.FLOAT32, None, True), []))


def _ruined_layer(graph: FloatGraph):
    return next(layer for layer in graph.layers if "ruined" in layer.name and layer.op == "FULLY_CONNECTED")


def test_tune_finds_the_one_ruined_layer_and_keeps_only_it(ruined_graph):
    options = TuneOptions(budget=Budget(max_drop_points=0.5), modes=(QuantMode.INT8,))
    data = split_data(str(CALIB), str(EVAL), ruined_graph.inputs, options)
    prep = prepare(ruined_graph, data, options, "ruined")
    result, _models = search(prep)
    int8 = result.candidates[0]
    assert int8.mode is QuantMode.INT8 and not int8.kept
    assert int8.score.drop_points > 20  # int8 really ruins it
    assert result.ranking[0].index == _ruined_layer(ruined_graph).index  # the ranking names it first
    assert result.best is not None
    assert result.best.kept == (_ruined_layer(ruined_graph).name,)
    assert result.best.kept_precision == "float" and result.best.score.drop_points <= 0.5
    # only that one: every other candidate within budget keeps it too, and none keeps fewer layers
    assert all(_ruined_layer(ruined_graph).name in c.kept for c in result.candidates if c.meets_budget)
    # every candidate was run before it counted
    assert all(c.score is not None for c in result.candidates)


def test_when_the_ranking_misleads_the_search_widens(ruined_graph, monkeypatch):
    """A ranking that puts the ruined layer last: growing k alone would not find it early; widening or k does."""
    import edgeq.tune as tune

    real = tune.layer_ranking

    def reversed_ranking(prep, model):
        return tuple(reversed(real(prep, model)))

    monkeypatch.setattr(tune, "layer_ranking", reversed_ranking)
    options = TuneOptions(budget=Budget(max_drop_points=0.5), modes=(QuantMode.INT8,))
    prep = prepare(ruined_graph, split_data(str(CALIB), str(EVAL), ruined_graph.inputs, options), options, "ruined")
    result, _ = search(prep)
    assert result.best is not None and result.best.kept == (_ruined_layer(ruined_graph).name,)  # pruned down to it


def test_the_three_parts_of_the_data_are_disjoint(ruined_graph):
    options = TuneOptions(budget=Budget(max_drop_points=1.0))
    data = split_data(str(CALIB), str(EVAL), ruined_graph.inputs, options)
    name = ruined_graph.inputs[0].name

    def rows(a):
        return {r.tobytes() for r in np.asarray(a[name]).reshape(len(a[name]), -1)}

    search_rows, report_rows, calib_rows = rows(data.search), rows(data.report), rows(data.calibration)
    assert search_rows and report_rows
    assert not search_rows & report_rows and not report_rows & calib_rows and not search_rows & calib_rows
    # without labels the calibration hold-out is split instead, still disjoint from what calibrates
    floor = TuneOptions(budget=Budget(min_agreement_pct=99))
    data = split_data(str(CALIB), None, ruined_graph.inputs, floor)
    assert not rows(data.search) & rows(data.report) and not rows(data.report) & rows(data.calibration)
    assert len(data.calibration[name]) == 200


def test_pareto_front_drops_dominated_candidates(ruined_graph):
    options = TuneOptions(budget=Budget(max_drop_points=0.5))
    prep = prepare(ruined_graph, split_data(str(CALIB), str(EVAL), ruined_graph.inputs, options), options, "ruined")
    result, _ = search(prep)
    front = pareto_front(result.candidates, "accuracy")
    for c in result.candidates:
        if c.ran and c not in front:
            assert any(
                f.size_bytes <= c.size_bytes and f.score.loss("accuracy") <= c.score.loss("accuracy") for f in front
            )


def test_cli_tune_without_device_picks_smallest_and_writes_model_recipe_reports(ruined_layer_model, tmp_path):
    out = tmp_path / "tuned"
    result = CliRunner().invoke(
        cli,
        [
            "tune",
            str(ruined_layer_model),
            "--calib",
            str(CALIB),
            "--eval",
            str(EVAL),
            "--max-drop",
            "0.5",
            "-o",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    chosen = report["chosen"]
    assert Path(chosen["path"]).is_file() and Path(chosen["recipe"]).is_file()
    within = [c for c in report["candidates"] if c["meets_budget"]]
    assert chosen["candidate"] == min(within, key=lambda c: c["size_bytes"])["name"]
    assert report["latency_measured"] is False and any("latency was not measured" in n for n in report["notes"])
    for kind in ("json", "md", "png"):
        assert (out / f"ruined_tune.{kind}").is_file()
    # the figures come from the report split, not the search split
    assert report["samples"]["report"] > 0 and chosen["candidate"] in report["report_split"]
    # the chosen model's recipe makes the same bytes again
    again = tmp_path / "again.tflite"
    conv = CliRunner().invoke(
        cli, ["convert", str(ruined_layer_model), "--calib", str(CALIB), "--recipe", chosen["recipe"], "-o", str(again)]
    )
    assert conv.exit_code == 0, conv.output
    assert again.read_bytes() == Path(chosen["path"]).read_bytes()


def test_cli_tune_on_the_host_device_probes_and_picks_the_fastest(digits_classifier, tmp_path, isolated_home):
    out = tmp_path / "tuned"
    args = [
        "tune",
        str(digits_classifier),
        "--calib",
        str(CALIB),
        "--eval",
        str(EVAL),
        "--max-drop",
        "2",
        "--target",
        "host",
        "--rounds",
        "1",
        "--runs",
        "20",
        "--min-time",
        "0",
        "--warmup-runs",
        "2",
        "--warmup-time",
        "0",
        "-o",
        str(out),
        "--json",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["latency_measured"] is True
    (device,) = report["devices"]
    assert device["status"] == "ok" and device["latencies"]
    probed = {lat["candidate"]: lat for lat in device["latencies"]}
    within = [name for name in probed if next(c for c in report["candidates"] if c["name"] == name)["meets_budget"]]
    assert device["chosen"] == min(within, key=lambda n: probed[n]["p50_ms"])
    assert all(lat["ci_low_ms"] <= lat["p50_ms"] <= lat["ci_high_ms"] for lat in probed.values())
    assert Path(report["chosen"]["per_device"]["host"]["path"]).is_file()


def test_budget_that_cannot_be_met_reports_the_best_and_chooses_nothing(ruined_layer_model, tmp_path):
    out = tmp_path / "tuned"
    args = [
        "tune",
        str(ruined_layer_model),
        "--calib",
        str(CALIB),
        "--min-sqnr",
        "150",
        "--max-candidates",
        "3",
        "-o",
        str(out),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 13, result.output
    assert "no candidate is within the budget" in result.output and "the closest was" in result.output
    assert not list(out.glob("*_tuned*.tflite"))
    assert (out / "ruined_tune.json").is_file()  # what was tried is still reported


@pytest.mark.parametrize(
    "extra, code, fragment",
    [
        (["--eval", str(CALIB)], CalibrationDataError.exit_code, "no labels"),
        (["--eval", str(EVAL), "--max-drop", "-1"], ConversionError.exit_code, "between 0 and 100"),
        (["--min-agreement", "250"], ConversionError.exit_code, "at most 100"),
        (["--max-drop", "1"], 2, "--max-drop needs --eval"),
        ([], 2, "give a budget"),
        (["--min-agreement", "99", "--min-sqnr", "20"], ConversionError.exit_code, "exactly one budget"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(ruined_layer_model, tmp_path, extra, code, fragment):
    out = tmp_path / "never"
    result = CliRunner().invoke(cli, ["tune", str(ruined_layer_model), "--calib", str(CALIB), *extra, "-o", str(out)])
    assert result.exit_code == code, result.output
    assert fragment in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_quantized_model_input_is_refused_and_nothing_written(int8_model, tmp_path):
    out = tmp_path / "never"
    result = CliRunner().invoke(
        cli, ["tune", str(int8_model), "--calib", str(CALIB), "--min-agreement", "99", "-o", str(out)]
    )
    assert result.exit_code == ModelError.exit_code and "already quantized" in result.output
    assert not out.exists()


def test_run_tune_refuses_candidates_the_target_runtime_cannot_run(digits_classifier, tmp_path):
    from edgeq.targets import load_target

    options = TuneOptions(budget=Budget(max_drop_points=2.0))
    report, _, _ = run_tune(
        str(digits_classifier), str(CALIB), str(EVAL), options, tmp_path / "t", target=load_target("rpi4b-32bit")
    )
    by_name = {c.name: c for c in report.candidates}
    assert by_name["w4a8"].error and "tflite-runtime" in by_name["w4a8"].error
    assert by_name["int8"].error is None
    assert report.chosen is not None and report.chosen["candidate"] != "w4a8"


def test_a_model_with_no_quantizable_op_is_one_clear_error(model_dir, tmp_path):
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    class OnlySin(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.math.sin(tf.math.cos(x))}

    module = OnlySin()
    path = tmp_path / "only_sin"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    calib = tmp_path / "v.npy"
    np.save(calib, np.random.default_rng(0).normal(size=(40, 16)).astype("float32"))
    out = tmp_path / "never"
    result = CliRunner().invoke(cli, ["tune", str(path), "--calib", str(calib), "--min-sqnr", "20", "-o", str(out)])
    assert result.exit_code == ConversionError.exit_code, result.output
    assert "no op of this model can be quantized" in result.output
    assert not out.exists()


def test_tune_on_a_fleet_of_two_runtimes_through_sshd(
    digits_classifier, start_device, device_pythons, known_hosts_for, tmp_path
):
    """Two real sshd devices: ai-edge-litert, and tflite-runtime 2.14 on a 32-bit-Pi target (its kernels limit the candidates)."""
    from test_bench import FAST, ssh_host, write_inventory

    devices = {"litert": start_device("litert"), "tflite": start_device("tflite")}
    hosts = {
        "litert": ssh_host(devices["litert"], device_pythons["ai-edge-litert"]),
        "tflite": {**ssh_host(devices["tflite"], device_pythons["tflite-runtime"]), "edgeq_target": "rpi4b-32bit"},
    }
    inventory = write_inventory(tmp_path / "fleet.yml", hosts)
    out = tmp_path / "tuned"
    args = [
        "tune",
        str(digits_classifier),
        "--calib",
        str(CALIB),
        "--eval",
        str(EVAL),
        "--max-drop",
        "2",
        "-i",
        str(inventory),
    ]
    args += [
        "--known-hosts",
        str(known_hosts_for(*devices.values())),
        "--retries",
        "0",
        "--rounds",
        "1",
        *map(str, FAST),
        "--threads",
        "1",
        "--skip-checks",  # the x86 tflite device plays a 32-bit Pi: its target's ISA is not its own on purpose
    ]
    result = CliRunner().invoke(cli, [*args, "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    by_device = {d["device"]: d for d in report["devices"]}
    assert set(by_device) == {"litert", "tflite"} and all(d["status"] == "ok" for d in by_device.values())
    # every probed candidate passed both targets' kernel checks: nothing the 32-bit Pi's runtime lacks was sent
    refused = {c["name"] for c in report["candidates"] if c["error"]}
    assert "w4a8" in refused and "int4-weight" in refused
    runtimes = {name: {lat["runtime"] for lat in d["latencies"]} for name, d in by_device.items()}
    assert runtimes == {"litert": {"ai-edge-litert"}, "tflite": {"tflite-runtime"}}
    for d in by_device.values():
        probed = {lat["candidate"]: lat["p50_ms"] for lat in d["latencies"]}
        within = [n for n in probed if next(c for c in report["candidates"] if c["name"] == n)["meets_budget"]]
        assert d["chosen"] == min(within, key=probed.get)
        assert Path(report["chosen"]["per_device"][d["device"]]["path"]).is_file()
