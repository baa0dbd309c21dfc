"""``edgeq probe`` and ``edgeq bench`` through the real paths: the host target, real sshd devices, real interpreters.

Two device Pythons are used, as the issue asks: the main venv (ai-edge-litert,
numpy 2) and ``.venv-tflite-runtime`` (tflite-runtime 2.14, numpy 1.x, like a
Raspberry Pi image). The sshd devices are unix users of their own; when they
cannot run the venvs' interpreters (a venv's ``python`` is a link into a
folder only root may enter, e.g. pyenv under /root), the ``device_pythons``
fixture gives them a venv on the system's Python of the same version that
loads the same site-packages: the same numpy, runtime and versions.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from _models import *  # noqa: F403 - session fixtures (digits_classifier, int8_model)
from _models import DIGITS
from click.testing import CliRunner

from edgeq.bench import DeviceBench, ModelRun, pool, summarize_fleet
from edgeq.cli import cli
from edgeq.deploy import ModelFile
from edgeq.probe import LatencyStats, ProbeResult, Thermal, summarize_latencies
from edgeq.stats import Speedup, speedup, verdict

pytestmark = pytest.mark.usefixtures("isolated_home")

ROOT = Path(__file__).resolve().parent.parent
VENVS = {"ai-edge-litert": ROOT / ".venv", "tflite-runtime": ROOT / ".venv-tflite-runtime"}
MODULES = {"ai-edge-litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime", "tensorflow": "tensorflow"}
CALIB, EVAL = DIGITS / "calib.npz", DIGITS / "eval.npz"
FAST = ("--runs", 5, "--min-time", 0.05, "--warmup-runs", 1, "--warmup-time", 0)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- helpers and fixtures


def edgeq(*args):
    """Run the CLI in-process; a traceback in its output is always a failure."""
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output, result.output
    return result


def _runs_for_others(python: Path, module: str) -> bool:
    """Can a user other than root run ``python`` and import numpy and ``module`` with it?"""
    try:
        done = subprocess.run(
            [str(python), "-c", f"import numpy, {module}"], user="nobody", cwd="/", capture_output=True, timeout=120
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _device_venv(venv: Path, module: str, folder: Path) -> Path:
    """``venv``'s Python for the device users: itself when they can run it, else a venv on the system Python loading its site-packages."""
    python = venv / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{venv} is missing (scripts/bootstrap.sh creates it)")
    if _runs_for_others(python, module):
        return python
    site = next((venv / "lib").glob("python3.*/site-packages"))
    version = site.parent.name  # python3.11
    base = next((p for p in (f"/usr/bin/{version}", f"/usr/local/bin/{version}") if os.path.exists(p)), None)
    if base is None:
        pytest.skip(f"device users cannot run {python}, and there is no system {version} to give them")
    mirror = folder / venv.name.lstrip(".")
    subprocess.run([base, "-m", "venv", "--without-pip", str(mirror)], check=True, capture_output=True)
    (mirror / "lib" / version / "site-packages" / "edgeq_device.pth").write_text(
        f"import site; site.addsitedir({str(site)!r})\n"
    )
    if not _runs_for_others(mirror / "bin" / "python", module):
        pytest.skip(f"device users cannot run {python} nor a system-Python venv over its site-packages")
    return mirror / "bin" / "python"


@pytest.fixture(scope="session")
def device_pythons(sshd_factory) -> dict[str, Path]:
    """{"ai-edge-litert": python, "tflite-runtime": python} that the sshd devices' users can run."""
    folder = Path(tempfile.mkdtemp(prefix="edgeq-device-pythons-"))
    folder.chmod(0o755)
    try:
        yield {runtime: _device_venv(venv, MODULES[runtime], folder) for runtime, venv in VENVS.items()}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def ssh_host(device, python) -> dict:
    return {
        "ansible_host": device.host,
        "ansible_port": device.port,
        "ansible_user": device.user,
        "ansible_ssh_private_key_file": str(device.key_path),
        "edgeq_python": str(python),
    }


def write_inventory(path: Path, hosts: dict[str, dict]) -> Path:
    path.write_text(json.dumps({"all": {"hosts": hosts}}, indent=2))  # JSON is YAML
    return path


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def no_process_left(device, pattern: str, wait_s: float = 5.0) -> bool:
    """True once no process of the device's user matches ``pattern`` (pgrep -u USER -f PATTERN)."""
    deadline = time.monotonic() + wait_s
    while True:
        if subprocess.run(["pgrep", "-u", device.user, "-f", pattern], capture_output=True).returncode == 1:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def installed_version(runtime: str) -> str:
    """The version of ``runtime`` installed in its venv (read from the venv, not from this process)."""
    site = next((VENVS[runtime] / "lib").glob("python3.*/site-packages"))
    (dist,) = metadata.distributions(path=[str(site)], name=runtime)
    return dist.version


def only_device(result) -> dict:
    (row,) = json.loads(result.stdout)["devices"]
    return row


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def assert_latency_consistent(lat: dict, latencies: list[float], at_least: int):
    assert lat["count"] == len(latencies) >= at_least
    assert lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert lat["min_ms"] == min(latencies) and lat["max_ms"] == max(latencies)
    assert lat["p50_ms"] == pytest.approx(float(np.median(latencies)), rel=1e-9)


# --------------------------------------------------------------------------- edgeq probe


def test_probe_on_the_host_target(int8_model, isolated_home, tmp_path, monkeypatch):
    from edgeq.targets import load_target

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # what the command leaves in the temporary folder
    result = edgeq("probe", int8_model, "--target", "host", *FAST, "--samples", CALIB, "--parity-samples", 8, "--json")
    assert result.exit_code == 0, result.output
    row = only_device(result)
    assert (row["device"], row["status"], row["reason"]) == ("host", "ok", None)
    probe = row["result"]
    assert probe["runtime"] == "ai-edge-litert" and probe["runtime_version"] == metadata.version("ai-edge-litert")
    assert probe["numpy"] == np.__version__ and probe["input_source"] == "random"
    assert_latency_consistent(probe["latency"], probe["latencies_ms"], at_least=5)
    assert probe["threads"] == load_target("host").default_threads
    assert probe["load_ms"] > 0 and probe["first_inference_ms"] > 0 and probe["peak_rss_mb"] > 10
    # the LocalConnection works in $HOME, under the host target's remote_dir
    folder = isolated_home / ".cache" / "edgeq" / "host" / "models" / "probe-digits_int8"
    version = os.readlink(folder / "current")
    assert (folder / version / "model.tflite").read_bytes() == int8_model.read_bytes()
    assert probe["model"].endswith(f"models/probe-digits_int8/{version}/model.tflite")
    assert list((isolated_home / ".cache" / "edgeq" / "host" / "probe").glob("edgeq_probe_*.py"))
    # 8 real samples through the same runtime as the host's interpreter: bit-exact
    parity = row["parity"]
    assert parity["bit_exact"] is True and parity["outputs"]["output_0"] == {"mismatched": 0.0, "max_abs_diff": 0.0}
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("runtime, numpy_major", [("ai-edge-litert", "2"), ("tflite-runtime", "1")])
def test_probe_through_sshd(int8_model, start_device, device_pythons, known_hosts_for, tmp_path, runtime, numpy_major):
    device = start_device({"ai-edge-litert": "litert", "tflite-runtime": "tflite"}[runtime])
    inventory = write_inventory(tmp_path / "fleet.yml", {device.name: ssh_host(device, device_pythons[runtime])})
    result = edgeq(
        "probe",
        int8_model,
        "-i",
        inventory,
        "--known-hosts",
        known_hosts_for(device),
        "--retries",
        0,
        *FAST,
        "--threads",
        1,
        "--samples",
        CALIB,
        "--json",
    )
    assert result.exit_code == 0, result.output
    row = only_device(result)
    assert row["status"] == "ok"
    probe = row["result"]
    assert (probe["runtime"], probe["runtime_version"]) == (runtime, installed_version(runtime))
    assert probe["numpy"].split(".")[0] == numpy_major and probe["threads"] == 1
    assert_latency_consistent(probe["latency"], probe["latencies_ms"], at_least=5)
    # the model and the probe program are on the device's own disk, owned by its user
    folder = device.home / "edgeq" / "models" / "probe-digits_int8"
    assert (folder / os.readlink(folder / "current") / "model.tflite").stat().st_uid == device.uid
    assert len(list((device.home / "edgeq" / "probe").glob("edgeq_probe_*.py"))) == 1
    # against the host's interpreter (ai-edge-litert 2.3): bit-exact with ai-edge-litert, as expected, and, as
    # measured, with tflite-runtime 2.14 too (this model's 200 calibration samples, 1 and 2 threads: no value differs)
    assert row["parity"] == {"bit_exact": True, "outputs": {"output_0": {"mismatched": 0.0, "max_abs_diff": 0.0}}}


def test_a_hanging_probe_is_stopped_at_its_timeout(int8_model, start_device, known_hosts_for, tmp_path):
    device = start_device("hang")
    hang = write_script(device.home / "hang-python", "#!/bin/sh\nexec sleep 1000\n")
    inventory = write_inventory(tmp_path / "fleet.yml", {device.name: ssh_host(device, hang)})
    started = time.monotonic()
    # --command-timeout keeps its default (60 s): the probe's own timeout is what counts for the probe
    result = edgeq(
        "probe",
        int8_model,
        "-i",
        inventory,
        "--known-hosts",
        known_hosts_for(device),
        "--retries",
        0,
        *FAST,
        "--probe-timeout",
        3,
        "--skip-checks",  # the checks would run the hanging Python under --command-timeout (60 s)
        "--json",
    )
    elapsed = time.monotonic() - started
    assert 3 <= elapsed < 30
    assert result.exit_code == 10  # the one device's own code: a remote command (that overran its time)
    row = only_device(result)
    assert row["status"] == "failed" and row["result"] is None
    assert (row["code"], row["kind"]) == (10, "command-timeout")
    assert "did not finish within 3 s" in row["reason"] and "stopped on the device" in row["reason"]
    assert (
        "Error: hang: failed: " in result.stderr and "--probe-timeout" in result.stderr
    )  # the hint names the option that helps
    assert no_process_left(device, "sleep 1000"), device.processes()


def test_a_crashing_probe_is_reported_without_its_traceback(
    int8_model, start_device, device_pythons, known_hosts_for, tmp_path
):
    device = start_device("crash")
    crash = write_script(
        device.home / "crash-python",
        f"#!{device_pythons['ai-edge-litert']}\nimport sys\nprint('starting', flush=True)\n"
        "raise ImportError('numpy.core.multiarray failed to import')\n",
    )
    inventory = write_inventory(tmp_path / "fleet.yml", {device.name: ssh_host(device, crash)})
    result = edgeq(
        "probe",
        int8_model,
        "-i",
        inventory,
        "--known-hosts",
        known_hosts_for(device),
        "--retries",
        0,
        *FAST,
        "--skip-checks",  # the probe's own report of the crash is under test (edgeq doctor would stop first)
        "--json",
    )
    assert result.exit_code == 10
    row = only_device(result)
    assert (row["status"], row["code"], row["kind"]) == ("failed", 10, "remote-command")
    assert row["reason"] == "the probe did not run (ImportError: numpy.core.multiarray failed to import)"
    assert f"Hint: check that `{crash}` with numpy and a TFLite runtime works" in result.stderr
    assert "Traceback" not in result.output


GARBAGE = """#!/bin/sh
echo "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
echo "@@EDGEQ-PROBE-END@@"
printf '@@EDGEQ-PROBE-BEGIN@@\\n{"ok": false, "error": "a fake result before the real one"}\\n@@EDGEQ-PROBE-END@@\\n'
head -c 2000000 /dev/zero | tr '\\000' g
head -c 2000000 /dev/zero | tr '\\000' e >&2
echo
"{python}" "$@"
status=$?
echo "$status" >> "$0.ran"
echo "garbage after the result"
echo "@@EDGEQ-PROBE-BEGIN@@ a stray marker"
head -c 2000000 /dev/zero | tr '\\000' h
head -c 2000000 /dev/zero | tr '\\000' f >&2
exit $status
"""


@pytest.mark.parametrize("transport", ["ssh", "local"])
def test_garbage_on_the_device_output_does_not_break_parsing(
    int8_model, start_device, device_pythons, known_hosts_for, tmp_path, transport
):
    if transport == "ssh":
        device = start_device("noisy")
        wrapper = write_script(
            device.home / "noisy-python", GARBAGE.replace("{python}", str(device_pythons["ai-edge-litert"]))
        )
        hosts = {device.name: ssh_host(device, wrapper)}
        extra = ["--known-hosts", known_hosts_for(device), "--retries", 0]
    else:
        wrapper = write_script(tmp_path / "noisy-python", GARBAGE.replace("{python}", sys.executable))
        hosts = {"laptop": {"ansible_connection": "local", "edgeq_target": "host", "edgeq_python": str(wrapper)}}
        extra = []
    inventory = write_inventory(tmp_path / "fleet.yml", hosts)
    started = time.monotonic()
    result = edgeq(
        "probe",
        int8_model,
        "-i",
        inventory,
        *extra,
        *FAST,
        "--samples",
        CALIB,
        "--probe-timeout",
        60,
        "--skip-checks",  # the noise is for the probe's parser; the facts script's output is another test's
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 60
    row = only_device(result)
    assert row["status"] == "ok" and row["result"]["runtime"] == "ai-edge-litert"
    assert_latency_consistent(row["result"]["latency"], row["result"]["latencies_ms"], at_least=5)
    assert row["parity"]["bit_exact"] is True  # the outputs came through the noise intact
    assert Path(f"{wrapper}.ran").read_text() == "0\n0\n"  # the wrapper ran the timed probe and the parity run


# --------------------------------------------------------------------------- edgeq bench on the host target


@pytest.fixture(scope="module")
def host_bench(digits_classifier, tmp_path_factory):
    """One ``edgeq bench --target host --sweep`` run, read by the tests below (read-only)."""
    base = tmp_path_factory.mktemp("host-bench")
    home, out = base / "home", base / "out"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        started = time.monotonic()
        result = edgeq(
            "bench",
            digits_classifier,
            "--calib",
            CALIB,
            "--eval",
            EVAL,
            "--target",
            "host",
            "-o",
            out,
            *FAST,
            "--rounds",
            2,
            "--sweep",
        )
        seconds = time.monotonic() - started
    data = json.loads((out / "digits_bench.json").read_text()) if (out / "digits_bench.json").exists() else None
    return {"result": result, "out": out, "home": home, "data": data, "seconds": seconds}


def test_bench_on_the_host_writes_every_report(host_bench):
    result, out = host_bench["result"], host_bench["out"]
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {
        "digits_bench.json",
        "digits_bench.csv",
        "digits_bench.md",
        "digits_bench.png",
        "digits_float32.tflite",
        "digits_int8.tflite",
    } <= names
    assert "reports: " in result.stdout and str(out / "digits_bench.png") in result.stdout


def test_bench_json_speedup_verdict_parity_and_sizes(host_bench):
    data, out = host_bench["data"], host_bench["out"]
    (dev,) = data["devices"]
    assert (dev["device"], dev["status"], dev["target"]) == ("host", "ok", "host")
    f32, i8 = dev["float32"], dev["int8"]
    for run in (f32, i8):
        assert run["runtime"] == "ai-edge-litert" and run["rounds"] == 2
        assert_latency_consistent(run["latency"], run["latencies_ms"], at_least=2 * 5)
    s = Speedup(**dev["speedup"])
    assert s.ci_low <= s.ratio <= s.ci_high and s.confidence == 0.95
    assert s.ratio == pytest.approx(f32["latency"]["p50_ms"] / i8["latency"]["p50_ms"], rel=1e-9)
    assert s == speedup(f32["latencies_ms"], i8["latencies_ms"])  # the interval is the one of the pooled latencies
    assert dev["verdict"] == verdict(s)
    if s.ci_low > 1:
        assert (
            dev["verdict"].startswith("int8 is ")
            and "faster than float32" in dev["verdict"]
            and "NOT" not in dev["verdict"]
        )
    else:
        assert "int8 is NOT" in dev["verdict"]
    assert dev["parity"]["bit_exact"] is True
    for label, run in (("float32", f32), ("int8", i8)):
        size = (out / f"digits_{label}.tflite").stat().st_size
        assert data[f"{'float' if label == 'float32' else 'int8'}_size_bytes"] == size == run["size_bytes"]
    assert data["int8_size_bytes"] < data["float_size_bytes"]
    acc = data["conversion"]["accuracy"]
    assert acc["samples"] == len(np.load(EVAL)["y"]) and 0.5 < acc["quantized_accuracy"] <= 1
    assert data["fleet"]["devices"] == data["fleet"]["measured"] == 1


def test_bench_csv_markdown_and_figure(host_bench):
    data, out = host_bench["data"], host_bench["out"]
    (dev,) = data["devices"]
    rows = read_csv(out / "digits_bench.csv")
    assert [(r["device"], r["model"], r["status"]) for r in rows] == [("host", "float32", "ok"), ("host", "int8", "ok")]
    for row in rows:
        run = dev[row["model"]]
        assert float(row["p50_ms"]) == pytest.approx(run["latency"]["p50_ms"], abs=5e-5)
        assert int(row["runs"]) == run["latency"]["count"] and int(row["size_bytes"]) == run["size_bytes"]
        assert row["verdict"] == dev["verdict"] and row["parity_bit_exact"] == "True"
    markdown = (out / "digits_bench.md").read_text()
    assert dev["verdict"] in markdown and "![latency and speedup](digits_bench.png)" in markdown
    png = out / "digits_bench.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    from PIL import Image

    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 500 and image.size[1] > 100


def test_bench_alternates_the_models(host_bench):
    result = host_bench["result"]
    rounds = [line.split("round ", 1)[1] for line in result.stderr.splitlines() if ": round " in line]
    assert rounds == ["1/2, float32", "1/2, int8", "2/2, float32", "2/2, int8"]
    (dev,) = host_bench["data"]["devices"]
    assert dev["float32"]["rounds"] == dev["int8"]["rounds"] == 2


def test_bench_sweep_covers_runtimes_and_threads_and_recommends_the_fastest(host_bench):
    (dev,) = host_bench["data"]["devices"]
    installed = {name for name, module in MODULES.items() if importlib.util.find_spec(module)}
    points = dev["sweep"]
    assert {p["runtime"] for p in points} == installed
    cores = os.cpu_count()
    for label in ("float32", "int8"):
        for runtime in installed:
            threads = sorted(p["threads"] for p in points if p["label"] == label and p["runtime"] == runtime)
            assert threads == list(range(1, cores + 1)), (label, runtime)
        fastest = min((p for p in points if p["label"] == label), key=lambda p: p["p50_ms"])
        assert dev["recommended"][label] == fastest
    assert "fastest runtime" in (host_bench["out"] / "digits_bench.md").read_text()


def test_a_hanging_sweep_probe_is_stopped_at_the_probe_timeout(digits_classifier, tmp_path):
    # the timed rounds run; the sweep (which forces each runtime) hangs: --probe-timeout bounds the sweep's probes too
    token = f"sleep 1000.{os.getpid()}"
    wrapper = write_script(
        tmp_path / "sweep-hangs",
        f'#!/bin/sh\ncase " $* " in *" --runtime "*) exec {token};; esac\nexec "{sys.executable}" "$@"\n',
    )
    inventory = write_inventory(
        tmp_path / "fleet.yml",
        {"laptop": {"ansible_connection": "local", "edgeq_target": "host", "edgeq_python": str(wrapper)}},
    )
    out = tmp_path / "out"
    started = time.monotonic()
    result = edgeq(
        "bench",
        digits_classifier,
        "--calib",
        CALIB,
        "-i",
        inventory,
        "-o",
        out,
        *FAST,
        "--rounds",
        1,
        "--sweep",
        "--probe-timeout",
        3,
    )
    assert time.monotonic() - started < 90
    assert result.exit_code == 10, result.output
    (dev,) = json.loads((out / "digits_bench.json").read_text())["devices"]
    assert (
        dev["status"] == "failed"
        and dev["reason"] == "the probe did not finish within 3 s; it was stopped on the device"
    )
    assert "laptop: sweep ai-edge-litert, 1 thread(s), float32" in result.stderr
    assert subprocess.run(["pgrep", "-f", token], capture_output=True).returncode == 1


# --------------------------------------------------------------------------- edgeq bench on a fleet over sshd


def test_bench_on_a_fleet_of_two_runtimes(digits_classifier, start_device, device_pythons, known_hosts_for, tmp_path):
    devices = {"litert": start_device("litert"), "tflite": start_device("tflite")}
    inventory = write_inventory(
        tmp_path / "fleet.yml",
        {
            "litert": ssh_host(devices["litert"], device_pythons["ai-edge-litert"]),
            "tflite": ssh_host(devices["tflite"], device_pythons["tflite-runtime"]),
        },
    )
    out = tmp_path / "out"
    known = known_hosts_for(*devices.values())
    result = edgeq(
        "bench",
        digits_classifier,
        "--calib",
        CALIB,
        "--eval",
        EVAL,
        "-i",
        inventory,
        "--known-hosts",
        known,
        "--retries",
        0,
        "-o",
        out,
        *FAST,
        "--threads",
        1,
        "--json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data == json.loads((out / "digits_bench.json").read_text())
    by_name = {d["device"]: d for d in data["devices"]}
    assert set(by_name) == {"litert", "tflite"} and all(d["status"] == "ok" for d in by_name.values())
    assert (
        by_name["litert"]["int8"]["runtime"] == "ai-edge-litert"
        and by_name["tflite"]["int8"]["runtime"] == "tflite-runtime"
    )
    assert (
        by_name["litert"]["parity"]["bit_exact"] is True and by_name["tflite"]["parity"]["bit_exact"] is True
    )  # see test_probe_through_sshd
    for d in by_name.values():
        assert d["float32"]["rounds"] == d["int8"]["rounds"] == 2 and d["int8"]["threads"] == 1
        s = Speedup(**d["speedup"])
        assert s.ci_low <= s.ratio <= s.ci_high and d["verdict"] == verdict(s)
    fleet = data["fleet"]
    ratios = sorted(d["speedup"]["ratio"] for d in by_name.values())
    assert (fleet["devices"], fleet["measured"]) == (2, 2)
    assert (fleet["speedup_min"], fleet["speedup_median"], fleet["speedup_max"]) == (
        ratios[0],
        statistics.median(ratios),
        ratios[1],
    )
    assert fleet["outliers"] == []  # two devices are too few to call one an outlier
    rows = read_csv(out / "digits_bench.csv")
    assert sorted((r["device"], r["model"]) for r in rows) == [
        ("litert", "float32"),
        ("litert", "int8"),
        ("tflite", "float32"),
        ("tflite", "int8"),
    ]
    assert "Fleet: 2 of 2 devices measured" in (out / "digits_bench.md").read_text()
    for d in devices.values():  # both models were deployed through the deployer, on each device's own disk
        assert sorted(p.name for p in (d.home / "edgeq" / "models").iterdir()) == [
            "bench-digits-float32",
            "bench-digits-int8",
        ]


def test_bench_with_a_device_down(
    digits_classifier, start_device, device_pythons, known_hosts_for, down_address, tmp_path
):
    device = start_device("up")
    host, port = down_address
    inventory = write_inventory(
        tmp_path / "fleet.yml",
        {
            "up": ssh_host(device, device_pythons["ai-edge-litert"]),
            "gone": {
                "ansible_host": host,
                "ansible_port": port,
                "ansible_user": "pi",
                "ansible_ssh_private_key_file": str(device.key_path),
            },
        },
    )
    out = tmp_path / "out"
    result = edgeq(
        "bench",
        digits_classifier,
        "--calib",
        CALIB,
        "-i",
        inventory,
        "--known-hosts",
        known_hosts_for(device),
        "--retries",
        0,
        "-o",
        out,
        *FAST,
        "--rounds",
        1,
    )
    assert result.exit_code == 7, result.output  # the only failure's code
    assert "Error: 1 of 2 devices did not succeed (1 unreachable)" in result.stderr
    data = json.loads((out / "digits_bench.json").read_text())
    up, gone = data["devices"]
    assert (up["device"], up["status"], up["float32"]["rounds"]) == ("up", "ok", 1)
    assert (gone["device"], gone["status"], gone["float32"]) == ("gone", "unreachable", None)
    assert (gone["code"], gone["kind"], up["code"], up["kind"]) == (7, "unreachable", 0, None)
    assert "connection refused" in gone["reason"]
    assert (data["fleet"]["devices"], data["fleet"]["measured"]) == (2, 1)
    rows = read_csv(out / "digits_bench.csv")
    assert [(r["device"], r["model"], r["status"]) for r in rows] == [
        ("up", "float32", "ok"),
        ("up", "int8", "ok"),
        ("gone", "", "unreachable"),
    ]
    assert (
        "gone" in (out / "digits_bench.md").read_text() and (out / "digits_bench.png").read_bytes()[:8] == PNG_SIGNATURE
    )


# --------------------------------------------------------------------------- the library, without the CLI


def test_run_bench_from_the_library_over_sshd_with_a_device_down(
    digits_classifier, start_device, device_pythons, known_hosts_for, down_address, tmp_path, isolated_home
):
    """``convert_for_bench`` and ``run_bench`` called directly: real conversion, real sshd, real probes."""
    from _remote import as_device, options

    from edgeq.bench import BenchOptions, common_target, convert_for_bench, run_bench
    from edgeq.connection import open_connection
    from edgeq.devices import Device
    from edgeq.fleet import DeviceStatus, FleetOptions
    from edgeq.probe import ProbeOptions

    sshd = start_device("lib")
    host, port = down_address
    devices = [
        as_device(sshd, python=str(device_pythons["ai-edge-litert"])),
        Device(name="gone", address=host, port=port, user="pi", key_files=(str(sshd.key_path),)),
    ]
    assert (
        common_target(devices) is None
        and common_target([dataclasses.replace(d, target="host") for d in devices]) == "host"
    )
    out = tmp_path / "out"
    steps: list[str] = []
    models = convert_for_bench(digits_classifier, CALIB, out, eval_data=EVAL, say=steps.append)
    assert steps[0] == "converting to float32" and "converting to int8" in steps
    assert models.source == str(digits_classifier) and models.parity is not None
    for label, model in models.by_label().items():
        assert model.path == str(out / f"digits_{label}.tflite") and model.name == f"bench-digits-{label}"
        assert (out / f"digits_{label}.json").exists() and (out / f"digits_{label}.recipe.json").exists()
    timing = ProbeOptions(runs=5, min_s=0.05, warmup_runs=1, warmup_min_s=0.0, timeout_s=120.0)
    bench_options = BenchOptions.around(timing, rounds=1, threads=1)
    assert bench_options.sweep_probe.timeout_s == 120.0 and bench_options.sweep_probe.runs != timing.runs
    known = known_hosts_for(sshd)
    said: list[str] = []
    report, fleet = run_bench(
        devices,
        models,
        bench_options,
        connect=lambda d: open_connection(d, options(known_hosts=known, command_timeout_s=120.0)),
        fleet_options=FleetOptions(retries=0),
        say=said.append,
    )
    assert [r.status for r in fleet.results] == [DeviceStatus.OK, DeviceStatus.UNREACHABLE]
    up, gone = report.devices
    assert (up.device, up.status, gone.device, gone.status) == ("lib", "ok", "gone", "unreachable")
    assert up.float32 is not None and up.int8 is not None and up.speedup is not None and up.parity is not None
    assert up.float32.rounds == up.int8.rounds == 1 and up.int8.threads == 1 and up.parity.bit_exact
    assert (gone.code, gone.kind, gone.float32) == (7, "unreachable", None)
    assert (report.fleet.devices, report.fleet.measured) == (2, 1)
    assert report.fleet.speedup_median == up.speedup.ratio
    assert (report.float_model, report.int8_model) == (models.float32.path, models.int8.path)
    assert report.int8_size_bytes == (out / "digits_int8.tflite").stat().st_size < report.float_size_bytes
    assert report.conversion["accuracy"]["samples"] == len(np.load(EVAL)["y"])
    assert "lib: round 1/1, int8" in said  # the device's steps, as the CLI shows them
    assert sorted(p.name for p in (sshd.home / "edgeq" / "models").iterdir()) == [
        "bench-digits-float32",
        "bench-digits-int8",
    ]


def test_probe_fleet_from_the_library_on_this_machine(int8_model, tmp_path, isolated_home, monkeypatch):
    from edgeq.bench import parity_samples, probe_fleet, probe_model
    from edgeq.connection import open_connection
    from edgeq.devices import Device
    from edgeq.probe import ProbeOptions

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    laptop = Device(
        name="laptop", address="localhost", user="me", transport="local", remote_dir="edgeq", python=sys.executable
    )
    model = probe_model(int8_model)
    assert model.name == "probe-digits_int8"
    with parity_samples(int8_model, CALIB, 8) as parity:
        assert parity is not None and parity.path.parent.parent == scratch
        fleet = probe_fleet(
            [laptop],
            model,
            ProbeOptions(runs=5, min_s=0.05, warmup_runs=1, warmup_min_s=0.0),
            connect=lambda d: open_connection(d, local_home=isolated_home),
            threads=1,
            parity=parity,
        )
    assert list(scratch.iterdir()) == []  # the samples' folder is gone with the context
    (outcome,) = fleet.results
    assert outcome.ok and outcome.value is not None
    result, checked = outcome.value
    assert result.threads == 1 and result.latency.count >= 5 and result.model.endswith(f"{model.version}/model.tflite")
    assert checked is not None and checked.bit_exact
    with parity_samples(int8_model, None) as nothing:
        assert nothing is None


# --------------------------------------------------------------------------- units


def _run(label: str, p50: float) -> ModelRun:
    latencies = (p50 * 0.98, p50, p50 * 1.02)
    return ModelRun(
        label,
        "a" * 12,
        1000,
        "tflite-runtime",
        "2.14.0",
        4,
        False,
        2,
        summarize_latencies(latencies),
        latencies,
        1.0,
        2.0,
        40.0,
        False,
        None,
    )


def _bench(name: str, ratio: float, float_p50: float = 10.0) -> DeviceBench:
    return DeviceBench(
        device=name,
        target="rpi4b",
        status="ok",
        float32=_run("float32", float_p50),
        int8=_run("int8", float_p50 / ratio),
        speedup=Speedup(ratio, ratio * 0.95, ratio * 1.05, 0.95, 2000),
    )


def test_summarize_fleet_flags_the_outlier():
    benches = [_bench("pi-1", 2.0), _bench("pi-2", 2.1), _bench("pi-3", 1.9), _bench("pi-4", 2.05), _bench("pi-5", 0.6)]
    benches.append(DeviceBench(device="pi-6", target="rpi4b", status="unreachable", reason="connection refused"))
    fleet = summarize_fleet(benches)
    assert (fleet.devices, fleet.measured) == (6, 5)
    assert (fleet.speedup_min, fleet.speedup_median, fleet.speedup_max) == (0.6, 2.0, 2.1)
    assert fleet.outliers == ("pi-5",)
    assert fleet.p50_range_ms["float32"] == (10.0, 10.0)
    assert fleet.p50_range_ms["int8"] == pytest.approx((10.0 / 2.1, 10.0 / 0.6))
    # a device whose latency stands out is flagged too, even with an ordinary speedup
    slow = summarize_fleet([_bench("a", 2.0), _bench("b", 2.0), _bench("c", 2.0), _bench("d", 2.0, float_p50=90.0)])
    assert slow.outliers == ("d",)
    assert summarize_fleet([_bench("a", 2.0), _bench("b", 0.5)]).outliers == ()  # two devices: no outliers


def _result(latencies: tuple[float, ...], load_ms: float, rss: float, hot: bool = False) -> ProbeResult:
    cool = Thermal(50.0, 1500.0, 1500.0, 0)
    return ProbeResult(
        device="pi",
        model="m.tflite",
        runtime="tflite-runtime",
        runtime_version="2.14.0",
        python="3.11.2",
        numpy="1.26.4",
        machine="aarch64",
        cpu_count=4,
        threads=4,
        xnnpack=True,
        delegate_partitions=1,
        input_source="random",
        load_ms=load_ms,
        allocate_ms=0.5,
        first_inference_ms=3.0,
        warmup_runs=5,
        latency=summarize_latencies(latencies),
        latencies_ms=latencies,
        peak_rss_mb=rss,
        thermal_before=cool,
        thermal_after=Thermal(84.0, 1200.0, 1500.0, 0) if hot else cool,
        throttled=hot,
        throttle_reason="CPU at 84 C after the run" if hot else None,
    )


def test_pool_pools_every_round():
    model = ModelFile(path="m.tflite", name="m", sha256="b" * 64, size_bytes=12345)
    results = [
        _result((1.0, 2.0, 3.0), 10.0, 40.0),
        _result((4.0, 5.0), 30.0, 60.0, hot=True),
        _result((6.0,), 20.0, 50.0),
    ]
    run = pool("int8", model, results)
    assert run.rounds == 3 and run.latency.count == 3 + 2 + 1
    assert run.latencies_ms == (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
    assert run.latency == summarize_latencies(run.latencies_ms) and run.latency.p50_ms == 3.5
    assert isinstance(run.latency, LatencyStats)
    assert (run.version, run.size_bytes, run.runtime, run.threads) == ("b" * 12, 12345, "tflite-runtime", 4)
    assert (run.load_ms, run.peak_rss_mb) == (20.0, 60.0)  # median load, worst memory
    assert run.throttled and run.throttle_reason == "CPU at 84 C after the run"


def test_bench_with_a_bad_model_leaves_no_output_folder(tmp_path):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a keras file")
    out = tmp_path / "bench-out"
    result = CliRunner().invoke(
        cli, ["bench", str(bad), "--calib", str(DIGITS / "calib.npz"), "--target", "host", "-o", str(out)]
    )
    assert result.exit_code == 5, result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_the_sweep_skips_a_runtime_by_the_error_s_type_not_its_words():
    from edgeq.bench import _sweep
    from edgeq.errors import NoRuntimeError, RemoteCommandError
    from edgeq.probe import ProbeOptions

    tried = []

    def probe(label, options, threads):
        tried.append(options.runtime)
        if options.runtime == "ai-edge-litert":
            raise NoRuntimeError("pi: the probe failed: (any words)")
        return _result((1.0, 2.0, 3.0), 10.0, 40.0)

    points = _sweep(probe, ProbeOptions(), 2, lambda _m: None, "pi")
    assert tried.count("ai-edge-litert") == 1  # its first probe said it is not installed: the next runtime
    assert len(points) == 2 * 2 * 2  # two runtimes left x 1..2 threads x two models

    def words_only(label, options, threads):
        raise RemoteCommandError("pi: the probe failed: no TFLite runtime could be imported; tried: x")

    with pytest.raises(RemoteCommandError):  # the words alone decide nothing: the failure is the device's
        _sweep(words_only, ProbeOptions(), 2, lambda _m: None, "pi")
