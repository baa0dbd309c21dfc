"""``edgeq doctor``: each problem the issue names, caught on a real device (real sshd, real runtimes), one line and its fix.

The checks themselves are a pure function (:func:`edgeq.doctor.diagnose`),
tested first on facts written here; then every kind of problem is made
real on an sshd device and found through the CLI: NumPy 2 over
tflite-runtime's NumPy 1.x ABI, a runtime too old for the model's kernels,
no runtime, a full disk, a target for another ISA (which also stops a
deploy before anything is sent).
"""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest
from _models import *  # noqa: F403 - session fixtures (digits_classifier, int8_model)
from _models import DIGITS
from click.testing import CliRunner
from test_bench import device_pythons  # noqa: F401 - session fixture: device Pythons with each runtime
from test_provision import TEST_WHEELS

from edgeq.cli import cli
from edgeq.detect import DeviceFacts
from edgeq.doctor import ModelNeeds, diagnose, model_needs
from edgeq.errors import DeviceNotReady
from edgeq.targets import load_target

pytestmark = pytest.mark.usefixtures("isolated_home")


def _facts(**overrides) -> DeviceFacts:
    values = dict(
        device="pi",
        arch="aarch64",
        kernel_arch="aarch64",
        kernel="6.6.51+rpt-rpi-v8",
        board="Raspberry Pi 4 Model B Rev 1.4",
        cpu_model="Cortex-A72",
        cpu_features=("asimd",),
        cores=4,
        max_clock_mhz=1800,
        memory_mb=3792,
        os="Debian GNU/Linux 12 (bookworm)",
        python="/usr/bin/python3",
        python_version="3.11.2",
        runtimes={"tflite-runtime": "2.14.0", "numpy": "1.24.2"},
        broken_runtimes={},
        numpy_with={"tflite-runtime": "1.24.2"},
        disk_free_mb=20_000,
        memory_available_mb=3000,
        libc="glibc 2.36",
    )
    values.update(overrides)
    return DeviceFacts(**values)


def _needs(**overrides) -> ModelNeeds:
    values = dict(
        path="/m/model.tflite",
        size_bytes=100_000,
        features=(),
        custom_ops=(),
        flex_ops=(),
        min_runtime_version="1.5.0",
        memory_mb=5.0,
    )
    values.update(overrides)
    return ModelNeeds(**values)


def test_a_healthy_device_has_no_problems():
    assert diagnose(_facts(), [_needs()], load_target("rpi4b")) == ()


def test_each_problem_is_one_line_with_a_fix():
    problems = diagnose(
        _facts(
            arch="armv7l",
            runtimes={"numpy": "2.2.6"},
            broken_runtimes={"tflite-runtime": "compiled for NumPy 1.x, fails under NumPy 2.2.6"},
            numpy_with={"tflite-runtime": "2.2.6"},
            numpy_abi=("tflite-runtime",),
            disk_free_mb=1,
            memory_available_mb=2,
        ),
        [_needs(size_bytes=5 * 2**20, memory_mb=50.0)],
        load_target("rpi4b"),
        provision_hint="edgeq provision --host pi@10.0.0.5",
    )
    by_check = {p.check: p for p in problems}
    assert set(by_check) == {"target", "disk", "runtime"}  # no runtime works: the model and memory are not judged
    assert "target rpi4b is for aarch64, but the device's userland is armv7l" in by_check["target"].message
    assert "rpi4b-32bit" in by_check["target"].fix and "targets detect" in by_check["target"].fix
    assert "1 MB free" in by_check["disk"].message and "6.0 MB" in by_check["disk"].message
    assert "built for NumPy 1.x" in by_check["runtime"].message
    assert "edgeq provision --host pi@10.0.0.5 --runtime tflite-runtime" in by_check["runtime"].fix
    assert all(p.blocking and "\n" not in p.line() for p in problems)


def test_the_model_against_the_runtime_the_probe_would_pick():
    newer_ops = _needs(min_runtime_version="2.16.0", flex_ops=("FlexErf",), custom_ops=("MyOp", "Mfcc"))
    problems = diagnose(_facts(), [newer_ops], load_target("rpi4b"))
    messages = " | ".join(p.message for p in problems)
    assert "op versions from TensorFlow Lite 2.16.0" in messages and "tflite-runtime 2.14.0 is older" in messages
    assert "Flex delegate (FlexErf)" in messages
    assert "custom ops tflite-runtime does not register: MyOp" in messages and "Mfcc" not in messages
    # the same model on ai-edge-litert 2.x (TF 2.20's LiteRT): its op versions are fine
    litert = _facts(runtimes={"ai-edge-litert": "2.3.0", "numpy": "2.2.6"})
    assert not [p for p in diagnose(litert, [_needs(min_runtime_version="2.16.0")]) if p.check == "model"]


def test_memory_measured_on_the_host_against_the_devices_available(int8_model):
    needs = model_needs(int8_model)
    assert needs.memory_mb is not None and 0 < needs.memory_mb < 500
    assert needs.min_runtime_version and needs.size_bytes == Path(int8_model).stat().st_size
    (problem,) = diagnose(_facts(memory_available_mb=0), [needs], load_target("rpi4b"))
    assert problem.check == "memory" and "0 MB of memory available" in problem.message


# --------------------------------------------------------------------------- through the CLI, on real devices


def _cli(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output, result.output
    return result


def _common(device, tmp_path) -> list:
    config = tmp_path / f"ssh_config.{device.name}"
    config.write_text(f"Host *\n  IdentityFile {device.key_path}\n")
    return ["--host", device.spec, "--known-hosts", device.known_hosts, "--ssh-config", config]


def _inventory(tmp_path, device, python, **extra) -> Path:
    from test_bench import ssh_host, write_inventory

    return write_inventory(tmp_path / f"{device.name}.yml", {device.name: {**ssh_host(device, python), **extra}})


def _unpack_into_runtime_folder(device, python, wheel: Path) -> Path:
    """Unpack ``wheel`` where edgeq provision keeps a runtime for ``python`` (first on the probe's path)."""
    tag = subprocess.run(
        [str(python), "-c", "import platform, sys; print('py%d%d-%s' % (*sys.version_info[:2], platform.machine()))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    folder = device.remote_dir / "runtime" / tag
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(folder)
    subprocess.run(["chown", "-R", str(device.uid), str(device.remote_dir)], check=True)
    return folder


def _numpy2_wheel() -> Path:
    wheel = next(iter(sorted((TEST_WHEELS / "cp311-x86_64").glob("numpy-2.*-cp311-*x86_64*.whl"))), None)
    if wheel is None:
        pytest.skip(f"no numpy 2 wheel in the test wheel cache {TEST_WHEELS} (scripts/bootstrap.sh fills it)")
    return wheel


def test_numpy_2_over_tflite_runtime_is_caught_and_provision_fixes_it(
    start_device, device_pythons, tmp_path, int8_model, monkeypatch
):
    device = start_device("numpy2")
    python = device_pythons["tflite-runtime"]
    _unpack_into_runtime_folder(device, python, _numpy2_wheel())  # what `pip install numpy` (2.x) over it does
    inventory = _inventory(tmp_path, device, python)
    common = ["-i", inventory, "--known-hosts", device.known_hosts]

    found = _cli("doctor", int8_model, *common)
    assert found.exit_code == DeviceNotReady.exit_code == 14, found.output
    assert "tflite-runtime was built for NumPy 1.x and fails under the device's NumPy 2." in found.stdout
    assert "fix: edgeq provision --host" in found.stdout and "--runtime tflite-runtime" in found.stdout
    probe = _cli("probe", int8_model, *common, "--runs", 2, "--min-time", 0)
    assert probe.exit_code == 14 and "not ready to probe" in probe.stderr and "Hint: edgeq provision" in probe.stderr

    monkeypatch.setenv("EDGEQ_WHEEL_CACHE", str(TEST_WHEELS))
    fixed = _cli("provision", *common, "--runtime", "tflite-runtime", "--offline")
    assert fixed.exit_code == 0, fixed.output
    again = _cli("doctor", int8_model, *common, "--json")
    assert again.exit_code == 0, again.output
    (row,) = json.loads(again.stdout)["devices"]
    assert row["checkup"]["ok"] and row["checkup"]["facts"]["numpy_with"]["tflite-runtime"].startswith("1.")


def test_a_runtime_too_old_for_the_models_kernels(start_device, device_pythons, digits_classifier, tmp_path):
    """int4 FULLY_CONNECTED weights: tflite-runtime 2.14 fails them at prepare (measured in edgeq.kernels)."""
    w4 = tmp_path / "w4a8.tflite"
    made = _cli("convert", digits_classifier, "--calib", DIGITS / "calib.npz", "--mode", "w4a8", "-o", w4)
    assert made.exit_code == 0, made.output
    device = start_device("old-runtime")
    inventory = _inventory(tmp_path, device, device_pythons["tflite-runtime"])
    common = ["-i", inventory, "--known-hosts", device.known_hosts]
    found = _cli("doctor", w4, *common)
    assert found.exit_code == 14, found.output
    assert "tflite-runtime 2.14.0 has no FULLY_CONNECTED kernel for int4 weights" in found.stdout, found.stdout
    assert "fix: install a runtime that has it (ai-edge-litert >= 1.1.0" in found.stdout
    # the doctor is right: the runtime refuses the model when asked anyway
    forced = _cli("probe", w4, *common, "--runs", 1, "--min-time", 0, "--skip-checks", "--json")
    assert forced.exit_code != 0
    assert json.loads(forced.stdout)["devices"][0]["status"] == "failed"


def test_no_runtime_and_no_numpy(start_device, tmp_path, int8_model):
    device = start_device("bare")  # Debian's /usr/bin/python3: no numpy, no runtime
    result = _cli("doctor", int8_model, *_common(device, tmp_path), "--json")
    assert result.exit_code == 14
    (row,) = json.loads(result.stdout)["devices"]
    checks = {p["check"]: p for p in row["checkup"]["problems"]}
    assert checks["numpy"]["fix"].startswith("sudo apt install python3-numpy")
    assert "no TFLite runtime on the device" in checks["runtime"]["message"]


def test_a_full_disk(start_device, device_pythons, tmp_path, digits_classifier):
    device = start_device("full", disk_bytes=256 * 1024)
    if device.disk_limit != "tmpfs":
        pytest.skip("no tmpfs mounts here: df cannot show the limit")
    inventory = _inventory(tmp_path, device, device_pythons["ai-edge-litert"])
    big = tmp_path / "float.tflite"
    assert _cli("convert", digits_classifier, "--mode", "float32", "-o", big).exit_code == 0
    # 23 KB of model and edgeq's 1 MB margin (manifest, checksum, slack) do not fit in 256 KB
    result = _cli("doctor", big, "-i", inventory, "--known-hosts", device.known_hosts)
    assert result.exit_code == 14, result.output
    assert "MB free where edgeq keeps models; the model needs" in result.stdout
    assert "fix: free space on the device" in result.stdout


def test_a_target_for_another_isa_stops_the_deploy_before_anything_is_sent(start_device, tmp_path, int8_model):
    device = start_device("x86")
    common = _common(device, tmp_path)
    result = _cli("doctor", int8_model, *common, "--target", "rpi4b")
    assert result.exit_code == 14
    assert "target rpi4b is for aarch64, but the device's userland is x86_64" in result.stdout
    assert "fix: use --target x86_64-linux" in result.stdout
    deploy = _cli("deploy", int8_model, *common, "--target", "rpi4b")
    assert deploy.exit_code == 14 and "not ready to deploy" in deploy.output
    assert not list(device.remote_dir.rglob("*.tflite")) and not list(device.remote_dir.rglob("*.part"))
    anyway = _cli("deploy", int8_model, *common, "--target", "rpi4b", "--skip-checks", "--no-health-check")
    assert anyway.exit_code == 0, anyway.output
