"""Deploys, status, rollback and removal against real OpenSSH devices on loopback (real paramiko, no mocks).

Every failure case checks, on the device's own disk (not through edgeq), that
the previously active model is still active and intact and that no temporary
file is left behind.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from _remote import active_on_disk, as_device, leftovers, model_folder, options, sha256_of, write_model
from click.testing import CliRunner

from edgeq.cli import cli
from edgeq.connection import LocalConnection, open_connection
from edgeq.deploy import (
    DeviceResult,
    DeviceStatus,
    FleetOptions,
    deploy_fleet,
    prepare_model,
    remove_fleet,
    rollback_fleet,
    status_fleet,
    validate_model_name,
)
from edgeq.devices import Device
from edgeq.errors import EdgeqError, ModelError

pytestmark = pytest.mark.usefixtures("isolated_home")

NAME = "digits"


@pytest.fixture
def models(tmp_path):
    """Three versions of a model (a, b, c) of different sizes."""
    folder = tmp_path / "models"
    folder.mkdir()
    return {
        key: prepare_model(write_model(folder / f"{key}.tflite", size, seed), NAME)
        for key, size, seed in (("a", 60_000, 1), ("b", 90_000, 2), ("c", 40_000, 3))
    }


def connector(**overrides):
    """Connections that trust only the known_hosts file given (per test), keys from the device record."""

    def connect(device):
        return open_connection(device, options(**overrides))

    return connect


def fast(**overrides) -> FleetOptions:
    values = dict(concurrency=16, retries=0, backoff_s=0.05)
    values.update(overrides)
    return FleetOptions(**values)


def deploy(devices, model, known_hosts, **kwargs):
    conn_overrides = kwargs.pop("connect_options", {})
    fleet_options = kwargs.pop("fleet", fast())
    return deploy_fleet(
        devices, model, connect=connector(known_hosts=known_hosts, **conn_overrides), options=fleet_options, **kwargs
    )


def only(fleet) -> DeviceResult:
    (result,) = fleet.results
    return result


def assert_active(device, version, sha):
    assert active_on_disk(device, NAME) == (version, sha)
    assert leftovers(device, NAME) == []


def wait_for_no_leftovers(device, timeout_s=25.0):
    """The device's script removes its upload when its channel closes; at the latest its guard ends it after
    IDLE_S quiet seconds (3 x the tests' 5 s connect timeout = 15 s, checked every second): CI machines where
    sshd passes the closed connection on late (both cut-upload tests failed there at 5 s) need the latter."""
    deadline = time.monotonic() + timeout_s
    while (
        leftovers(device, NAME) and time.monotonic() < deadline
    ):  # the device's script cleans up after its channel closed
        time.sleep(0.05)
    assert leftovers(device, NAME) == []


# --------------------------------------------------------------------------- the normal path


def test_first_deploy(device, models):
    model = models["a"]
    result = only(deploy([as_device(device)], model, device.known_hosts))
    assert (result.status, result.version, result.previous, result.bytes_sent, result.attempts) == (
        DeviceStatus.OK,
        model.version,
        None,
        model.size_bytes,
        1,
    )
    assert_active(device, model.version, model.sha256)
    folder = model_folder(device, NAME)
    assert (folder / model.version / "model.tflite.sha256").read_text().strip() == model.sha256
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model"] == NAME and manifest["current"] == model.version
    entry = manifest["versions"][model.version]
    assert (entry["sha256"], entry["size_bytes"], entry["source"]) == (model.sha256, model.size_bytes, "a.tflite")
    assert manifest["history"][-1]["action"] == "deploy" and entry["deployed_at"].endswith("Z")
    owner = (folder / model.version / "model.tflite").stat().st_uid
    assert (
        owner == device.uid and (folder / "current").is_symlink() and os.readlink(folder / "current") == model.version
    )


def test_redeploy_uploads_nothing(device, models):
    model = models["a"]
    deploy([as_device(device)], model, device.known_hosts)
    path = model_folder(device, NAME) / model.version / "model.tflite"
    before = path.stat()
    result = only(deploy([as_device(device)], model, device.known_hosts))
    assert (result.status, result.bytes_sent, result.version, result.previous) == (
        DeviceStatus.UNCHANGED,
        0,
        model.version,
        model.version,
    )
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_version_already_on_the_device_is_switched_to_without_upload(device, models):
    dev = as_device(device)
    deploy([dev], models["a"], device.known_hosts)
    deploy([dev], models["b"], device.known_hosts)
    result = only(deploy([dev], models["a"], device.known_hosts))
    assert (result.status, result.bytes_sent, result.previous) == (DeviceStatus.OK, 0, models["b"].version)
    assert_active(device, models["a"].version, models["a"].sha256)


def test_rollback_and_rollback_to(device, models):
    dev = as_device(device)
    for key in ("a", "b", "c"):
        deploy([dev], models[key], device.known_hosts)
    connect = connector(known_hosts=device.known_hosts)
    back = only(rollback_fleet([dev], NAME, connect=connect, options=fast()))
    assert (back.status, back.version, back.previous) == (DeviceStatus.OK, models["b"].version, models["c"].version)
    assert_active(device, models["b"].version, models["b"].sha256)
    again = only(rollback_fleet([dev], NAME, connect=connect, options=fast()))  # toggles, like `cd -`
    assert again.version == models["c"].version
    to = only(rollback_fleet([dev], NAME, to=models["a"].version[:6], connect=connect, options=fast()))
    assert (to.status, to.version) == (DeviceStatus.OK, models["a"].version)
    assert_active(device, models["a"].version, models["a"].sha256)
    same = only(rollback_fleet([dev], NAME, to=models["a"].version, connect=connect, options=fast()))
    assert same.status is DeviceStatus.UNCHANGED
    history = json.loads((model_folder(device, NAME) / "manifest.json").read_text())["history"]
    assert [e["action"] for e in history] == ["deploy", "deploy", "deploy", "rollback", "rollback", "rollback"]


def test_rollback_refuses_a_damaged_version_and_unknown_versions(device, models):
    dev = as_device(device)
    deploy([dev], models["a"], device.known_hosts)
    deploy([dev], models["b"], device.known_hosts)
    with open(model_folder(device, NAME) / models["a"].version / "model.tflite", "r+b") as handle:
        handle.seek(100)
        handle.write(b"tampered")
    connect = connector(known_hosts=device.known_hosts)
    result = only(rollback_fleet([dev], NAME, connect=connect, options=fast()))
    assert result.status is DeviceStatus.FAILED and "not rolling back" in result.reason and "sha256" in result.reason
    assert (result.code, result.kind) == (1, "model-state")
    assert_active(device, models["b"].version, models["b"].sha256)
    missing = only(rollback_fleet([dev], NAME, to="abcdef", connect=connect, options=fast()))
    assert missing.status is DeviceStatus.FAILED and "no version 'abcdef'" in missing.reason
    assert_active(device, models["b"].version, models["b"].sha256)


def test_status_and_a_tampered_file(device, models):
    dev = as_device(device)
    deploy([dev], models["a"], device.known_hosts)
    deploy([dev], models["b"], device.known_hosts)
    connect = connector(known_hosts=device.known_hosts)
    good = only(status_fleet([dev], NAME, connect=connect, options=fast()))
    assert (good.status, good.version, good.state.intact) == (DeviceStatus.OK, models["b"].version, True)
    assert [v.version for v in good.state.versions] == [models["b"].version, models["a"].version]
    assert good.state.versions[0].active and good.state.versions[0].sha256 == models["b"].sha256
    active = model_folder(device, NAME) / models["b"].version / "model.tflite"
    active.write_bytes(active.read_bytes()[:-10] + b"0123456789")
    bad = only(status_fleet([dev], NAME, connect=connect, options=fast()))
    assert (bad.status, bad.version, bad.state.intact) == (DeviceStatus.FAILED, models["b"].version, False)
    assert "does not match its sha256" in bad.reason and (bad.code, bad.kind) == (1, "model-state")
    absent = only(status_fleet([dev], "other-model", connect=connect, options=fast()))
    assert absent.status is DeviceStatus.FAILED and "no model named 'other-model'" in absent.reason
    # deploying again repairs the damaged active version (uploaded again, with a warning)
    repaired = only(deploy([dev], models["b"], device.known_hosts))
    assert repaired.status is DeviceStatus.OK and repaired.bytes_sent == models["b"].size_bytes
    assert any("damaged" in w for w in repaired.warnings)
    assert_active(device, models["b"].version, models["b"].sha256)


def test_keeps_the_last_k_versions_never_the_active_one(device, models, tmp_path):
    dev = as_device(device)
    extra = prepare_model(write_model(tmp_path / "d.tflite", 30_000, 4), NAME)
    for model in (models["a"], models["b"], models["c"], extra):
        result = only(deploy([dev], model, device.known_hosts, keep=2))
    assert result.removed == (models["b"].version,)
    folder = model_folder(device, NAME)
    kept = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
    assert kept == sorted([models["c"].version, extra.version])
    assert set(json.loads((folder / "manifest.json").read_text())["versions"]) == set(kept)
    assert_active(device, extra.version, extra.sha256)


def test_keep_versions_comes_from_the_device_record(device, models):
    dev = as_device(device, keep_versions=1)
    deploy([dev], models["a"], device.known_hosts)
    result = only(deploy([dev], models["b"], device.known_hosts))
    assert result.removed == (models["a"].version,)


def test_remove_versions_and_the_whole_model(device, models):
    dev = as_device(device)
    for key in ("a", "b", "c"):
        deploy([dev], models[key], device.known_hosts)
    connect = connector(known_hosts=device.known_hosts)
    refused = only(remove_fleet([dev], NAME, versions=[models["c"].version], connect=connect, options=fast()))
    assert refused.status is DeviceStatus.FAILED and "active version" in refused.reason
    done = only(remove_fleet([dev], NAME, versions=[models["a"].version[:5]], connect=connect, options=fast()))
    assert (done.status, done.removed) == (DeviceStatus.OK, (models["a"].version,))
    assert not (model_folder(device, NAME) / models["a"].version).exists()
    assert_active(device, models["c"].version, models["c"].sha256)
    everything = only(remove_fleet([dev], NAME, connect=connect, options=fast()))
    assert everything.status is DeviceStatus.OK and set(everything.removed) == {
        models["b"].version,
        models["c"].version,
    }
    assert not model_folder(device, NAME).exists()
    gone = only(remove_fleet([dev], NAME, connect=connect, options=fast()))
    assert gone.status is DeviceStatus.UNCHANGED


def test_paths_with_spaces_and_quotes_are_quoted(device, models):
    dev = as_device(device, remote_dir='my models/it\'s "$(x)"')
    result = only(deploy([dev], models["a"], device.known_hosts))
    assert result.status is DeviceStatus.OK
    model = device.home / "my models" / 'it\'s "$(x)"' / "models" / NAME / models["a"].version / "model.tflite"
    assert sha256_of(model) == models["a"].sha256


@pytest.mark.parametrize("shell", ["/bin/bash", "/bin/dash"])
def test_other_login_shells(start_device, models, shell):
    device = start_device(shell=shell)
    dev = as_device(device)
    assert only(deploy([dev], models["a"], device.known_hosts)).status is DeviceStatus.OK
    assert only(deploy([dev], models["b"], device.known_hosts)).status is DeviceStatus.OK
    assert (
        only(rollback_fleet([dev], NAME, connect=connector(known_hosts=device.known_hosts), options=fast())).version
        == models["a"].version
    )
    assert_active(device, models["a"].version, models["a"].sha256)


def test_an_unwritable_remote_dir_is_one_clear_reason(device, models):
    result = only(deploy([as_device(device, remote_dir="/proc/edgeq")], models["a"], device.known_hosts))
    assert result.status is DeviceStatus.FAILED and result.reason.startswith(
        "cannot write edgeq's files into /proc/edgeq/scripts: "
    )


def test_absolute_remote_dir(device, models):
    target = device.home / "abs"
    result = only(deploy([as_device(device, remote_dir=str(target))], models["a"], device.known_hosts))
    assert result.status is DeviceStatus.OK and (target / "models" / NAME / "current").is_symlink()


# --------------------------------------------------------------------------- failures: the previous model stays active


@pytest.fixture
def deployed(device, models):
    """A device with model a active; returns (device, record)."""
    dev = as_device(device)
    assert only(deploy([dev], models["a"], device.known_hosts)).status is DeviceStatus.OK
    return device, dev


def test_unknown_host_is_refused(deployed, models, tmp_path):
    device, dev = deployed
    empty = tmp_path / "empty_known_hosts"
    empty.touch()
    result = only(deploy([dev], models["b"], empty))
    assert (result.status, result.code, result.kind) == (DeviceStatus.FAILED, 9, "host-key")
    assert device.fingerprint in result.reason and "--trust-new-hosts" in result.hint
    assert_active(device, models["a"].version, models["a"].sha256)


def test_changed_host_key_is_refused_even_when_trusting_new_hosts(deployed, models, known_hosts_for, tmp_path):
    from sshd import make_key

    device, dev = deployed
    impostor = make_key(tmp_path / "impostor")
    known = known_hosts_for(extra_lines=(device.known_hosts_line(key=impostor),))
    result = only(deploy([dev], models["b"], known, connect_options={"trust_new_hosts": True}))
    assert (result.status, result.code, result.kind) == (DeviceStatus.FAILED, 9, "host-key")
    assert "HOST KEY CHANGED" in result.reason
    assert_active(device, models["a"].version, models["a"].sha256)


def test_authentication_failure(deployed, models, tmp_path):
    from sshd import make_key

    device, _dev = deployed
    stranger = make_key(tmp_path / "stranger")
    result = only(
        deploy(
            [as_device(device, key_files=(str(stranger.path),))], models["b"], device.known_hosts, fleet=fast(retries=2)
        )
    )
    assert (result.status, result.code, result.kind, result.attempts) == (DeviceStatus.FAILED, 8, "authentication", 1)
    assert_active(device, models["a"].version, models["a"].sha256)


def test_a_device_that_is_down(deployed, models):
    device, dev = deployed
    device.server.stop()
    started = time.monotonic()
    result = only(deploy([dev], models["b"], device.known_hosts, fleet=fast(retries=2, backoff_s=0.05)))
    assert (result.status, result.code, result.kind, result.attempts) == (DeviceStatus.UNREACHABLE, 7, "unreachable", 3)
    assert "refused" in result.reason and time.monotonic() - started < 10  # three refusals and two short backoffs
    assert_active(device, models["a"].version, models["a"].sha256)


def test_a_device_that_accepts_tcp_and_never_answers(deployed, models):
    from sshd import SilentServer

    device, dev = deployed
    device.server.stop()
    silent = SilentServer(device.host, device.port)  # same address and port: the device "hangs"
    try:
        started = time.monotonic()
        result = only(deploy([dev], models["b"], device.known_hosts, connect_options={"connect_timeout_s": 1.0}))
        took = time.monotonic() - started
    finally:
        silent.close()
    assert result.status is DeviceStatus.UNREACHABLE and "no SSH greeting within 1 s" in result.reason
    assert took < 1 + 5  # the connect timeout, plus slack for a loaded machine: the run ends
    assert_active(device, models["a"].version, models["a"].sha256)


def test_a_full_disk(start_device, models, tmp_path):
    device = start_device(disk_bytes=160_000)  # a tmpfs as the remote folder (RLIMIT_FSIZE where mounts are refused)
    dev = as_device(device)
    assert only(deploy([dev], models["c"], device.known_hosts)).status is DeviceStatus.OK  # 40 kB fits
    big = prepare_model(write_model(tmp_path / "big.tflite", 150_000, 9), NAME)
    result = only(deploy([dev], big, device.known_hosts))
    assert (result.status, result.code) == (DeviceStatus.FAILED, 10)
    if device.disk_limit == "tmpfs":
        assert "not enough space" in result.reason and result.bytes_sent == 0
    assert_active(device, models["c"].version, models["c"].sha256)


def test_a_write_that_fails_half_way(start_device, models, tmp_path):
    device = start_device(max_file_bytes=100_000)  # RLIMIT_FSIZE: the upload is cut at 100 kB by the kernel
    dev = as_device(device)
    assert only(deploy([dev], models["a"], device.known_hosts)).status is DeviceStatus.OK
    big = prepare_model(write_model(tmp_path / "big.tflite", 400_000, 9), NAME)
    result = only(deploy([dev], big, device.known_hosts))
    assert result.status is DeviceStatus.FAILED and "writing the model" in result.reason
    assert_active(device, models["a"].version, models["a"].sha256)
    assert not (model_folder(device, NAME) / big.version).exists()


def _through(proxy, device, **overrides) -> Device:
    return as_device(device, address=proxy.host, port=proxy.port, **overrides)


def test_a_connection_cut_in_the_middle_of_an_upload(deployed, models, cutting_proxy, known_hosts_for, tmp_path):
    device, _ = deployed
    big = prepare_model(write_model(tmp_path / "big.tflite", 2_000_000, 7), NAME)
    proxy = cutting_proxy(device, cut_after_bytes=1_000_000)
    known = known_hosts_for(extra_lines=(device.known_hosts_line(host=proxy.host, port=proxy.port),))
    result = only(deploy([_through(proxy, device)], big, known))
    assert proxy.cut == 1
    assert result.status is DeviceStatus.UNREACHABLE and "connection lost" in result.reason
    wait_for_no_leftovers(device)
    assert_active(device, models["a"].version, models["a"].sha256)
    assert not (model_folder(device, NAME) / big.version).exists()


def test_a_cut_connection_is_retried(deployed, models, cutting_proxy, known_hosts_for, tmp_path):
    device, _ = deployed
    big = prepare_model(write_model(tmp_path / "big.tflite", 1_000_000, 8), NAME)
    proxy = cutting_proxy(device, cut_after_bytes=500_000, cut_connections=1)
    known = known_hosts_for(extra_lines=(device.known_hosts_line(host=proxy.host, port=proxy.port),))
    result = only(deploy([_through(proxy, device)], big, known, fleet=fast(retries=2, backoff_s=0.05)))
    assert (result.status, result.attempts, proxy.cut) == (DeviceStatus.OK, 2, 1)
    assert_active(device, big.version, big.sha256)


def test_a_stalled_upload_ends_within_the_transfer_timeout(deployed, models, cutting_proxy, known_hosts_for, tmp_path):
    device, _ = deployed
    big = prepare_model(write_model(tmp_path / "big.tflite", 3_000_000, 6), NAME)
    proxy = cutting_proxy(device, cut_after_bytes=800_000, mode="stall")
    known = known_hosts_for(extra_lines=(device.known_hosts_line(host=proxy.host, port=proxy.port),))
    started = time.monotonic()
    result = only(
        deploy(
            [_through(proxy, device)], big, known, connect_options={"transfer_timeout_s": 2.0, "command_timeout_s": 2.0}
        )
    )
    assert result.status is DeviceStatus.UNREACHABLE and "stalled" in result.reason, result
    assert time.monotonic() - started < 4 + 5  # the session's transfer + command timeouts, plus slack
    proxy.close()
    wait_for_no_leftovers(device)
    assert_active(device, models["a"].version, models["a"].sha256)


# --------------------------------------------------------------------------- fleets


def test_a_fleet_with_every_device_accounted_for(start_device, models, known_hosts_for, down_address):
    good = [start_device(f"ok{i}") for i in range(3)]
    locked = start_device("locked", authorized=False)
    host, port = down_address
    devices = [as_device(d) for d in good] + [as_device(locked), Device(name="down", address=host, user="x", port=port)]
    known = known_hosts_for(*good, locked)
    seen: list[str] = []
    lock = threading.Lock()

    class Events:
        def started(self, device):
            pass

        def transferred(self, device, done, total):
            with lock:
                seen.append(f"{device.name}:{done}/{total}")

        def retrying(self, device, attempt, error, delay_s):
            pass

        def finished(self, result):
            with lock:
                seen.append(f"done:{result.device}")

    fleet = deploy(devices, models["a"], known, events=Events(), fleet=fast(retries=1, backoff_s=0.05))
    statuses = {r.device: r.status for r in fleet.results}
    assert statuses == {"ok0": "ok", "ok1": "ok", "ok2": "ok", "locked": "failed", "down": "unreachable"}
    assert [r.device for r in fleet.results] == ["ok0", "ok1", "ok2", "locked", "down"]
    assert fleet.counts() == {"ok": 3, "unchanged": 0, "failed": 1, "unreachable": 1, "skipped": 0, "undone": 0}
    assert not fleet.ok and len(fleet.failures) == 2
    assert sorted(s for s in seen if s.startswith("done:")) == sorted(f"done:{d.name}" for d in devices)
    assert f"ok0:{models['a'].size_bytes}/{models['a'].size_bytes}" in seen
    for d in good:
        assert_active(d, models["a"].version, models["a"].sha256)
    data = fleet.to_dict()
    assert data["ok"] is False and data["results"][4]["status"] == "unreachable"
    assert [(r["code"], r["kind"]) for r in data["results"]] == [(0, None)] * 3 + [
        (8, "authentication"),
        (7, "unreachable"),
    ]


def test_canary_failure_stops_the_rollout(start_device, models, known_hosts_for):
    canary = start_device("canary", authorized=False)
    rest = [start_device(f"rest{i}") for i in range(2)]
    known = known_hosts_for(canary, *rest)
    fleet = deploy([as_device(canary)] + [as_device(d) for d in rest], models["a"], known, fleet=fast(canary=1))
    assert [r.status for r in fleet.results] == [DeviceStatus.FAILED, DeviceStatus.SKIPPED, DeviceStatus.SKIPPED]
    assert [(r.code, r.kind) for r in fleet.results] == [(8, "authentication"), (12, "skipped"), (12, "skipped")]
    assert fleet.stopped_by_canary and "canary failed (canary)" in fleet.results[1].reason
    for d in rest:
        assert not model_folder(d, NAME).exists()


def test_canary_success_continues(start_device, models, known_hosts_for):
    devices = [start_device(f"c{i}") for i in range(3)]
    fleet = deploy([as_device(d) for d in devices], models["a"], known_hosts_for(*devices), fleet=fast(canary=1))
    assert fleet.ok and not fleet.stopped_by_canary


# --------------------------------------------------------------------------- the same deploys on this machine (LocalConnection)


def test_local_deploy_status_rollback(tmp_path, models):
    home = tmp_path / "local-home"
    home.mkdir()
    dev = Device(name="local", address="localhost", user="me", transport="local", remote_dir=".cache/edgeq/host")

    def connect(device):
        return LocalConnection(home=home, options=options())

    first = only(deploy_fleet([dev], models["a"], connect=connect, options=fast()))
    second = only(deploy_fleet([dev], models["b"], connect=connect, options=fast()))
    assert (first.status, second.status, second.previous) == (DeviceStatus.OK, DeviceStatus.OK, models["a"].version)
    local = type("D", (), {"remote_dir": home / ".cache/edgeq/host"})
    assert active_on_disk(local, NAME) == (models["b"].version, models["b"].sha256) and leftovers(local, NAME) == []
    assert only(status_fleet([dev], NAME, connect=connect, options=fast())).state.intact is True
    assert only(rollback_fleet([dev], NAME, connect=connect, options=fast())).version == models["a"].version
    assert only(deploy_fleet([dev], models["a"], connect=connect, options=fast())).status is DeviceStatus.UNCHANGED


# --------------------------------------------------------------------------- names, models, pruning


@pytest.mark.parametrize("name", ["digits", "digits_int8", "m.v2", "A-1"])
def test_safe_names(name):
    assert validate_model_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "-rf", "a b", "x;rm", "é", "a" * 65, "$(id)"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(EdgeqError, match="not a safe file name"):
        validate_model_name(name)


def test_prepare_model(tmp_path):
    model = prepare_model(write_model(tmp_path / "digits_int8.tflite", 1000))
    assert model.name == "digits_int8" and len(model.version) == 12 and model.sha256.startswith(model.version)
    (tmp_path / "not.tflite").write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(ModelError, match="not a TFLite model"):
        prepare_model(tmp_path / "not.tflite")
    with pytest.raises(ModelError, match="no such file"):
        prepare_model(tmp_path / "missing.tflite")
    write_model(tmp_path / "bad name!.tflite")
    with pytest.raises(EdgeqError, match="does not make a safe model name") as info:
        prepare_model(tmp_path / "bad name!.tflite")
    assert "--name" in info.value.hint


# --------------------------------------------------------------------------- the CLI


def _cli(*args, env=None):
    result = CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def test_cli_deploy_status_rollback_remove(device, models):
    common = ["--host", device.spec, "--known-hosts", device.known_hosts, "--retries", 0]
    key = ["--ssh-config", _ssh_config_with_key(device)]
    first = _cli("deploy", models["a"].path, "--name", NAME, *common, *key)
    assert first.exit_code == 0, first.output
    assert "ok" in first.stdout and models["a"].version in first.stdout and "1 device: 1 ok" in first.stdout
    again = _cli("deploy", models["a"].path, "--name", NAME, "--json", *common, *key)
    data = json.loads(again.stdout)
    assert (
        again.exit_code == 0
        and data["ok"]
        and data["results"][0]["status"] == "unchanged"
        and data["results"][0]["bytes_sent"] == 0
    )
    _cli("deploy", models["b"].path, "--name", NAME, *common, *key)
    status = _cli("status", "--name", NAME, "--json", *common, *key)
    assert status.exit_code == 0 and json.loads(status.stdout)["results"][0]["state"]["current"] == models["b"].version
    back = _cli("rollback", "--name", NAME, *common, *key)
    assert back.exit_code == 0 and models["a"].version in back.stdout
    assert_active(device, models["a"].version, models["a"].sha256)
    removed = _cli("remove", "--name", NAME, "--version", models["b"].version, *common, *key)
    assert removed.exit_code == 0 and models["b"].version in removed.stdout
    usage = _cli("remove", "--name", NAME, *common, *key)
    assert usage.exit_code == 2 and "--version VERSION (repeatable) or --all" in usage.output
    gone = _cli("remove", "--name", NAME, "--all", *common, *key)
    assert gone.exit_code == 0 and not model_folder(device, NAME).exists()


def _ssh_config_with_key(device) -> Path:
    path = Path(device.known_hosts).parent / "ssh_config"
    path.write_text(f"Host *\n  IdentityFile {device.key_path}\n")
    return path


def test_cli_tampered_status_exits_with_its_code_and_one_line(device, models):
    common = ["--host", device.spec, "--known-hosts", device.known_hosts, "--ssh-config", _ssh_config_with_key(device)]
    assert _cli("deploy", models["a"].path, "--name", NAME, *common).exit_code == 0
    model = model_folder(device, NAME) / models["a"].version / "model.tflite"
    model.write_bytes(b"\x1c\x00\x00\x00TFL3 replaced")
    result = _cli("status", "--name", NAME, *common)
    assert result.exit_code == 1  # ModelStateError: the one device's own code
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error_lines) == 1 and "does not match its sha256" in error_lines[0]
    assert "NO" in result.stdout


def test_cli_unknown_host_shows_the_fingerprint_and_the_hint(device, models, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.touch()
    result = _cli(
        "deploy",
        models["a"].path,
        "--host",
        device.spec,
        "--known-hosts",
        empty,
        "--ssh-config",
        _ssh_config_with_key(device),
    )
    assert result.exit_code == 9
    assert device.fingerprint in result.stderr and "Hint: " in result.stderr and "--trust-new-hosts" in result.stderr
    trusted = _cli(
        "deploy",
        models["a"].path,
        "--host",
        device.spec,
        "--known-hosts",
        empty,
        "--ssh-config",
        _ssh_config_with_key(device),
        "--trust-new-hosts",
    )
    assert (
        trusted.exit_code == 0
        and "Warning: trusted the new host key" in trusted.stderr
        and device.fingerprint in trusted.stderr
    )
    assert empty.read_text().strip() == device.known_hosts_line()


def test_cli_inventory_limit_and_partial_failure(start_device, models, tmp_path, known_hosts_for, down_address):
    devices = [start_device(f"inv{i}") for i in range(2)]
    host, port = down_address
    lines = [
        "all:",
        "  vars:",
        f"    ansible_ssh_private_key_file: {devices[0].key_path}",
        "  children:",
        "    shelf:",
        "      hosts:",
    ]
    for d in devices:
        lines += [
            f"        {d.name}:",
            f"          ansible_host: {d.host}",
            f"          ansible_port: {d.port}",
            f"          ansible_user: {d.user}",
        ]
    lines += [
        "    broken:",
        "      hosts:",
        "        gone:",
        f"          ansible_host: {host}",
        f"          ansible_port: {port}",
    ]
    inventory = tmp_path / "fleet.yml"
    inventory.write_text("\n".join(lines) + "\n")
    known = known_hosts_for(*devices)
    shelf = _cli(
        "deploy", models["a"].path, "-i", inventory, "--limit", "shelf", "--known-hosts", known, "--retries", 0
    )
    assert shelf.exit_code == 0 and "2 devices: 2 ok" in shelf.stdout
    everything = _cli("deploy", models["a"].path, "-i", inventory, "--known-hosts", known, "--retries", 0, "--json")
    assert everything.exit_code == 7  # the one failure's code: the others succeeded
    data = json.loads(everything.stdout)
    assert [r["status"] for r in data["results"]] == ["unchanged", "unchanged", "unreachable"]
    assert "Error: 1 of 3 devices did not succeed (1 unreachable)" in everything.stderr
    typo = _cli("status", "--name", NAME, "-i", inventory, "--limit", "shelff")
    assert typo.exit_code == 1 and "did you mean 'shelf'?" in typo.stderr


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["deploy", "{model}", "--name", "../evil", "--host", "{down}"], 1, "not a safe file name"),
        (["deploy", "{model}", "--host", "bad host"], 2, "is not a host name"),
        (["deploy", "{model}", "--limit", "x", "--host", "pi@h"], 2, "--limit selects hosts of an --inventory"),
        (["deploy", "{model}"], 2, "which devices?"),
        (["deploy", "{model}", "--host", "pi@h", "-i", "{model}"], 2, "not both"),
        (["deploy", "{missing}", "--host", "pi@h"], 5, "no such file"),
        (["deploy", "{model}", "--host", "pi@h", "--target", "rpi4"], 3, "rpi4"),
        (["status", "--name", "a/b", "--host", "pi@h"], 1, "not a safe file name"),
        (["rollback", "--name", "m", "--to", "xyz!", "--host", "{down}"], 1, "not a version"),
    ],
)
def test_cli_bad_input_is_one_line_before_any_connection(args, code, text, models, tmp_path, down_address):
    host, port = down_address
    values = {"{model}": models["a"].path, "{down}": f"pi@{host}:{port}", "{missing}": str(tmp_path / "missing.tflite")}
    result = _cli(*[values.get(a, a) for a in args])
    assert result.exit_code == code, result.output
    assert text in result.output
    assert "unreachable" not in result.output and "refused" not in result.output  # nothing was contacted


def test_device_commands_share_the_options():
    for command in ("deploy", "status", "rollback", "remove"):
        result = CliRunner().invoke(cli, [command, "--help"])
        for option in (
            "--host",
            "--inventory",
            "--limit",
            "--target",
            "--known-hosts",
            "--trust-new-hosts",
            "--ssh-config",
            "--concurrency",
            "--connect-timeout",
            "--command-timeout",
            "--transfer-timeout",
            "--retries",
        ):
            assert option in result.output, (command, option)


def test_importing_the_cli_does_not_import_paramiko():
    import subprocess
    import sys

    code = "import sys, edgeq.cli; import edgeq.cli.deploy, edgeq.cli._devices; print('paramiko' in sys.modules, 'yaml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
