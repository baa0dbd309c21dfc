"""The fleet runner: bounded concurrency, retries by exception type, canaries, typed outcomes, and bugs that stay bugs.

The runner's unit tests use fake connections; the last tests go through the real path
(``edgeq deploy`` against real sshd devices on loopback) with a bug planted in the deployer.
"""

from __future__ import annotations

import threading
import time
import traceback

import pytest
from _remote import as_device, options, write_model
from click.testing import CliRunner

from edgeq import deploy
from edgeq.cli import cli
from edgeq.connection import open_connection
from edgeq.devices import Device
from edgeq.errors import DeviceUnreachableError, NotAttempted, RemoteCommandError
from edgeq.fleet import DeviceStatus, FleetOptions, Outcome, run_fleet


class FakeConnection:
    def __init__(self):
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.closed = True


def devices(count: int, prefix: str = "d") -> list[Device]:
    return [Device(name=f"{prefix}{i}", address=f"10.0.0.{i + 1}", user="u") for i in range(count)]


def fast(**overrides) -> FleetOptions:
    values = dict(concurrency=4, retries=0, backoff_s=0.01)
    values.update(overrides)
    return FleetOptions(**values)


def test_values_come_back_typed_and_in_order():
    fleet = run_fleet(
        devices(5), lambda conn, device, progress: len(device.name) * 10, connect=lambda d: FakeConnection()
    )
    assert [o.value for o in fleet.results] == [20] * 5
    assert [o.device for o in fleet.results] == [f"d{i}" for i in range(5)]
    assert fleet.ok and fleet.failures == () and fleet.counts()["ok"] == 5
    first = fleet.results[0]
    assert (first.status, first.code, first.kind, first.reason, first.attempts) == (DeviceStatus.OK, 0, None, None, 1)
    assert fleet.to_dict()["results"][0] == {
        "device": "d0",
        "destination": "u@10.0.0.1:22",
        "status": "ok",
        "code": 0,
        "kind": None,
        "reason": None,
        "hint": None,
        "attempts": 1,
        "seconds": first.seconds,
        "value": 20,
    }


def test_concurrency_is_bounded():
    running = 0
    peak = 0
    lock = threading.Lock()

    def operation(conn, device, progress):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return device.name

    fleet = run_fleet(devices(11), operation, connect=lambda d: FakeConnection(), options=fast(concurrency=3))
    assert peak == 3 and [o.value for o in fleet.results] == [f"d{i}" for i in range(11)]


def test_an_edgeq_error_is_that_device_s_outcome_with_its_kind_and_code():
    def operation(conn, device, progress):
        if device.name == "d1":
            raise RemoteCommandError(f"{device.name}: `false` failed with exit status 1", hint="look at the device")
        return "fine"

    fleet = run_fleet(devices(3), operation, connect=lambda d: FakeConnection(), options=fast())
    failed = fleet.results[1]
    assert (failed.status, failed.code, failed.kind, failed.value) == (DeviceStatus.FAILED, 10, "remote-command", None)
    assert failed.reason == "`false` failed with exit status 1" and failed.hint == "look at the device"
    assert [o.value for o in fleet.results] == ["fine", None, "fine"] and fleet.failures == (failed,)


def test_only_transport_errors_are_retried_and_by_their_type():
    attempts: dict[str, int] = {}
    lock = threading.Lock()

    def operation(conn, device, progress):
        with lock:
            attempts[device.name] = attempts.get(device.name, 0) + 1
        if device.name == "d0":
            raise DeviceUnreachableError(f"{device.name}: connection lost while reading output")
        # a command error whose words look like a transport error: still not retried (types decide, not words)
        raise RemoteCommandError(f"{device.name}: the device said: connection refused, connection lost")

    retried = []

    class Events:
        def started(self, device):
            pass

        def transferred(self, device, done, total):
            pass

        def retrying(self, device, attempt, error, delay_s):
            retried.append((device.name, attempt))

        def finished(self, result):
            pass

    fleet = run_fleet(
        devices(2), operation, connect=lambda d: FakeConnection(), options=fast(retries=2), events=Events()
    )
    assert attempts == {"d0": 3, "d1": 1} and retried == [("d0", 1), ("d0", 2)]
    assert [(o.status, o.code, o.attempts) for o in fleet.results] == [
        (DeviceStatus.UNREACHABLE, 7, 3),
        (DeviceStatus.FAILED, 10, 1),
    ]


def test_a_failed_canary_leaves_the_rest_not_attempted():
    started = []

    def operation(conn, device, progress):
        started.append(device.name)
        raise RemoteCommandError(f"{device.name}: no")

    fleet = run_fleet(devices(4), operation, connect=lambda d: FakeConnection(), options=fast(canary=1))
    assert started == ["d0"] and fleet.stopped_by_canary
    skipped = fleet.results[1]
    assert isinstance(skipped.error, NotAttempted)
    assert (skipped.status, skipped.code, skipped.kind) == (DeviceStatus.SKIPPED, 12, "skipped")
    assert skipped.reason == "not attempted: the canary failed (d0)"


def test_a_bug_is_not_a_device_failure_it_keeps_its_traceback():
    """A non-edgeq exception propagates once the running devices are done; no further device is started."""
    finished: list[Outcome] = []
    started: list[str] = []
    lock = threading.Lock()

    def operation(conn, device, progress):
        with lock:
            started.append(device.name)
        if device.name == "d2":
            return 1 / 0  # the bug
        time.sleep(0.05)
        return device.name

    class Events:
        def started(self, device):
            pass

        def transferred(self, device, done, total):
            pass

        def retrying(self, device, attempt, error, delay_s):
            pass

        def finished(self, result):
            with lock:
                finished.append(result)

    with pytest.raises(ZeroDivisionError) as info:
        run_fleet(
            devices(10), operation, connect=lambda d: FakeConnection(), options=fast(concurrency=3), events=Events()
        )
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "operation" in frames  # the traceback reaches the line that failed, in the worker thread
    assert any("device 'd2'" in note and "a bug, not a device failure" in note for note in info.value.__notes__)
    assert "d2" not in [o.device for o in finished]  # never reported as a failed device
    assert all(o.ok for o in finished)  # the devices that were running finished normally
    assert len(started) < 10  # and no further device was started after the bug


# --------------------------------------------------------------------------- a bug through the real path


@pytest.fixture
def two_devices(start_device, known_hosts_for):
    found = [start_device("first"), start_device("second")]
    return found, known_hosts_for(*found)


def _plant_bug(monkeypatch, address: str):
    real = deploy.deploy_to_device

    def deploy_to_device(conn, device, model, **kwargs):
        if device.address == address:
            raise ZeroDivisionError("a bug planted in the deployer")
        return real(conn, device, model, **kwargs)

    monkeypatch.setattr(deploy, "deploy_to_device", deploy_to_device)


def test_a_bug_in_a_fleet_run_propagates_from_the_library(two_devices, tmp_path, monkeypatch, isolated_home):
    found, known = two_devices
    _plant_bug(monkeypatch, found[1].host)
    model = deploy.prepare_model(write_model(tmp_path / "digits.tflite", 20_000))
    with pytest.raises(ZeroDivisionError, match="a bug planted") as info:
        deploy.deploy_fleet(
            [as_device(d) for d in found],
            model,
            connect=lambda d: open_connection(d, options(known_hosts=known)),
            options=FleetOptions(concurrency=1, retries=0),
        )
    assert "deploy_to_device" in [f.name for f in traceback.extract_tb(info.value.__traceback__)]


def test_a_bug_in_a_fleet_run_is_a_traceback_on_the_command_line(two_devices, tmp_path, monkeypatch, isolated_home):
    found, known = two_devices
    _plant_bug(monkeypatch, found[1].host)
    model = write_model(tmp_path / "digits.tflite", 20_000)
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  IdentityFile {found[0].key_path}\n")
    hosts = [arg for d in found for arg in ("--host", d.spec)]
    args = ["deploy", str(model), *hosts, "--known-hosts", str(known), "--ssh-config", str(config), "--json"]
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, ZeroDivisionError) and result.exit_code == 1
    assert "deploy_to_device" in [f.name for f in traceback.extract_tb(result.exc_info[2])]
    # not turned into a device failure: no "Error:" line, no per-device result claiming the device failed
    assert "Error:" not in result.stderr and result.stdout == ""
