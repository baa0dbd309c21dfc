"""Emulated Raspberry Pi OS devices for the tests: ``scripts/emulated_devices.py`` seen as ``tests/sshd.py`` devices.

An :class:`EmulatedSSHDevice` has the attributes of :class:`sshd.SSHDevice` that apply
(``name``, ``host``, ``port``, ``user``, ``uid``, ``key_path``, ``known_hosts``,
``host_key``, ``spec``, ``home``, ``remote_dir``, ``known_hosts_line()``), so the
helpers of ``_remote.py`` work with it, plus ``root`` (its root file system from
this machine: read and write its files there as root), ``run_as_root(command)``
(a shell command inside the device, as its root), ``image`` and ``board``.

Devices are started by :class:`EmulatedDeviceFactory` (the ``emulated_devices``
fixture of ``conftest.py``), which builds the images on first use when the cache
lacks them (a few minutes, once; ``scripts/bootstrap.sh`` builds them ahead).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sshd as _sshd

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "emulated_devices.py"


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location("emulated_devices", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


devices_script = sys.modules.get("emulated_devices") or _load_script()
SITE = devices_script.SITE  # usr/local/lib/python3.11/dist-packages
IMAGES = devices_script.IMAGES
BOARDS = devices_script.BOARDS
CACHE = devices_script.Cache()  # ${EDGEQ_DEVICES_CACHE:-~/.cache/edgeq/devices}, ~ from passwd (tests change $HOME)


def available() -> str | None:
    """None when emulated devices can run here (and be built, if the cache lacks images), else why not."""
    needs_build = bool(devices_script.missing_images(cache=CACHE))
    return devices_script.host_problem(for_build=needs_build)


@dataclasses.dataclass
class EmulatedSSHDevice:
    """A running emulated device, shaped like ``sshd.SSHDevice``."""

    name: str
    host: str
    port: int
    user: str
    uid: int
    key_path: Path  # the client's private key, authorized on this device
    known_hosts: Path  # a known_hosts file holding this device's key (only)
    host_key: _sshd.KeyPair
    image: str
    board: str
    emulated: Any  # devices_script.EmulatedDevice
    remote_dir_name: str = "edgeq"

    @property
    def spec(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def fingerprint(self) -> str:
        return self.host_key.fingerprint

    @property
    def root(self) -> Path:
        """The device's root file system, from this machine (as root; valid while it runs)."""
        return Path(self.emulated.root)

    @property
    def home(self) -> Path:
        return self.root / "home" / self.user

    @property
    def remote_dir(self) -> Path:
        return self.home / self.remote_dir_name

    @property
    def board_model(self) -> str:
        return str(BOARDS[self.board].model)

    @property
    def start_s(self) -> float:
        return float(self.emulated.start_s)

    def known_hosts_line(self, host: str | None = None, port: int | None = None) -> str:
        host, port = host or self.host, port or self.port
        name = host if port == 22 else f"[{host}]:{port}"
        key_type, blob = self.host_key.public.split()[:2]
        return f"{name} {key_type} {blob}"

    def run_as_root(self, command: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        """A shell command inside the device, as its root (its own /bin/sh, under qemu)."""
        result: subprocess.CompletedProcess[str] = self.emulated.run_as_root(command, timeout_s=timeout_s)
        return result

    @property
    def running(self) -> bool:
        return bool(self.emulated.running)


class EmulatedDeviceFactory:
    """Starts emulated devices (building their images first when needed) and stops all of them at the end."""

    def __init__(self, base: Path, client_key: _sshd.KeyPair, say: Callable[[str], None] = print):
        self.base = base
        self.client_key = client_key
        self.say = say
        self.devices: list[EmulatedSSHDevice] = []
        self._hosts = itertools.cycle(range(100 + (os.getpid() % 50), 250))
        self._count = itertools.count(1)
        self._lock = threading.Lock()

    def ensure_images(self, *images: str) -> None:
        missing = devices_script.missing_images(list(images), cache=CACHE)
        if not missing:
            return
        self.say(
            f"building the emulated device image(s) {', '.join(missing)} in {CACHE.path}: first use on this machine, "
            "a few minutes once (scripts/bootstrap.sh builds them ahead)"
        )
        try:
            devices_script.build(missing, cache=CACHE, say=self.say)
        except devices_script.BuildError as exc:
            pytest.fail(f"emulated devices: {exc}", pytrace=False)

    def __call__(self, image: str, name: str | None = None) -> EmulatedSSHDevice:
        return self.start(image, name)

    def start(self, image: str, name: str | None = None) -> EmulatedSSHDevice:
        self.ensure_images(image)
        with self._lock:
            number = next(self._count)
            host = f"127.0.0.{next(self._hosts)}"
        name = name or f"{image}-{number}"
        folder = self.base / f"{number}-{name}"
        folder.mkdir(parents=True)
        try:
            device = devices_script.start_device(
                image, client_public_key=self.client_key.public, host=host, name=name, cache=CACHE
            )
        except devices_script.DeviceError as exc:
            pytest.fail(f"emulated devices: {exc}", pytrace=False)
        public = device.host_key
        host_key_file = folder / "ssh_host_ed25519_key.pub"
        host_key_file.write_text(public + "\n")
        wrapped = EmulatedSSHDevice(
            name=name,
            host=device.host,
            port=device.port,
            user=device.user,
            uid=device.uid,
            key_path=self.client_key.path,
            known_hosts=folder / "known_hosts",
            host_key=_sshd.KeyPair(host_key_file, public),
            image=image,
            board=device.board,
            emulated=device,
        )
        wrapped.known_hosts.write_text(wrapped.known_hosts_line() + "\n")
        with self._lock:
            self.devices.append(wrapped)
        return wrapped

    def stop(self, device: EmulatedSSHDevice) -> None:
        device.emulated.stop()
        with self._lock:
            if device in self.devices:
                self.devices.remove(device)

    def stop_all(self) -> None:
        for device in list(self.devices):
            try:
                self.stop(device)
            except Exception as exc:  # the others must still be stopped
                self.say(f"stopping {device.name} failed: {exc}")
