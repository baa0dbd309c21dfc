"""Shared fixtures: real OpenSSH devices on loopback (see ``tests/sshd.py``) and an isolated home directory.

Devices:

* ``start_device(name=None, *, authorized=True, password=None, disk_bytes=None, max_file_bytes=None)``
  starts a fresh device (its own sshd on 127.0.0.x:port, unix user and home); stopped when the test ends;
* ``device``: one fresh device; ``shared_device``: one device for the whole session (read-only use);
* ``down_address`` (nothing listening), ``silent_server`` (accepts, never answers),
  ``cutting_proxy(device, cut_after_bytes=N, mode="close"|"stall", cut_connections=K)``;
* ``known_hosts_for(*devices)``: a fresh known_hosts file holding those devices' keys.
* ``emulated_devices``: a factory of emulated Raspberry Pi OS devices (``tests/emulated.py``):
  ``emulated_devices("rpios64")`` starts one (arm64 under qemu-user, its own sshd), with a fresh
  writable layer; ``emulated_devices.stop(device)``, else stopped when the session ends.

They need root; without it they skip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import sshd as _sshd


@pytest.fixture(scope="session")
def sshd_factory():
    reason = _sshd.available()
    if reason:
        pytest.skip(f"real sshd devices unavailable: {reason}")
    _sshd.remove_stale_users()
    for stale in Path(tempfile.gettempdir()).glob("edgeq-sshd-*"):
        pid = stale.name.split("-")[2]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(stale, ignore_errors=True)
    base = Path(tempfile.mkdtemp(prefix=f"edgeq-sshd-{os.getpid()}-"))
    base.chmod(0o711)  # device users must be able to reach their homes below it
    client_dir = base / "client"
    client_dir.mkdir(mode=0o700)
    factory = _sshd.DeviceFactory(base, _sshd.make_key(client_dir / "id_ed25519", comment="edgeq-test-client"))
    try:
        yield factory
    finally:
        factory.stop_all()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def start_device(sshd_factory):
    started: list[_sshd.SSHDevice] = []

    def start(*args, **kwargs) -> _sshd.SSHDevice:
        device = sshd_factory.start_device(*args, **kwargs)
        started.append(device)
        return device

    yield start
    for device in started:
        sshd_factory.stop_device(device)


@pytest.fixture
def device(start_device) -> _sshd.SSHDevice:
    return start_device()


@pytest.fixture(scope="session")
def shared_device(sshd_factory) -> _sshd.SSHDevice:
    device = sshd_factory.start_device("shared")
    yield device
    sshd_factory.stop_device(device)


@pytest.fixture(scope="session")
def emulated_devices(sshd_factory, pytestconfig):
    """Starts emulated Raspberry Pi OS devices (images: bare, rpios64, pi5-litert), building the images on first use."""
    import sys

    import emulated as _emulated

    reason = _emulated.available()
    if reason:
        pytest.skip(f"emulated Raspberry Pi devices unavailable: {reason}")
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def say(text: str) -> None:  # shown as it happens: a first build takes minutes
        with capture.global_and_fixture_disabled():
            print(f"\nemulated devices: {text}", file=sys.stderr, flush=True)

    factory = _emulated.EmulatedDeviceFactory(sshd_factory.base / "emulated", sshd_factory.client_key, say)
    yield factory
    factory.stop_all()


@pytest.fixture
def down_address() -> tuple[str, int]:
    return _sshd.free_address()


@pytest.fixture
def silent_server():
    server = _sshd.SilentServer()
    yield server
    server.close()


@pytest.fixture
def cutting_proxy():
    proxies: list[_sshd.CuttingProxy] = []

    def make(device: _sshd.SSHDevice, **kwargs) -> _sshd.CuttingProxy:
        proxy = _sshd.CuttingProxy(device.host, device.port, **kwargs)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def known_hosts_for(tmp_path):
    count = iter(range(1, 1000))

    def make(*devices, extra_lines: tuple[str, ...] = ()) -> Path:
        path = tmp_path / f"known_hosts.{next(count)}"
        path.write_text(
            "".join(d.known_hosts_line() + "\n" for d in devices) + "".join(line + "\n" for line in extra_lines)
        )
        return path

    return make


@pytest.fixture
def isolated_home(tmp_path, monkeypatch) -> Path:
    """HOME is an empty folder: no ~/.ssh/config, known_hosts or keys of the person running the tests; no agent, no password."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("EDGEQ_SSH_PASSWORD", raising=False)
    return home


def pytest_configure(config):
    """The commands record into a history database: the suite's own, never the user's (~/.local/share/edgeq)."""
    import tempfile

    if "EDGEQ_DB" not in os.environ:
        folder = tempfile.mkdtemp(prefix="edgeq-test-history-")
        os.environ["EDGEQ_DB"] = os.path.join(folder, "history.sqlite")
