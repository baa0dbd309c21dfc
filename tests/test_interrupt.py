"""Randomized interruptions of real deploys: whatever stops a deploy, the device stays consistent and the next one works.

Against a real sshd on loopback, `edgeq deploy` (the command, a process of
its own) is interrupted at a random moment, in one of five ways:

* ``sigkill``: the client process is killed;
* ``sigint``: Ctrl-C to the client;
* ``session``: the device's sshd session process is killed;
* ``reset``: the TCP connection is reset (a RST both ways, through a proxy);
* ``stall``: the connection goes silent (the proxy forwards nothing more), then the client is killed.

The moment is drawn per trial: for the signals, mostly inside the window in
which the device-side script runs (from when it appears on the device to
when a whole deploy ends), sometimes anywhere in the client's life; for the
proxy, after a number of bytes from the client, over the whole stream or
its last 16 kB (the dialogue around the switch). Each trial deploys a new
model (3 MB, ``--keep 2``: uploads, switches and pruning every time).

After each trial: the active model is never torn or missing (`current`
names a version whose file matches its sha256); once the device side has
ended, `manifest.json` names the active version and no temporary file is
left; and the next deploy succeeds within 60 s of the interruption.

The seed is printed; ``EDGEQ_INTERRUPT_SEED`` replays or explores,
``EDGEQ_INTERRUPT_TRIALS`` sets the number of trials (default 50, ten per kind).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _remote import as_device, model_folder, options, write_model
from sshd import CuttingProxy

from edgeq.connection import open_connection
from edgeq.deploy import DeviceStatus, deploy_to_device, prepare_model

pytestmark = pytest.mark.usefixtures("isolated_home")

NAME = "interrupted"
KINDS = ("sigkill", "sigint", "session", "reset", "stall")
MODEL_BYTES = 3_000_000
DEFAULT_SEED = 20269
# short limits, passed as a user would: the device gives up on a silent edgeq after 3 x --connect-timeout
TIMEOUTS = ["--connect-timeout", "1", "--command-timeout", "5", "--transfer-timeout", "10"]


def _ours(device, part: str) -> list[int]:
    return [pid for pid, cmd in device.processes() if part in cmd]


def _device_side_running(device) -> bool:
    return bool(_ours(device, "/scripts/deploy-") or _ours(device, "/scripts/wrapper-"))


def _active(device) -> tuple[str | None, bool]:
    """(the version `current` names, whether its file matches its sha256 and its .sha256 file)."""
    folder = model_folder(device, NAME)
    try:
        version = os.readlink(folder / "current")
    except FileNotFoundError:
        return None, False
    model = folder / version / "model.tflite"
    try:
        digest = hashlib.sha256(model.read_bytes()).hexdigest()
        recorded = (folder / version / "model.tflite.sha256").read_text().strip()
    except FileNotFoundError:
        return version, False
    return version, digest.startswith(version) and digest == recorded


def _leftovers(device) -> list[str]:
    folder = model_folder(device, NAME)
    names = [p.name for p in folder.glob(".*") if p.name not in (".incoming", ".lock")]
    names += [p.name for p in (folder / ".incoming").glob("*")]
    names += [p.name for p in folder.iterdir() if len(p.name) == 12 and not (p / "model.tflite").exists()]
    return names


class Rig:
    """One device, the client's command line, and the moments a deploy goes through (calibrated)."""

    def __init__(self, device, tmp_path: Path):
        self.device = device
        self.tmp = tmp_path
        self.key_config = tmp_path / "ssh_config"
        self.key_config.write_text(f"Host *\n  IdentityFile {device.key_path}\n")
        self.known = tmp_path / "known_hosts"  # the device's key for any address: the proxies' too
        self.known.write_text("* " + " ".join(device.host_key.public.split()[:2]) + "\n")
        self.count = 0

    def model(self, seed: int):
        self.count += 1
        path = write_model(self.tmp / f"m{self.count}.tflite", MODEL_BYTES, seed)
        return prepare_model(path, NAME)

    def command(self, model, host: str, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "edgeq",
            "deploy",
            model.path,
            "--name",
            NAME,
            "--keep",
            "2",
            "--host",
            f"{self.device.user}@{host}:{port}",
            "--known-hosts",
            str(self.known),
            "--ssh-config",
            str(self.key_config),
            "--retries",
            "0",
            *TIMEOUTS,
        ]

    def start(self, model, host: str | None = None, port: int | None = None) -> subprocess.Popen:
        self.stderr = self.tmp / f"client{self.count}.err"  # a file, not a pipe: nothing can block the client
        with open(self.stderr, "wb") as stderr:
            return subprocess.Popen(
                self.command(model, host or self.device.host, port or self.device.port),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # a signal for the client is not one for pytest
            )

    def deploy_directly(self, model):
        dev = as_device(self.device)
        with open_connection(dev, options(self.device, connect_timeout_s=5)) as conn:
            return deploy_to_device(conn, dev, model, keep=2)

    def wait_for_script(self, client: subprocess.Popen, timeout_s: float = 20.0) -> float | None:
        """When the device-side script appeared (monotonic), or None if the client ended first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _ours(self.device, "/scripts/deploy-"):
                return time.monotonic()
            if client.poll() is not None:
                return None
            time.sleep(0.002)
        return None

    def calibrate(self, rng: random.Random) -> dict:
        """How long a whole client run lasts, how long its script window, how many bytes it sends."""
        lives, windows, sizes = [], [], []
        for _ in range(2):
            started = time.monotonic()
            client = self.start(self.model(rng.randrange(1 << 30)))
            seen = self.wait_for_script(client)
            assert client.wait(60) == 0, self.stderr.read_text()
            lives.append(time.monotonic() - started)
            windows.append(time.monotonic() - (seen or started))
        for _ in range(2):
            proxy = CuttingProxy(self.device.host, self.device.port, cut_after_bytes=1 << 40)
            try:
                client = self.start(self.model(rng.randrange(1 << 30)), proxy.host, proxy.port)
                assert client.wait(60) == 0, self.stderr.read_text()
                sizes.append(proxy.forwarded)
            finally:
                proxy.close()
        return {"life_s": max(lives), "window_s": max(windows), "bytes": min(sizes)}


def test_randomized_interruptions(start_device, tmp_path, capsys):
    seed = int(os.environ.get("EDGEQ_INTERRUPT_SEED", DEFAULT_SEED))
    trials = int(os.environ.get("EDGEQ_INTERRUPT_TRIALS", 50))
    rng = random.Random(seed)
    with capsys.disabled():
        print(f"\n[test_interrupt] seed {seed} ({trials} trials); replay with EDGEQ_INTERRUPT_SEED={seed}")
    device = start_device("interrupted")
    rig = Rig(device, tmp_path)
    first = rig.model(rng.randrange(1 << 30))
    assert rig.deploy_directly(first).status is DeviceStatus.OK
    timing = rig.calibrate(rng)

    kinds = [KINDS[i % len(KINDS)] for i in range(trials)]
    rng.shuffle(kinds)
    outcomes: dict[str, collections.Counter] = {kind: collections.Counter() for kind in KINDS}
    held_s: list[float] = []
    recovered_s: list[float] = []
    failures: list[str] = []
    started_all = time.monotonic()
    for trial, kind in enumerate(kinds):
        before, intact = _active(device)
        assert intact, f"trial {trial}: the active model was already damaged"
        model = rig.model(rng.randrange(1 << 30))
        proxy = None
        what = ""
        try:
            if kind in ("reset", "stall"):
                tail = rng.random() < 0.5
                low = max(timing["bytes"] - 16_384, 0) if tail else 0
                cut = rng.randint(low, int(timing["bytes"] * 1.02))
                proxy = CuttingProxy(device.host, device.port, cut_after_bytes=cut, mode=kind)
                what = f"after {cut} of ~{timing['bytes']} bytes"
                client = rig.start(model, proxy.host, proxy.port)
                if kind == "stall":  # the link goes silent, then the client dies with it
                    deadline = time.monotonic() + 30
                    while not proxy.cut and client.poll() is None and time.monotonic() < deadline:
                        time.sleep(0.005)
                    time.sleep(rng.uniform(0.0, 0.5))
                    client.kill()
                interrupted_at = time.monotonic()
            else:
                client = rig.start(model)
                if rng.random() < 0.25:  # anywhere in the client's life
                    delay = rng.uniform(0, timing["life_s"] * 1.1)
                    time.sleep(delay)
                    what = f"{delay:.3f} s after the client started"
                else:  # inside the device-side script's window
                    seen = rig.wait_for_script(client)
                    delay = rng.uniform(0, timing["window_s"] * 1.2)
                    time.sleep(delay)
                    what = f"{delay:.3f} s after the script appeared" if seen else "after the client ended"
                interrupted_at = time.monotonic()
                if kind == "sigkill":
                    client.send_signal(signal.SIGKILL)
                elif kind == "sigint":
                    client.send_signal(signal.SIGINT)
                else:
                    for pid, cmd in device.processes():
                        if cmd.startswith("sshd:"):
                            os.kill(pid, signal.SIGKILL)
            try:
                code = client.wait(30)
            except subprocess.TimeoutExpired:
                client.kill()
                code = client.wait(5)
                failures.append(f"trial {trial} ({kind}, {what}): the client did not end within 30 s")
            # at every moment: an active model, intact
            version, intact = _active(device)
            if not intact or version not in (before, model.version):
                failures.append(f"trial {trial} ({kind}, {what}): active {version} intact={intact}")
            # the device side ends by itself (its guard gives up on a silent edgeq) ...
            deadline = time.monotonic() + 60
            while _device_side_running(device) and time.monotonic() < deadline:
                time.sleep(0.02)
            held_s.append(time.monotonic() - interrupted_at)
            if _device_side_running(device):
                failures.append(f"trial {trial} ({kind}, {what}): the device side still runs after 60 s")
            # ... leaving manifest.json in step with `current`, and nothing temporary behind
            version, intact = _active(device)
            manifest = json.loads((model_folder(device, NAME) / "manifest.json").read_text())
            if manifest.get("current") != version or not intact:
                failures.append(
                    f"trial {trial} ({kind}, {what}): current {version}, manifest.json {manifest.get('current')}"
                )
            if _leftovers(device):
                failures.append(f"trial {trial} ({kind}, {what}): left behind {_leftovers(device)}")
            outcomes[kind]["switched" if version == model.version else "kept the previous"] += 1
            outcomes[kind][f"exit {code}"] += 1
            if os.environ.get("EDGEQ_INTERRUPT_VERBOSE") and code not in (0, 7, 130, -2, -9):
                with capsys.disabled():
                    print(f"[test_interrupt] trial {trial} ({kind}, {what}): exit {code}: {rig.stderr.read_text()}")
            # the next deploy (as edgeq's retry would) succeeds, and records what it finds
            result = rig.deploy_directly(model)
            recovered_s.append(time.monotonic() - interrupted_at)
            if result.status not in (DeviceStatus.OK, DeviceStatus.UNCHANGED) or recovered_s[-1] > 60:
                failures.append(f"trial {trial} ({kind}, {what}): next deploy {result.status} {result.reason}")
            version, intact = _active(device)
            manifest = json.loads((model_folder(device, NAME) / "manifest.json").read_text())
            if (version, manifest.get("current"), intact) != (model.version, model.version, True):
                failures.append(f"trial {trial} ({kind}, {what}): after the next deploy {version} {manifest}")
        finally:
            if proxy is not None:
                proxy.close()
    with capsys.disabled():
        print(
            f"[test_interrupt] {trials} trials in {time.monotonic() - started_all:.0f} s; calibration: client "
            f"{timing['life_s']:.2f} s, script window {timing['window_s']:.2f} s, {timing['bytes']} bytes"
        )
        for kind in KINDS:
            print(f"[test_interrupt]   {kind:8} {dict(sorted(outcomes[kind].items()))}")
        print(
            f"[test_interrupt] device side ended at most {max(held_s):.1f} s after the interruption; "
            f"next deploy done at most {max(recovered_s):.1f} s after it"
        )
    assert not failures, "\n".join(failures)
