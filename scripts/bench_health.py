#!/usr/bin/env python3
"""Benchmark of health-gated deploys and of `edgeq check` on fleets, each against its baseline in the same run.

    sudo .venv/bin/python scripts/bench_health.py [--repeat 7] [--devices 64]

Starts its own real OpenSSH servers on loopback (tests/sshd.py) and stops them at the end. Needs root.

1. The health check's cost per device beyond the deploy itself: `edgeq deploy` of the digits int8
   model (the bundled example's) to one device with `--check-samples` (32 real samples: the model
   loads in the device's runtime, its outputs are compared with this machine's, and a timing
   baseline is taken) against the same deploy without, interleaved; the model's folder is removed
   between runs so every run is a first deploy. Goal: <= 1.5 s more per device.
2. `edgeq check` of N devices at once (`-i inventory --concurrency N`) against N single-device
   `edgeq check --host` one after another. Goal: <= 0.3x.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import sshd  # noqa: E402  (tests/sshd.py: real sshd devices on loopback)

EDGEQ = [str(ROOT / ".venv" / "bin" / "edgeq")]
DIGITS = ROOT / "calibration_data" / "digits"


def device_python(folder: Path) -> Path:
    """A Python with ai-edge-litert that the device users can run (the tests' own recipe: tests/test_bench.py)."""
    from test_bench import VENVS, _device_venv

    return _device_venv(VENVS["ai-edge-litert"], "ai_edge_litert", folder)


class Bench:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix=f"edgeq-sshd-{os.getpid()}-health-"))
        self.base.chmod(0o711)
        client = self.base / "client"
        client.mkdir(mode=0o700)
        self.key = sshd.make_key(client / "id_ed25519", comment="edgeq-bench")
        self.factory = sshd.DeviceFactory(self.base, self.key)
        self.home = self.base / "home"
        (self.home / ".ssh").mkdir(parents=True, mode=0o700)
        (self.home / ".ssh" / "config").write_text(f"Host *\n  IdentityFile {self.key.path}\n")
        self.env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "EDGEQ_SSH_PASSWORD")}
        self.env.update(HOME=str(self.home), COLUMNS="120")
        pythons = self.base / "pythons"
        pythons.mkdir()
        pythons.chmod(0o755)
        self.python = device_python(pythons)

    def close(self) -> None:
        self.factory.stop_all()
        shutil.rmtree(self.base, ignore_errors=True)

    def run(self, argv: list[str], ok: tuple[int, ...] = (0,)) -> float:
        started = time.perf_counter()
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode not in ok:
            raise SystemExit(f"failed ({done.returncode}): {' '.join(argv)}\n{done.stdout}\n{done.stderr}")
        return seconds

    def inventory(self, devices, name: str) -> Path:
        hosts = {
            d.name: {
                "ansible_host": d.host,
                "ansible_port": d.port,
                "ansible_user": d.user,
                "ansible_ssh_private_key_file": str(d.key_path),
                "edgeq_python": str(self.python),
            }
            for d in devices
        }
        path = self.base / f"{name}.yml"
        path.write_text(json.dumps({"all": {"hosts": hosts}}))
        return path

    def known(self, devices) -> Path:
        path = self.base / f"known_hosts.{len(devices)}"
        path.write_text("".join(d.known_hosts_line() + "\n" for d in devices))
        return path


def model(base: Path) -> Path:
    """The bundled example's int8 digits model (scripts/setup.sh builds it), else one converted here."""
    built = ROOT / "build" / "example" / "digits_int8.tflite"
    if built.exists():
        return built
    raise SystemExit("no build/example/digits_int8.tflite: run scripts/setup.sh first")


def health_cost(bench: Bench, repeat: int) -> None:
    device = bench.factory.start_device("health")
    inventory = bench.inventory([device], "one")
    known = bench.known([device])
    path = model(bench.base)
    base = ["deploy", str(path), "--name", "digits", "-i", str(inventory), "--known-hosts", str(known)]
    common = [*base, "--no-health-check"]  # convert keeps samples beside the model: the baseline must not use them
    checked = [*base, "--check-samples", str(DIGITS / "calib.npz")]
    times: dict[str, list[float]] = {"plain": [], "checked": []}
    for i in range(repeat + 1):  # the first round uploads edgeq's device scripts and the probe: not counted
        for label, argv in (("plain", common), ("checked", checked)):
            shutil.rmtree(device.remote_dir / "models", ignore_errors=True)
            seconds = bench.run(EDGEQ + argv)
            if i:
                times[label].append(seconds)
    plain, with_check = statistics.median(times["plain"]), statistics.median(times["checked"])
    print("## 1. The health check's cost per device (digits int8, 32 samples, one device)\n")
    print(f"| run | wall time (median of {repeat}) |")
    print("|---|---:|")
    print(f"| `edgeq deploy` (baseline) | {plain:.2f} s |")
    print(f"| `edgeq deploy --check-samples calib.npz` | {with_check:.2f} s |")
    extra = with_check - plain
    print(
        f"\nThe health check costs **{extra:.2f} s** per device beyond the deploy (goal <= 1.5 s: {'met' if extra <= 1.5 else 'NOT met'}).\n"
    )


def check_fleet(bench: Bench, count: int, repeat: int) -> None:
    devices = [bench.factory.start_device(f"c{i}") for i in range(count)]
    inventory = bench.inventory(devices, "fleet")
    known = bench.known(devices)
    path = model(bench.base)
    bench.run(EDGEQ + ["deploy", str(path), "--name", "digits", "-i", str(inventory), "--known-hosts", str(known)])
    times: dict[str, list[float]] = {"sequential": [], "fleet": []}
    for _ in range(repeat):
        started = time.perf_counter()
        for device in devices:
            one = bench.inventory([device], f"one-{device.name}")
            bench.run(EDGEQ + ["check", "-i", str(one), "--known-hosts", str(known), "--json"])
        times["sequential"].append(time.perf_counter() - started)
        times["fleet"].append(
            bench.run(
                EDGEQ
                + ["check", "-i", str(inventory), "--known-hosts", str(known), "--concurrency", str(count), "--json"]
            )
        )
    seq, fleet = statistics.median(times["sequential"]), statistics.median(times["fleet"])
    print(f"## 2. `edgeq check` on {count} devices (median of {repeat})\n")
    print("| run | wall time | ratio |")
    print("|---|---:|---:|")
    print(f"| {count} x `edgeq check`, one after another (baseline) | {seq:.2f} s | 1.00x |")
    print(f"| one `edgeq check -i inventory --concurrency {count}` | {fleet:.2f} s | {fleet / seq:.2f}x |")
    print(f"\nGoal <= 0.3x: {'met' if fleet / seq <= 0.3 else 'NOT met'} ({fleet / seq:.2f}x).\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--devices", type=int, default=64)
    parser.add_argument("--fleet-repeat", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (it starts sshd's and adds users)")
    sshd.remove_stale_users()
    bench = Bench()
    try:
        health_cost(bench, args.repeat)
        check_fleet(bench, args.devices, args.fleet_repeat)
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
