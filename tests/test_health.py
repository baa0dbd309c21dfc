"""Health-gated deploys through the real path: real sshd devices, both runtimes, the real probe on each device.

Each failure the issue names is made real: a model the device's runtime
cannot load (int4 FULLY_CONNECTED weights on tflite-runtime 2.14), a runtime
patched to perturb its outputs (a ``sitecustomize`` that the device's Python
loads), a version that really is slower (many more layers), and a batch
whose failures stop the rollout and switch back what it had switched. After
each, the version every device runs is read from the device itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from _models import *  # noqa: F403 - session fixtures (digits_classifier, int8_model)
from _models import DIGITS
from click.testing import CliRunner
from test_bench import device_pythons, ssh_host, write_inventory, write_script  # noqa: F401 - fixture

from edgeq.cli import cli
from edgeq.errors import HealthCheckFailed, PartialFailure
from edgeq.health import tolerance_for

pytestmark = pytest.mark.usefixtures("isolated_home")
CALIB = DIGITS / "calib.npz"


def _cli(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output, result.output
    return result


def _active(device, name: str) -> str | None:
    """The version the device runs, read from its own folder (the `current` link)."""
    link = device.remote_dir / "models" / name / "current"
    return os.readlink(link) if link.is_symlink() else None


def _version(model: Path) -> str:
    import hashlib

    return hashlib.sha256(model.read_bytes()).hexdigest()[:12]


@pytest.fixture(scope="module")
def w4a8_model(digits_classifier, tmp_path_factory) -> Path:
    """int4 FULLY_CONNECTED weights: ai-edge-litert runs them, tflite-runtime 2.14 fails them at prepare."""
    from edgeq.convert import ConvertOptions, convert_model
    from edgeq.quantize import QuantMode

    out = tmp_path_factory.mktemp("health") / "digits_w4a8.tflite"
    convert_model(digits_classifier, CALIB, out, ConvertOptions(mode=QuantMode.W4A8))
    return out


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory) -> Path:
    """The digits model's interface with many wide layers: really slower (same input, same output)."""
    import keras
    import tensorflow as tf

    from edgeq.litert import captured_native_output

    keras.utils.set_random_seed(0)
    layers = [keras.Input((8, 8, 1), name="image"), keras.layers.Flatten()]
    layers += [keras.layers.Dense(1024, activation="relu") for _ in range(6)]
    layers += [keras.layers.Dense(10, activation="softmax")]
    with captured_native_output():
        data = tf.lite.TFLiteConverter.from_keras_model(keras.Sequential(layers)).convert()
    out = tmp_path_factory.mktemp("health") / "digits_slow.tflite"
    out.write_bytes(data)
    return out


def test_tolerance_rule():
    assert tolerance_for({"y": np.zeros(3, np.int8)}, None, same_build=True) == 0.0
    assert tolerance_for({"y": np.zeros(3, np.int8)}, None, same_build=False) == 1.0
    assert tolerance_for({"y": np.array([0.0, 2.0], np.float32)}, None, same_build=False) == pytest.approx(2e-3)
    assert tolerance_for({"y": np.zeros(3, np.int8)}, 5.0, same_build=True) == 5.0


def test_a_model_one_runtime_cannot_load_is_rolled_back_there_only(
    start_device, device_pythons, tmp_path, int8_model, w4a8_model
):
    devices = {"litert": start_device("litert"), "tflite": start_device("tflite")}
    hosts = {
        "litert": ssh_host(devices["litert"], device_pythons["ai-edge-litert"]),
        "tflite": ssh_host(devices["tflite"], device_pythons["tflite-runtime"]),
    }
    inventory = write_inventory(tmp_path / "fleet.yml", hosts)
    common = ["-i", inventory, "--known-hosts", tmp_path / "known"]
    (tmp_path / "known").write_text("".join(d.known_hosts_line() + "\n" for d in devices.values()))
    first = _cli("deploy", int8_model, "--name", "digits", *common)
    assert first.exit_code == 0, first.output
    v1, v2 = _version(int8_model), _version(w4a8_model)

    result = _cli("deploy", w4a8_model, "--name", "digits", *common, "--check-samples", CALIB, "--json")
    assert result.exit_code == HealthCheckFailed.exit_code == 16, result.output
    rows = {r["device"]: r for r in json.loads(result.stdout)["results"]}
    assert rows["litert"]["status"] == "ok" and rows["litert"]["version"] == v2
    assert rows["litert"]["health"]["ok"] and rows["litert"]["health"]["parity"]["bit_exact"]
    bad = rows["tflite"]
    assert (bad["status"], bad["kind"], bad["version"]) == ("failed", "health-check", v1)
    assert bad["health"]["failure"] == "load" and "rolled back to " + v1 in bad["reason"]
    assert _active(devices["litert"], "digits") == v2 and _active(devices["tflite"], "digits") == v1
    # the passed check is kept beside the version: what `edgeq check` compares with later
    baseline = json.loads((devices["litert"].remote_dir / "models" / "digits" / v2 / "baseline.json").read_text())
    assert baseline["runtime"] == "ai-edge-litert" and baseline["parity_bit_exact"] is True
    assert len(baseline["latencies_ms"]) >= 20 and baseline["p50_ms"] > 0


def _perturbed_python(device, device_pythons) -> Path:
    """The device's runtime, patched: every output tensor comes back with 3 added (a broken build, a bad kernel)."""
    patch = device.home / "patch"
    patch.mkdir()
    (patch / "sitecustomize.py").write_text(
        "import numpy as np\n"
        "from ai_edge_litert import interpreter as _i\n"
        "_get = _i.Interpreter.get_tensor\n"
        "def get_tensor(self, index, *a, **k):\n"
        "    out = _get(self, index, *a, **k)\n"
        "    if index in [d['index'] for d in self.get_output_details()]:\n"
        "        info = np.iinfo(out.dtype) if out.dtype.kind in 'iu' else None\n"
        "        out = np.clip(out.astype(np.int32) + 3, info.min, info.max).astype(out.dtype) if info else out + 0.5\n"
        "    return out\n"
        "_i.Interpreter.get_tensor = get_tensor\n"
    )
    python = write_script(
        device.home / "patched-python", f'#!/bin/sh\nPYTHONPATH={patch} exec {device_pythons["ai-edge-litert"]} "$@"\n'
    )
    os.system(f"chown -R {device.uid} {device.home}")
    return python


def test_outputs_perturbed_by_the_device_runtime_fail_parity(start_device, device_pythons, tmp_path, int8_model):
    device = start_device("perturbed")
    python = _perturbed_python(device, device_pythons)
    inventory = write_inventory(tmp_path / "fleet.yml", {device.name: ssh_host(device, python)})
    common = ["-i", inventory, "--known-hosts", device.known_hosts]
    v1 = _version(int8_model)
    assert _cli("deploy", int8_model, "--name", "digits", *common, "--no-health-check").exit_code == 0
    other = tmp_path / "digits_v2.tflite"
    other.write_bytes(int8_model.read_bytes())
    _append_metadata(other)  # the same graph under a new version
    result = _cli("deploy", other, "--name", "digits", *common, "--check-samples", CALIB, "--json")
    assert result.exit_code == 16, result.output
    (row,) = json.loads(result.stdout)["results"]
    assert row["health"]["failure"] == "parity" and row["version"] == v1
    assert "outputs differ from the host's beyond" in row["reason"] and "max abs diff 3" in row["reason"]
    assert _active(device, "digits") == v1


def _append_metadata(path: Path) -> None:
    """The same graph under another version: a metadata entry added (flatbuffer rebuilt by ai-edge-litert's tools)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(b"edgeq health test v2", dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = "edgeq_test"
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))


def test_a_slower_version_fails_max_slowdown(start_device, device_pythons, tmp_path, int8_model, slow_model):
    device = start_device("slow")
    inventory = write_inventory(
        tmp_path / "fleet.yml", {device.name: ssh_host(device, device_pythons["ai-edge-litert"])}
    )
    common = ["-i", inventory, "--known-hosts", device.known_hosts]
    v1 = _version(int8_model)
    assert _cli("deploy", int8_model, "--name", "digits", *common).exit_code == 0
    result = _cli("deploy", slow_model, "--name", "digits", *common, "--max-slowdown", 20, "--json")
    assert result.exit_code == 16, result.output
    (row,) = json.loads(result.stdout)["results"]
    health = row["health"]
    assert health["failure"] == "slowdown" and health["p50_ms"] > 1.2 * health["previous_p50_ms"]
    assert health["speedup"]["ci_high"] < 1 / 1.2 and "% slower than version " + v1 in row["reason"]
    assert row["version"] == v1 and _active(device, "digits") == v1
    # the other way round it passes: the faster version stays
    back = _cli("deploy", int8_model, "--name", "digits", *common, "--max-slowdown", 20, "--json")
    assert back.exit_code == 0, back.output


def test_a_failing_batch_stops_the_rollout_and_undoes_it(
    start_device, device_pythons, tmp_path, int8_model, w4a8_model
):
    """Batches of 2 with --max-fail 25: batch 1 = one healthy device + one that cannot load the model."""
    names = ["a-litert", "b-tflite", "c-litert", "d-litert"]
    devices = {n: start_device(n) for n in names}
    pythons = {n: device_pythons["tflite-runtime" if "tflite" in n else "ai-edge-litert"] for n in names}
    inventory = write_inventory(tmp_path / "fleet.yml", {n: ssh_host(devices[n], pythons[n]) for n in names})
    (tmp_path / "known").write_text("".join(d.known_hosts_line() + "\n" for d in devices.values()))
    common = ["-i", inventory, "--known-hosts", tmp_path / "known"]
    assert _cli("deploy", int8_model, "--name", "digits", *common).exit_code == 0
    v1 = _version(int8_model)

    args = ["--check-samples", CALIB, "--batch", 2, "--max-fail", 25, "--concurrency", 1, "--json"]
    result = _cli("deploy", w4a8_model, "--name", "digits", *common, *args)
    assert result.exit_code == PartialFailure.exit_code == 12, result.output
    data = json.loads(result.stdout)
    rows = {r["device"]: r for r in data["results"]}
    assert data["undone"] and "1 of 2 devices of batch 1 failed, more than 25 %" in data["stop_reason"]
    assert (rows["a-litert"]["status"], rows["a-litert"]["kind"]) == ("undone", "undone")
    assert (rows["b-tflite"]["status"], rows["b-tflite"]["kind"]) == ("failed", "health-check")
    assert [rows[n]["status"] for n in ("c-litert", "d-litert")] == ["skipped", "skipped"]
    # what the JSON says each device runs is what it runs
    for name in names:
        assert _active(devices[name], "digits") == v1, name
        assert rows[name]["version"] in (v1, None), name
    assert rows["a-litert"]["version"] == v1 and rows["b-tflite"]["version"] == v1

    kept = _cli("deploy", w4a8_model, "--name", "digits", *common, *args, "--no-undo")
    rows = {r["device"]: r for r in json.loads(kept.stdout)["results"]}
    assert rows["a-litert"]["status"] == "ok" and _active(devices["a-litert"], "digits") == _version(w4a8_model)


def test_samples_kept_by_convert_turn_the_health_check_on(start_device, device_pythons, tmp_path, digits_classifier):
    """edgeq convert keeps 32 held-out inputs beside the model (OUT.samples.npz); deploy checks with them unasked."""
    out = tmp_path / "digits_int8.tflite"
    made = _cli("convert", digits_classifier, "--calib", CALIB, "-o", out)
    assert made.exit_code == 0, made.output
    kept = np.load(out.with_suffix(".samples.npz"))
    assert kept.files == ["image"] and kept["image"].shape == (32, 8, 8, 1)
    device = start_device("auto")
    inventory = write_inventory(
        tmp_path / "fleet.yml", {device.name: ssh_host(device, device_pythons["ai-edge-litert"])}
    )
    result = _cli("deploy", out, *["-i", inventory, "--known-hosts", device.known_hosts], "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["results"]
    assert row["health"]["ok"] and row["health"]["parity"]["bit_exact"] is True


def test_a_version_left_unchecked_is_checked_when_the_rollout_runs_again(
    start_device, device_pythons, tmp_path, int8_model
):
    """A run that lost the device during its check leaves the version active and unchecked; the next run checks it."""
    device = start_device("rerun")
    python = _perturbed_python(device, device_pythons)
    inventory = write_inventory(tmp_path / "fleet.yml", {device.name: ssh_host(device, python)})
    common = ["-i", inventory, "--known-hosts", device.known_hosts]
    older = tmp_path / "digits_v0.tflite"
    older.write_bytes(int8_model.read_bytes())
    _append_metadata(older)
    for model in (older, int8_model):  # v0, then v1 active without a check (as if the check had been cut off)
        assert _cli("deploy", model, "--name", "digits", *common, "--no-health-check").exit_code == 0
    result = _cli("deploy", int8_model, "--name", "digits", *common, "--check-samples", CALIB, "--json")
    assert result.exit_code == 16, result.output
    (row,) = json.loads(result.stdout)["results"]
    assert row["health"]["failure"] == "parity" and row["version"] == _version(older)
    assert _active(device, "digits") == _version(older)
