"""The probe program under both runtimes, its output parsing, parity and throttling flags."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _models import *  # noqa: F403 - session fixtures
from _models import DIGITS

from edgeq.errors import ProbeOutputError, RemoteCommandError
from edgeq.probe import (
    PROBE_FILE,
    ProbeOptions,
    compare_parity,
    parse_probe_output,
    probe_command,
    result_from_document,
)

ROOT = Path(__file__).resolve().parent.parent
TFLITE_RUNTIME_PY = ROOT / ".venv-tflite-runtime" / "bin" / "python"
FAST = ProbeOptions(runs=20, min_s=0.05, warmup_runs=2, warmup_min_s=0.0)


@pytest.fixture(scope="session")
def samples_npz(int8_model, tmp_path_factory) -> Path:
    """Real samples quantized to the model's int8 input, keyed by input name."""
    from edgeq.litert import ModelRunner, quantize

    info = ModelRunner(int8_model).inputs["image"]
    x = np.load(DIGITS / "eval.npz")["x"][:16]
    path = tmp_path_factory.mktemp("samples") / "samples.npz"
    np.savez(path, image=quantize(x, info.scale, info.zero_point, np.int8))
    return path


def run_local(python: str | Path, model: Path, options=FAST, samples=None, outputs=False, threads=2):
    cmd = probe_command(str(python), str(PROBE_FILE), str(model), options, threads, samples and str(samples), outputs)
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=120)
    return proc, result_from_document(parse_probe_output(proc.stdout, "local"), "local")


def interpreters():
    yield pytest.param(sys.executable, "ai-edge-litert", id="ai-edge-litert")
    yield pytest.param(TFLITE_RUNTIME_PY, "tflite-runtime", id="tflite-runtime-numpy1")


@pytest.mark.parametrize("python, runtime", list(interpreters()))
def test_probe_measures_under_each_runtime(int8_model, python, runtime):
    assert Path(python).exists(), "scripts/bootstrap.sh creates the tflite-runtime venv"
    proc, result = run_local(python, int8_model)
    assert proc.returncode == 0
    assert result.runtime == runtime and result.runtime_version
    if runtime == "tflite-runtime":
        assert result.numpy.startswith("1.")  # as on a Raspberry Pi OS image
    lat = result.latency
    assert lat.count == len(result.latencies_ms) >= 20
    assert lat.min_ms <= lat.p50_ms <= lat.p90_ms <= lat.p99_ms <= lat.max_ms
    assert lat.p50_ms == pytest.approx(float(np.median(result.latencies_ms)), rel=1e-6)
    assert result.threads == 2 and result.input_source == "random"
    assert result.load_ms > 0 and result.first_inference_ms > 0 and result.peak_rss_mb > 10


def test_runtime_preference_and_forcing(int8_model):
    forced = dataclasses.replace(FAST, runtime="tflite-runtime")
    with pytest.raises(RemoteCommandError, match="no TFLite runtime could be imported; tried: tflite-runtime"):
        run_local(sys.executable, int8_model, options=forced)  # the main venv has LiteRT only
    # the first installed runtime of the preference list is taken
    prefer = dataclasses.replace(FAST, prefer=("tensorflow", "ai-edge-litert", "tflite-runtime"))
    assert run_local(TFLITE_RUNTIME_PY, int8_model, options=prefer)[1].runtime == "tflite-runtime"
    prefer = dataclasses.replace(FAST, prefer=("tflite-runtime", "ai-edge-litert"))
    assert run_local(sys.executable, int8_model, options=prefer)[1].runtime == "ai-edge-litert"


@pytest.mark.parametrize("python", [sys.executable, TFLITE_RUNTIME_PY], ids=["ai-edge-litert", "tflite-runtime"])
def test_parity_with_the_host_interpreter(int8_model, samples_npz, python):
    from edgeq.litert import load_interpreter

    _, result = run_local(python, int8_model, samples=samples_npz, outputs=True)
    assert result.input_source == "samples" and result.outputs
    interp = load_interpreter(int8_model)
    x = np.load(samples_npz)["image"]
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    host = []
    for i in range(len(x)):
        interp.set_tensor(inp["index"], x[i : i + 1])
        interp.invoke()
        host.append(interp.get_tensor(out["index"]).copy())
    parity = compare_parity({"output_0": np.concatenate(host)}, result.outputs)
    if python == sys.executable:
        assert parity.bit_exact  # same runtime, same model, same samples
    else:
        # a different runtime may round differently (reference kernels vs XNNPACK), but stays close
        assert parity.outputs["output_0"]["max_abs_diff"] <= 2


def test_garbage_around_the_result_is_ignored():
    doc = {"ok": True, "x": 1}
    noisy = (
        "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n{not json}\n"
        "@@EDGEQ-PROBE-END@@ stray marker\n"
        "@@EDGEQ-PROBE-BEGIN@@\n" + json.dumps(doc) + "\n@@EDGEQ-PROBE-END@@\nSegmentation fault? no\n" + "x" * 100000
    )
    assert parse_probe_output(noisy, "pi") == doc
    assert parse_probe_output(noisy.encode(), "pi") == doc
    # markers printed after the result (a runtime echoing them, a shell profile...) do not hide it
    trailing = noisy + "\n@@EDGEQ-PROBE-BEGIN@@ not json @@EDGEQ-PROBE-END@@\n@@EDGEQ-PROBE-END@@\n"
    assert parse_probe_output(trailing, "pi") == doc


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "printed no result (no output)"),
        ("Traceback ...\nImportError: numpy", "ImportError: numpy"),
        ('@@EDGEQ-PROBE-BEGIN@@\n{"ok": tru\n@@EDGEQ-PROBE-END@@', "not valid JSON"),
        ("@@EDGEQ-PROBE-BEGIN@@\n[1, 2]\n@@EDGEQ-PROBE-END@@", "not a probe document"),
    ],
)
def test_unreadable_results_are_probe_output_errors(text, fragment):
    with pytest.raises(ProbeOutputError) as err:
        parse_probe_output(text, "pi-7")
    assert err.value.message.startswith("pi-7: ") and fragment in err.value.message


def test_a_crashing_probe_reports_its_error(tmp_path):
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"not a flatbuffer")
    proc = subprocess.run(
        [sys.executable, str(PROBE_FILE), "--model", str(bogus)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3
    with pytest.raises(RemoteCommandError, match="pi: the probe failed: ValueError"):
        result_from_document(parse_probe_output(proc.stdout, "pi"), "pi")


def test_throttling_is_flagged():
    base = json.loads(json.dumps(_document()))
    assert not result_from_document(base, "pi").throttled
    hot = _document(thermal_after={"temp_c": 83.5, "clock_mhz": 1500.0, "max_clock_mhz": 1500.0, "throttle_bits": 0})
    assert "CPU at 84 C" in result_from_document(hot, "pi").throttle_reason
    capped = _document(
        thermal_after={"temp_c": 60.0, "clock_mhz": 1500.0, "max_clock_mhz": 1500.0, "throttle_bits": 0x20002}
    )
    assert "get_throttled=0x20002" in result_from_document(capped, "pi").throttle_reason


def _document(**over):
    doc = {
        "ok": True,
        "model": "m.tflite",
        "runtime": "tflite-runtime",
        "runtime_version": "2.14.0",
        "python": "3.11.2",
        "numpy": "1.24.2",
        "machine": "aarch64",
        "cpu_count": 4,
        "threads": 4,
        "xnnpack": False,
        "delegate_partitions": 0,
        "input_source": "random",
        "load_ms": 1.0,
        "allocate_ms": 1.0,
        "first_inference_ms": 2.0,
        "warmup_runs": 5,
        "latency": {
            "count": 2,
            "min_ms": 1.0,
            "mean_ms": 1.5,
            "std_ms": 0.7,
            "p50_ms": 1.5,
            "p90_ms": 1.9,
            "p99_ms": 2.0,
            "max_ms": 2.0,
        },
        "latencies_ms": [1.0, 2.0],
        "peak_rss_mb": 40.0,
        "thermal_before": {"temp_c": 50.0, "clock_mhz": 1500.0, "max_clock_mhz": 1500.0, "throttle_bits": 0},
        "thermal_after": {"temp_c": 55.0, "clock_mhz": 1500.0, "max_clock_mhz": 1500.0, "throttle_bits": 0},
        "outputs": None,
    }
    doc.update(over)
    return doc


# --------------------------------------------------------------------------- what a failure is: by kind, not by words

_WITHOUT_RUNTIMES = """
import runpy, sys
for name in ("ai_edge_litert", "tflite_runtime", "tensorflow"):
    sys.modules[name] = None  # `import name` now fails, as on a device where none is installed
sys.argv = [sys.argv[1], "--model", "/nonexistent/model.tflite", "--runs", "1"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_no_runtime_is_reported_by_its_kind():
    from edgeq.errors import NoRuntimeError

    done = subprocess.run([sys.executable, "-c", _WITHOUT_RUNTIMES, str(PROBE_FILE)], capture_output=True, text=True)
    assert done.returncode == 3
    document = parse_probe_output(done.stdout, "pi")
    assert document["ok"] is False and document["error_kind"] == "no-runtime"
    with pytest.raises(NoRuntimeError, match="no TFLite runtime could be imported") as info:
        result_from_document(document, "pi")
    assert (info.value.kind, info.value.exit_code) == ("no-runtime", 10)
    # the same words without the kind are an ordinary remote-command failure: nothing is decided by the message
    del document["error_kind"]
    with pytest.raises(RemoteCommandError) as plain:
        result_from_document(document, "pi")
    assert not isinstance(plain.value, NoRuntimeError) and plain.value.kind == "remote-command"
