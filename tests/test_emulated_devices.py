"""edgeq against emulated Raspberry Pi OS devices: arm64 roots under qemu-user, each served by its own sshd.

The devices (``scripts/emulated_devices.py``, ``tests/emulated.py``) are real
Debian bookworm arm64 userlands run by qemu-aarch64 through binfmt_misc:
``rpios64`` (tflite-runtime 2.14 on apt's numpy 1.24, shown as a Raspberry Pi 4)
and ``pi5-litert`` (ai-edge-litert 2.3 on NumPy 2, shown as a Raspberry Pi 5).
Everything goes through the real edgeq CLI and the devices' own OpenSSH.

Emulated code is an order of magnitude or more slower than native code here
(a Python start takes ~0.3 s, importing a runtime ~1.1 s): the latencies printed
here are NOT a Raspberry Pi's, and tiny models and few runs are used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import emulated
import pytest
from _models import *  # noqa: F403 - session fixtures (digits_classifier, int8_model, float_tflite)
from _models import DIGITS
from _remote import active_on_disk, sha256_of, ssh, write_model
from click.testing import CliRunner

from edgeq.cli import cli
from edgeq.errors import DeviceNotReady, NoRuntimeError

pytestmark = pytest.mark.usefixtures("isolated_home")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "emulated_devices.py"
CALIB, EVAL = DIGITS / "calib.npz", DIGITS / "eval.npz"
FAST = ("--runs", 3, "--min-time", 0, "--warmup-runs", 1, "--warmup-time", 0)
SITE = emulated.SITE  # usr/local/lib/python3.11/dist-packages: where pip puts packages on Raspberry Pi OS
TARGETS = {"rpios64": "rpi4b", "pi5-litert": "rpi5", "bare": "rpi4b"}


def edgeq(*args):
    """The CLI in-process; a traceback in its output is always a failure."""
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output, result.output
    return result


def say(text: str) -> None:
    """Figures worth reading in the test log (-s, or the captured output of a failure)."""
    print(f"[emulated] {text}", file=sys.stderr)


@pytest.fixture(scope="module")
def pi4(emulated_devices):
    device = emulated_devices.start("rpios64", "pi4")
    say(f"{device.name}: rpios64 started in {device.start_s:.1f} s on {device.spec}")
    yield device
    emulated_devices.stop(device)


@pytest.fixture(scope="module")
def pi5(emulated_devices):
    device = emulated_devices.start("pi5-litert", "pi5")
    say(f"{device.name}: pi5-litert started in {device.start_s:.1f} s on {device.spec}")
    yield device
    emulated_devices.stop(device)


def fleet_files(folder: Path, *devices) -> tuple[Path, Path]:
    """(inventory, known_hosts) for the devices: each with its board's target, the session's client key."""
    hosts = {
        d.name: {
            "ansible_host": d.host,
            "ansible_port": d.port,
            "ansible_user": d.user,
            "ansible_ssh_private_key_file": str(d.key_path),
            "edgeq_target": TARGETS[d.image],
        }
        for d in devices
    }
    folder.mkdir(parents=True, exist_ok=True)
    inventory = folder / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}, indent=2))  # JSON is YAML
    known = folder / "known_hosts"
    known.write_text("".join(d.known_hosts_line() + "\n" for d in devices))
    return inventory, known


@pytest.fixture(scope="module")
def fleet(pi4, pi5, tmp_path_factory) -> list[str]:
    """The device options of both devices: -i INVENTORY --known-hosts FILE --retries 0."""
    inventory, known = fleet_files(tmp_path_factory.mktemp("fleet"), pi4, pi5)
    return ["-i", str(inventory), "--known-hosts", str(known), "--retries", "0"]


# --------------------------------------------------------------------------- the devices themselves


def test_each_device_is_an_aarch64_raspberry_pi_over_ssh(pi4, pi5):
    for device, numpy_major, part in ((pi4, "1.24.", "0xd08"), (pi5, "2.", "0xd0b")):
        with ssh(device) as conn:
            shown = conn.run(
                "uname -m; nproc; tr -d '\\000' < /sys/firmware/devicetree/base/model; echo;"
                " grep -m1 '^CPU part' /proc/cpuinfo; id -un; echo $HOME; hostname;"
                " python3 -c 'import platform, numpy; print(platform.python_version(), numpy.__version__)'",
                120,
            ).stdout.splitlines()
            timings = []
            for _ in range(5):
                started = time.perf_counter()
                conn.run("true", 30)
                timings.append((time.perf_counter() - started) * 1000)
        assert shown[:3] == ["aarch64", "4", device.board_model]
        assert shown[3].endswith(part) and shown[4:7] == ["pi", "/home/pi", device.name]
        python, numpy_version = shown[7].split()
        assert python == "3.11.2" and numpy_version.startswith(numpy_major)
        say(
            f"{device.name}: one SSH command round trip (`true` on an open connection): "
            f"median {sorted(timings)[2]:.0f} ms (min {min(timings):.0f}, max {max(timings):.0f})"
        )
    # the host sees each device's files; each has its own writable layer
    assert (pi4.root / "etc/debian_version").read_text().startswith("12.")
    assert (pi4.root / SITE / "tflite_runtime").is_dir() and not (pi4.root / SITE / "numpy").exists()
    assert (pi5.root / SITE / "ai_edge_litert").is_dir() and (pi5.root / SITE / "numpy").is_dir()


def test_targets_detect_names_each_board(fleet, pi4, pi5):
    result = edgeq("targets", "detect", *fleet, "--json")
    assert result.exit_code == 0, result.output
    rows = {row["device"]: row for row in json.loads(result.stdout)["results"]}
    expected = {
        pi4.name: ("rpi4b", "Cortex-A72", "tflite-runtime", "2.14.0"),
        pi5.name: ("rpi5", "Cortex-A76", "ai-edge-litert", "2.3.0"),
    }
    for device in (pi4, pi5):
        row = rows[device.name]
        assert (row["status"], row["code"]) == ("ok", 0), row
        value = row["value"]
        facts = value["facts"]
        target, cpu, runtime, version = expected[device.name]
        assert value["best"] == target, value["matches"]
        assert (facts["kernel_arch"], facts["arch"], facts["board"], facts["cpu_model"], facts["cores"]) == (
            "aarch64",
            "aarch64",
            device.board_model,
            cpu,
            4,
        )
        assert facts["os"] == "Debian GNU/Linux 12 (bookworm)" and facts["python_version"] == "3.11.2"
        assert facts["runtimes"][runtime] == version and facts["broken_runtimes"] == {}
        numpy_version = facts["runtimes"]["numpy"]
        assert numpy_version == "1.24.2" if device is pi4 else numpy_version.startswith("2.")
        say(f"{device.name}: detected {value['best']} ({facts['board']}), {runtime} {version}, numpy {numpy_version}")
    assert "asimddp" in rows[pi5.name]["value"]["facts"]["cpu_features"]
    assert "asimddp" not in rows[pi4.name]["value"]["facts"]["cpu_features"]


# --------------------------------------------------------------------------- deploy, status, rollback


def test_deploy_status_rollback(fleet, pi4, pi5, tmp_path):
    first, second = (
        write_model(tmp_path / "m1.tflite", 30_000, seed=1),
        write_model(tmp_path / "m2.tflite", 30_000, seed=2),
    )
    for model in (first, second):
        deployed = edgeq("deploy", model, "--name", "digits", *fleet, "--json")
        assert deployed.exit_code == 0, deployed.output
        assert [r["status"] for r in json.loads(deployed.stdout)["results"]] == ["ok", "ok"]
    v1, v2 = (model_version(p) for p in (first, second))
    assert status_versions(fleet) == {pi4.name: v2, pi5.name: v2}
    rolled = edgeq("rollback", "--name", "digits", *fleet)
    assert rolled.exit_code == 0, rolled.output
    assert status_versions(fleet) == {pi4.name: v1, pi5.name: v1}
    for device in (pi4, pi5):  # read from the device's own disk, through this machine's view of it
        assert active_on_disk(device, "digits") == (v1, sha256_of(first))
        assert (device.remote_dir / "models" / "digits" / v2 / "model.tflite").exists()  # kept, for a roll forward


def model_version(path: Path) -> str:
    return sha256_of(path)[:12]


def status_versions(fleet: list[str]) -> dict[str, str]:
    status = edgeq("status", "--name", "digits", *fleet, "--json")
    assert status.exit_code == 0, status.output
    rows = json.loads(status.stdout)["results"]
    assert all(r["status"] == "ok" for r in rows), rows
    return {r["device"]: r["state"]["current"] for r in rows}


# --------------------------------------------------------------------------- probe, parity, bench

# Parity of each device's runtime (under qemu, as the board's CPU) with the host's interpreter (ai-edge-litert 2.3.0
# on x86-64, XNNPACK), on 8 held-out digits, as measured here: (bit-exact expected, largest difference allowed).
# tflite-runtime 2.14 on the Pi 4 (no XNNPACK for this model) gave the host's int8 values exactly; ai-edge-litert
# 2.3 with XNNPACK on the Pi 5's Cortex-A76 (its dot-product kernels) gave 2 of 80 int8 values 1 step apart.
# Float32 outputs (softmax probabilities) differed in their last bits on both (1-2 ulps: 2.4e-7, 1.2e-7); those
# depend on the trained weights, so only their size is held to.
PARITY = {
    ("int8", "rpios64"): (True, 0.0),
    ("int8", "pi5-litert"): (False, 1.0),
    ("float32", "rpios64"): (None, 1e-6),
    ("float32", "pi5-litert"): (None, 1e-6),
}


@pytest.mark.parametrize("kind", ["int8", "float32"])
def test_probe_with_parity_against_the_host(kind, fleet, pi4, pi5, int8_model, float_tflite):
    model = int8_model if kind == "int8" else float_tflite
    result = edgeq("probe", model, *fleet, *FAST, "--samples", EVAL, "--parity-samples", 8, "--json")
    assert result.exit_code == 0, result.output
    rows = {row["device"]: row for row in json.loads(result.stdout)["devices"]}
    runtimes = {pi4.name: ("tflite-runtime", "2.14.0", "1.24.2"), pi5.name: ("ai-edge-litert", "2.3.0", "2.")}
    for device in (pi4, pi5):
        row = rows[device.name]
        assert row["status"] == "ok", row
        probe, parity = row["result"], row["parity"]
        runtime, version, numpy_version = runtimes[device.name]
        assert (probe["runtime"], probe["runtime_version"], probe["machine"]) == (runtime, version, "aarch64")
        assert probe["numpy"].startswith(numpy_version) and parity is not None
        assert probe["latency"]["count"] >= 3
        worst = max(v["max_abs_diff"] for v in parity["outputs"].values())
        share = max(v["mismatched"] for v in parity["outputs"].values())
        say(
            f"{device.name} {kind}: {runtime} {version}, xnnpack={probe['xnnpack']}, threads {probe['threads']}: "
            f"load {probe['load_ms']:.0f} ms, p50 {probe['latency']['p50_ms']:.2f} ms (emulated); parity: "
            + ("bit-exact with the host" if parity["bit_exact"] else f"{share:.1%} of values differ, max {worst:g}")
        )
        exact, allowed = PARITY[(kind, device.image)]
        assert worst <= allowed and exact in (None, parity["bit_exact"]), parity


def test_bench_on_both_boards(fleet, pi4, pi5, digits_classifier, tmp_path):
    out = tmp_path / "bench"
    result = edgeq("bench", digits_classifier, "--calib", CALIB, *fleet, *FAST, "--rounds", 1, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    by_name = {d["device"]: d for d in data["devices"]}
    assert set(by_name) == {pi4.name, pi5.name} and all(d["status"] == "ok" for d in by_name.values())
    assert by_name[pi4.name]["int8"]["runtime"] == "tflite-runtime"
    assert by_name[pi5.name]["int8"]["runtime"] == "ai-edge-litert"
    for name, d in by_name.items():
        assert d["machine"] == "aarch64" and d["float32"]["rounds"] == d["int8"]["rounds"] == 1
        assert d["speedup"]["ci_low"] <= d["speedup"]["ratio"] <= d["speedup"]["ci_high"]
        say(
            f"{name} bench: float32 p50 {d['float32']['latency']['p50_ms']:.2f} ms, int8 p50 {d['int8']['latency']['p50_ms']:.2f} ms "
            f"(emulated), speedup {d['speedup']['ratio']:.2f}x; {d['verdict']}; parity bit-exact: {d['parity']['bit_exact']}"
        )
    assert (out / "digits_bench.json").exists() and (out / "digits_bench.md").exists()


# --------------------------------------------------------------------------- devices that differ from the images


def test_a_device_without_a_runtime_is_not_ready_and_its_probe_fails_by_kind(emulated_devices, int8_model, tmp_path):
    bare = emulated_devices.start("bare")
    try:
        inventory, known = fleet_files(tmp_path, bare)
        options = ["-i", inventory, "--known-hosts", known, "--retries", 0]
        detected = edgeq("targets", "detect", *options, "--json")
        assert detected.exit_code == 0, detected.output
        facts = json.loads(detected.stdout)["results"][0]["value"]["facts"]
        assert facts["runtimes"] == {"numpy": "1.24.2"} and facts["kernel_arch"] == "aarch64"
        checked = edgeq("probe", int8_model, *options, *FAST, "--json")  # the checks before the probe refuse
        (row,) = json.loads(checked.stdout)["devices"]
        assert (checked.exit_code, row["kind"]) == (DeviceNotReady.exit_code, DeviceNotReady.kind), checked.output
        assert "no TFLite runtime" in row["reason"]
        probed = edgeq("probe", int8_model, *options, *FAST, "--skip-checks", "--json")  # the probe itself fails
        (row,) = json.loads(probed.stdout)["devices"]
        assert (probed.exit_code, row["kind"]) == (NoRuntimeError.exit_code, NoRuntimeError.kind), probed.output
        assert "no TFLite runtime could be imported" in row["reason"]
    finally:
        emulated_devices.stop(bare)


def test_numpy_2_in_usr_local_breaks_tflite_runtime_on_that_device_only(emulated_devices, pi4, tmp_path):
    """pip-installing something that brings NumPy 2 on a Pi 4 with tflite-runtime: detect names the breakage."""
    emulated_devices.ensure_images("pi5-litert")  # NumPy 2 for aarch64 is taken from its layer
    numpy_2 = emulated.CACHE.layer_dir(emulated.IMAGES["pi5-litert"]) / "root" / SITE
    device = emulated_devices.start("rpios64", "pi4-numpy2")
    try:
        for entry in numpy_2.iterdir():
            if entry.name == "numpy" or entry.name.startswith(("numpy-", "numpy.libs")):
                shutil.copytree(entry, device.root / SITE / entry.name, symlinks=True)
        shown = device.run_as_root("python3 -c 'import numpy; print(numpy.__version__)'")
        assert shown.returncode == 0 and shown.stdout.startswith("2."), shown
        inventory, known = fleet_files(tmp_path, device)
        detected = edgeq("targets", "detect", "-i", inventory, "--known-hosts", known, "--retries", 0, "--json")
        assert detected.exit_code == 0, detected.output
        facts = json.loads(detected.stdout)["results"][0]["value"]["facts"]
        assert (
            "tflite-runtime" not in facts["runtimes"] and "numpy" in facts["broken_runtimes"]["tflite-runtime"].lower()
        )
        say(
            f"{device.name} with NumPy {shown.stdout.strip()} in /usr/local: {facts['broken_runtimes']['tflite-runtime']}"
        )
        assert not (pi4.root / SITE / "numpy").exists()  # the other Pi 4's layer did not change
    finally:
        emulated_devices.stop(device)


def test_a_stopped_device_leaves_no_process_nor_mount(emulated_devices):
    device = emulated_devices.start("bare")
    pid, run_dir = device.emulated.pid, device.emulated.run_dir
    namespace = os.readlink(f"/proc/{pid}/ns/pid")
    # a process that outlives its SSH session (OpenSSH's own client: edgeq's sessions end their processes)
    ssh_command = ["ssh", "-i", str(device.key_path), "-o", f"UserKnownHostsFile={device.known_hosts}"]
    ssh_command += ["-o", "BatchMode=yes", "-p", str(device.port), f"{device.user}@{device.host}"]
    started = subprocess.run(
        [*ssh_command, "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo started"], capture_output=True, text=True
    )
    assert started.stdout == "started\n", started
    deadline = time.monotonic() + 10
    while "sleep" not in (inside := device.run_as_root("ps -eo comm=").stdout.split()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "sleep" in inside and "sshd" in inside, inside
    emulated_devices.stop(device)
    left = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/ns/pid") == namespace:
                    left.append(entry)
    assert left == [] and not run_dir.exists()
    assert str(run_dir) not in Path("/proc/self/mountinfo").read_text()


def test_a_second_build_is_quick_and_changes_nothing(emulated_devices):
    emulated_devices.ensure_images("bare", "rpios64", "pi5-litert")
    cache = _cache_path()
    before = _built(cache)
    started = time.monotonic()
    env = {**os.environ, "EDGEQ_DEVICES_CACHE": str(cache)}
    done = subprocess.run([sys.executable, str(SCRIPT), "build"], capture_output=True, text=True, timeout=120, env=env)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    shown = re.fullmatch(
        r"emulated devices: bare, rpios64, pi5-litert: cached in (.+) \(\d+ MB\), nothing to build\n", done.stdout
    )
    assert shown and shown.group(1) == str(cache), done.stdout
    after = _built(cache)
    assert after == before and seconds < 20
    say(f"a cached build: {seconds:.1f} s")


def _built(cache: Path) -> list[tuple[str, int, int]]:
    """The built roots (not the lock, nor running devices): name, inode and mtime of each."""
    return sorted(
        (p.name, p.stat().st_ino, p.stat().st_mtime_ns) for p in cache.iterdir() if p.name not in (".lock", "run")
    )


def _cache_path() -> Path:
    return Path(emulated.CACHE.path)


def test_a_changed_recipe_is_another_build():
    """Builds are named by a stamp of their recipe: a changed recipe is not found built, and is built anew."""
    script, cache = emulated.devices_script, emulated.CACHE
    image = emulated.IMAGES["rpios64"]
    older = dataclasses.replace(image, wheels=("tflite-runtime==2.13.0",))
    assert cache.layer_dir(older) != cache.layer_dir(image) and cache.layer_dir(older).name.startswith("layer-rpios64-")
    changed_base = {**script.BASE_RECIPE, "hostname": "pi"}
    assert script._stamp(changed_base) != cache.base_stamp and cache.base_dir().name == f"base-arm64-{cache.base_stamp}"


def test_provision_turns_a_bare_device_into_one_probe_measures(emulated_devices, int8_model, tmp_path, monkeypatch):
    """Python and numpy from apt only, no pip: provisioned from the host's wheels, twice, then measured."""
    from test_provision import TEST_WHEELS

    if not any(TEST_WHEELS.glob("cp311-aarch64/tflite_runtime-2.14.0-*.whl")):
        pytest.skip(f"no aarch64 wheels in the test wheel cache {TEST_WHEELS} (scripts/bootstrap.sh fills it)")
    monkeypatch.setenv("EDGEQ_WHEEL_CACHE", str(TEST_WHEELS))
    bare = emulated_devices.start("bare", "bare-provision")
    try:
        no_pip = bare.run_as_root("python3 -m pip --version")
        assert no_pip.returncode != 0, no_pip  # the device could not fetch a wheel even if it tried
        inventory, known = fleet_files(tmp_path, bare)
        options = ["-i", inventory, "--known-hosts", known, "--retries", 0]
        before = edgeq("doctor", int8_model, *options)
        assert before.exit_code == DeviceNotReady.exit_code and "no TFLite runtime" in before.stdout, before.output

        started = time.monotonic()
        first = edgeq("provision", *options, "--runtime", "tflite-runtime", "--offline")
        took = time.monotonic() - started
        assert first.exit_code == 0, first.output
        assert "installed tflite-runtime 2.14.0" in first.stdout and "numpy 1.24.2 (the device's own)" in first.stdout
        env = bare.home / "edgeq" / "runtime" / "py311-aarch64"
        assert (env / "tflite_runtime").is_dir() and not (env / "numpy").exists()  # apt's numpy serves
        started = time.monotonic()
        second = edgeq("provision", *options, "--runtime", "tflite-runtime", "--offline")
        again = time.monotonic() - started
        assert second.exit_code == 0 and "unchanged: tflite-runtime 2.14.0 already in" in second.stdout, second.output
        say(f"{bare.name}: provision {took:.1f} s, again (unchanged) {again:.1f} s")

        after = edgeq("doctor", int8_model, *options)
        assert after.exit_code == 0 and "(edgeq's runtime folder)" in after.stdout, after.output
        probed = edgeq("probe", int8_model, *options, *FAST, "--json")
        assert probed.exit_code == 0, probed.output
        (row,) = json.loads(probed.stdout)["devices"]
        result = row["result"]
        assert (result["runtime"], result["machine"], result["numpy"]) == ("tflite-runtime", "aarch64", "1.24.2")
        say(f"{bare.name}: provisioned tflite-runtime, int8 p50 {result['latency']['p50_ms']:.3f} ms (emulated)")
    finally:
        emulated_devices.stop(bare)
