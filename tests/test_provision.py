"""``edgeq provision``: runtimes installed from wheels the host holds, over real sshd, with nothing fetched by the device.

The wheels come from the test wheel cache that scripts/bootstrap.sh fills
(scripts/fetch_device_wheels.py); the tests run ``--offline``, so neither
the host nor the device reaches PyPI during the suite. The emulated
Raspberry Pi OS devices' provisioning is in tests/test_emulated_devices.py.
"""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest
from _models import *  # noqa: F403 - session fixtures (int8_model)
from click.testing import CliRunner

from edgeq.cli import cli
from edgeq.errors import DeviceNotReady
from edgeq.provision import DeviceRuntime, ProvisionError, numpy_serves, platform_tags, resolve_wheels

# the login's home from passwd, not $HOME: isolated_home points $HOME at a temporary folder
TEST_WHEELS = Path(
    os.environ.get("EDGEQ_TEST_WHEELS") or Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "edgeq-tests" / "wheels"
)
pytestmark = pytest.mark.usefixtures("isolated_home")


def _info(arch="aarch64", numpy="1.24.2", libc=("glibc", "2.36"), python="3.11.2", bits=64) -> DeviceRuntime:
    return DeviceRuntime(python, "cpython", arch, bits, libc, numpy, "/home/pi/edgeq/runtime/py311-" + arch, None, 100)


def test_platform_tags_list_every_manylinux_the_glibc_loads():
    tags = platform_tags("aarch64", ("glibc", "2.36"))
    assert tags[0] == "manylinux_2_36_aarch64" and tags[-1] == "manylinux2014_aarch64"
    # tflite-runtime 2.14 is manylinux_2_34, ai-edge-litert 2.3 is manylinux_2_27: both must be listed
    assert {"manylinux_2_34_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64"} <= set(tags)
    assert "manylinux_2_37_aarch64" not in tags
    with pytest.raises(ProvisionError, match="musl"):
        platform_tags("aarch64", ("musl", "1.2"))


def test_a_32_bit_python_on_a_64_bit_kernel_gets_armv7l_wheels():
    assert _info(bits=32).wheel_arch == "armv7l" and _info().wheel_arch == "aarch64"


@pytest.mark.parametrize(
    ("runtime", "numpy", "serves"),
    [
        ("tflite-runtime", "1.24.2", True),  # Raspberry Pi OS bookworm's apt numpy
        ("tflite-runtime", "2.2.6", False),  # built against NumPy 1.x
        ("tflite-runtime", "1.21.5", False),  # older than its requirement
        ("ai-edge-litert", "2.2.6", True),
        ("ai-edge-litert", "1.24.2", True),
        ("ai-edge-litert", None, False),
    ],
)
def test_the_devices_numpy_is_kept_when_the_runtime_can_use_it(runtime, numpy, serves):
    assert numpy_serves(runtime, numpy) is serves


def test_offline_with_an_empty_cache_says_how_to_fill_it(tmp_path):
    with pytest.raises(ProvisionError, match="wheel cache") as info:
        resolve_wheels("tflite-runtime", _info(), offline=True, cache=tmp_path)
    assert info.value.exit_code == DeviceNotReady.exit_code and "without --offline" in (info.value.hint or "")


def _wheels() -> Path:
    if not any(TEST_WHEELS.glob("*/tflite_runtime-2.14.0-*.whl")):
        pytest.skip(f"no test wheel cache at {TEST_WHEELS} (scripts/bootstrap.sh fills it)")
    return TEST_WHEELS


def test_resolution_keeps_apt_numpy_for_tflite_runtime_and_pushes_numpy_1_under_numpy_2():
    cache = _wheels()
    apt = resolve_wheels("tflite-runtime", _info(numpy="1.24.2"), offline=True, cache=cache)
    assert [w.name.split("-")[0] for w in apt.wheels] == ["tflite_runtime"] and not apt.numpy_pushed
    assert apt.numpy == "1.24.2" and apt.version == "2.14.0"
    over_2 = resolve_wheels("tflite-runtime", _info(numpy="2.2.6"), offline=True, cache=cache)
    pushed = {w.name.split("-")[0]: w.name.split("-")[1] for w in over_2.wheels}
    assert over_2.numpy_pushed and pushed["numpy"].startswith("1.") and "tflite_runtime" in pushed
    assert all("aarch64" in w.name or "none-any" in w.name for w in over_2.wheels)


def _cli(*args, env=None):
    result = CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)
    assert "Traceback" not in result.output, result.output
    return result


def test_provision_a_bare_device_then_probe_it(start_device, tmp_path, int8_model, monkeypatch):
    """A device whose Python has no numpy and no runtime: provisioned offline, checked twice, then measured."""
    cache = _wheels()
    monkeypatch.setenv("EDGEQ_WHEEL_CACHE", str(cache))
    device = start_device()
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  IdentityFile {device.key_path}\n")
    common = ["--host", device.spec, "--known-hosts", device.known_hosts, "--ssh-config", config]

    before = _cli("doctor", int8_model, *common)
    assert before.exit_code == DeviceNotReady.exit_code, before.output
    assert "numpy is not installed" in before.stdout and "no TFLite runtime" in before.stdout
    assert "edgeq provision --host" in before.stdout

    first = _cli("provision", *common, "--runtime", "tflite-runtime", "--offline")
    assert first.exit_code == 0, first.output
    assert "installed tflite-runtime 2.14.0" in first.stdout and "checked: it runs a model" in first.stdout
    env = device.remote_dir / "runtime" / "py311-x86_64"
    assert (env / "tflite_runtime").is_dir() and (env / "numpy").is_dir()  # numpy<2 beside it: the device had none
    assert not list((device.remote_dir / "runtime" / "wheels").iterdir())  # the pushed wheels are gone
    manifest = json.loads((env / ".edgeq-runtime.json").read_text())
    marker = env / "tflite_runtime" / "__init__.py"
    stamp = marker.stat().st_mtime_ns

    second = _cli("provision", *common, "--runtime", "tflite-runtime", "--offline", "--json")
    assert second.exit_code == 0, second.output
    (row,) = json.loads(second.stdout)["results"]
    assert row["value"]["changed"] is False and row["value"]["bytes_sent"] == 0
    assert marker.stat().st_mtime_ns == stamp and json.loads((env / ".edgeq-runtime.json").read_text()) == manifest

    after = _cli("doctor", int8_model, *common)
    assert after.exit_code == 0, after.output
    assert "ready" in after.stdout and "tflite-runtime 2.14.0 (edgeq's runtime folder)" in after.stdout

    probed = _cli("probe", int8_model, *common, "--runs", 3, "--min-time", 0, "--warmup-runs", 1, "--json")
    assert probed.exit_code == 0, probed.output
    (result,) = json.loads(probed.stdout)["devices"]
    assert result["result"]["runtime"] == "tflite-runtime" and result["result"]["numpy"].startswith("1.")


def test_a_failed_install_keeps_the_folder_as_it_was(start_device, tmp_path, monkeypatch):
    """A wheel set whose runtime cannot import (tflite-runtime without any numpy): refused, nothing left behind."""
    cache = _wheels()
    only_runtime = tmp_path / "cache" / "cp311-x86_64"
    only_runtime.mkdir(parents=True)
    for wheel in (cache / "cp311-x86_64").glob("tflite_runtime-*.whl"):
        (only_runtime / wheel.name).symlink_to(wheel)
    (only_runtime / "numpy-1.26.4-cp311-cp311-manylinux2014_x86_64.whl").write_bytes(b"not a zip")
    monkeypatch.setenv("EDGEQ_WHEEL_CACHE", str(tmp_path / "cache"))
    device = start_device()
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  IdentityFile {device.key_path}\n")
    result = _cli(
        "provision",
        "--host",
        device.spec,
        "--known-hosts",
        device.known_hosts,
        "--ssh-config",
        config,
        "--runtime",
        "tflite-runtime",
        "--offline",
    )
    assert result.exit_code != 0 and result.stderr.count("Error: ") == 1, result.output
    runtime_dir = device.remote_dir / "runtime"
    leftovers = [p.name for p in runtime_dir.iterdir() if p.name != "wheels"] if runtime_dir.exists() else []
    assert leftovers == []
