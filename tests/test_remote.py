"""The device scripts themselves (``edgeq/remote/*.sh``): shellcheck-clean, and run under dash and BusyBox ash.

``deploy.sh`` is driven directly with a scripted stdin dialogue against a
temporary folder (what ``edgeq.deploy`` says, byte for byte), and whole
deploys go through ``LocalConnection`` with ``sh`` pointed at each shell,
once with a userland made only of BusyBox applets. Each test skips, saying
why, when the shell (or shellcheck) is not installed; ``scripts/bootstrap.sh``
installs them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _remote import options

from edgeq import remote
from edgeq.connection import DeviceFilesMissing, LocalConnection
from edgeq.deploy import DeviceStatus, deploy_to_device, prepare_model, rollback_device, status_of_device
from edgeq.detect import read_facts
from edgeq.devices import Device

SCRIPTS_DIR = Path(remote.__file__).parent
SHELLS = {"dash": ("dash",), "busybox": ("busybox", "sh")}


def shell(name: str) -> list[str]:
    """The command that runs a script under ``name``; skip the test when it is not installed."""
    argv = SHELLS[name]
    path = shutil.which(argv[0])
    if path is None:
        pytest.skip(f"{argv[0]} is not installed (scripts/bootstrap.sh installs it)")
    return [path, *argv[1:]]


def sh_dir(tmp_path: Path, name: str, *, only_busybox: bool = False) -> Path:
    """A folder whose ``sh`` is that shell; with ``only_busybox``, every command in it is a BusyBox applet."""
    argv = shell(name)
    folder = tmp_path / f"bin-{name}"
    folder.mkdir(exist_ok=True)
    if only_busybox:
        applets = subprocess.run([argv[0], "--list"], capture_output=True, text=True, check=True).stdout.split()
        for applet in applets:
            (folder / applet).symlink_to(argv[0])
    else:
        (folder / "sh").symlink_to(argv[0])
    return folder


# --------------------------------------------------------------------------- lint


def test_every_device_script_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (scripts/bootstrap.sh installs it)")
    scripts = sorted(SCRIPTS_DIR.glob("*.sh"))
    assert {p.name for p in scripts} == {s for s in remote.SCRIPTS if s.endswith(".sh")}
    for script in scripts:
        done = subprocess.run([shellcheck, "--shell=sh", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, f"{script.name}:\n{done.stdout}{done.stderr}"


def test_the_python_device_script_is_python_3_7_and_standard_library_only():
    """runtime.py runs with the device's Python (3.7 or newer), before any runtime or numpy is there."""
    import ast
    import sys

    source = (SCRIPTS_DIR / "runtime.py").read_text()
    tree = ast.parse(source, feature_version=(3, 7))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)
    # the device fetches nothing: the wheels come from the host over SSH
    assert not imported & {"socket", "urllib", "http", "ssl", "ftplib", "ensurepip", "pip"}


def test_the_tiny_model_is_the_same_in_both_device_scripts():
    """detect.sh and runtime.py check a runtime with the same tiny model (relu(2x + 1) on 4 values)."""
    import re

    detect = re.search(r'^TINY = "([A-Za-z0-9+/=]+)"$', (SCRIPTS_DIR / "detect.sh").read_text(), re.MULTILINE)
    runtime = re.search(r"^TINY = \(\n(.*?)\n\)", (SCRIPTS_DIR / "runtime.py").read_text(), re.MULTILINE | re.DOTALL)
    assert detect and runtime
    assert "".join(re.findall(r'"([^"]+)"', runtime.group(1))) == detect.group(1)


def test_scripts_are_read_from_the_package_and_named_by_their_hash():
    file = remote.script("deploy.sh", "edgeq")
    data = (SCRIPTS_DIR / "deploy.sh").read_bytes()
    assert file.data == data and file.path == f"./edgeq/scripts/deploy-{hashlib.sha256(data).hexdigest()[:16]}.sh"
    assert remote.script("wrapper.sh", "/opt/models").path.startswith("/opt/models/scripts/wrapper-")


# --------------------------------------------------------------------------- the wrapper


@pytest.mark.parametrize("name", sorted(SHELLS))
def test_the_wrapper_runs_nothing_when_a_file_is_missing(name, tmp_path):
    (tmp_path / "present").touch()
    argv = [*shell(name), str(SCRIPTS_DIR / "wrapper.sh"), "5", "label", "echo ran"]
    done = subprocess.run([*argv, str(tmp_path / "present"), str(tmp_path / "gone")], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (remote.MISSING_STATUS, "")
    assert remote.missing_paths(done.returncode, done.stderr) == [str(tmp_path / "gone")]
    done = subprocess.run([*argv, str(tmp_path / "present")], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "ran\n")


@pytest.mark.parametrize("name", sorted(SHELLS))
def test_the_wrapper_stops_a_command_over_its_time(name, tmp_path):
    folder = sh_dir(tmp_path, name)
    env = dict(os.environ, PATH=f"{folder}:{os.environ['PATH']}")
    started = time.monotonic()
    done = subprocess.run(
        [*shell(name), str(SCRIPTS_DIR / "wrapper.sh"), "1", "probe", "sleep 30"],
        capture_output=True,
        text=True,
        env=env,
        timeout=20,
    )
    assert time.monotonic() - started < 10
    assert done.returncode in (143, 137) and "edgeq-watchdog: probe timed out after 1 s" in done.stderr


# --------------------------------------------------------------------------- deploy.sh, driven directly


def model_bytes(seed: int, size: int = 200_000) -> bytes:
    return b"\x1c\x00\x00\x00TFL3" + random.Random(seed).randbytes(size)


class Dialogue:
    """One run of deploy.sh with edgeq's side of the dialogue played by the test."""

    def __init__(self, name: str, action: str, folder: Path, *, idle_s: int = 30, lock_wait_s: int | None = None):
        args = [action, str(folder), sys.executable, "tok" + str(random.randrange(10**6)), str(idle_s)]
        if lock_wait_s is not None:
            args.append(str(lock_wait_s))
        self.popen = subprocess.Popen(
            [*shell(name), str(SCRIPTS_DIR / "deploy.sh"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.buffer = b""

    def line(self, timeout_s: float = 20.0) -> str:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.popen.stdout], [], [], max(deadline - time.monotonic(), 0))
            assert ready, f"no line within {timeout_s} s (so far {self.buffer!r})"
            chunk = os.read(self.popen.stdout.fileno(), 65536)
            if not chunk:
                raise EOFError(self.popen.stderr.read().decode())
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self.buffer += os.read(self.popen.stdout.fileno(), 65536)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def send(self, *lines: str, data: bytes = b"") -> None:
        self.popen.stdin.write("".join(line + "\n" for line in lines).encode() + data)
        self.popen.stdin.flush()

    def state(self) -> dict:
        """The state report up to ``ready`` (notes collected under "notes")."""
        found: dict = {"notes": []}
        line = self.line()
        while line.startswith("note "):
            found["notes"].append(line[5:])
            line = self.line()
        assert line == "edgeq-state 1"
        while True:
            kind, _, rest = self.line().partition(" ")
            if kind == "absent":
                return {"absent": True}
            found[kind] = rest
            if kind == "manifest":
                found["manifest"] = json.loads(self.read(int(rest))) if int(rest) else {}
                return found

    def end(self, timeout_s: float = 20.0) -> int:
        self.popen.stdin.close()
        return self.popen.wait(timeout=timeout_s)


def upload(name: str, folder: Path, data: bytes, *, previous: str | None = None, prune: str = "") -> str:
    sha = hashlib.sha256(data).hexdigest()
    version = sha[:12]
    session = Dialogue(name, "deploy", folder)
    state = session.state()
    assert session.line() == "ready" and state["current"] == (previous or "-")
    session.send(f"upload {version} {sha} {len(data)}", data=data)
    assert session.line() == f"verified {sha}"
    manifest = {"current": version, "history": [{"version": version}]}
    session.send("commit", json.dumps(manifest), prune)
    assert (session.line(), session.line()) == (f"switched {version}", "done")
    assert session.end() == 0
    return version


def on_disk(folder: Path) -> tuple[str, str, str]:
    """(the version `current` names, the sha256 of its file, the version manifest.json names)."""
    version = os.readlink(folder / "current")
    sha = hashlib.sha256((folder / version / "model.tflite").read_bytes()).hexdigest()
    return version, sha, json.loads((folder / "manifest.json").read_text())["current"]


def temporaries(folder: Path) -> list[str]:
    found = [p.name for p in folder.glob(".*") if p.name not in (".incoming", ".lock")]
    return found + [p.name for p in (folder / ".incoming").glob("*")]


@pytest.mark.parametrize("name", sorted(SHELLS))
def test_the_whole_dialogue(name, tmp_path):
    folder = tmp_path / "models" / "m"
    first, second = model_bytes(1), model_bytes(2)
    v1 = upload(name, folder, first)
    assert on_disk(folder) == (v1, hashlib.sha256(first).hexdigest(), v1)
    v2 = upload(name, folder, second, previous=v1, prune=v1)
    assert on_disk(folder) == (v2, hashlib.sha256(second).hexdigest(), v2) and not (folder / v1).exists()
    assert temporaries(folder) == []

    status = Dialogue(name, "status", folder)
    assert status.state()["versions"] == v2 and status.line() == f"verified {hashlib.sha256(second).hexdigest()}"
    assert status.end() == 0

    again = Dialogue(name, "deploy", folder)  # an active version is re-checked, then skipped
    again.state()
    again.line()
    again.send(f"activate {v2} {hashlib.sha256(second).hexdigest()}")
    assert again.line().startswith("verified ")
    again.send("skip")
    assert again.end() == 0

    gone = Dialogue(name, "remove", folder)
    gone.state()
    assert gone.line() == "ready"
    gone.send("all")
    assert gone.line() == "done" and gone.end() == 0 and not folder.exists()


@pytest.mark.parametrize("name", sorted(SHELLS))
def test_a_damaged_upload_is_refused_and_nothing_changes(name, tmp_path):
    folder = tmp_path / "m"
    v1 = upload(name, folder, model_bytes(1))
    data = model_bytes(3)
    session = Dialogue(name, "deploy", folder)
    session.state()
    session.line()
    session.send(f"upload {hashlib.sha256(data).hexdigest()[:12]} {'0' * 64} {len(data)}", data=data)
    assert session.line().startswith("error the device computed sha256")
    assert session.end() == 3
    assert on_disk(folder)[::2] == (v1, v1) and temporaries(folder) == []


@pytest.mark.parametrize("name", sorted(SHELLS))
def test_a_silent_edgeq_is_given_up_and_the_lock_released(name, tmp_path):
    folder = tmp_path / "m"
    v1 = upload(name, folder, model_bytes(1))
    for stall_in_upload in (False, True):
        session = Dialogue(name, "deploy", folder, idle_s=2)
        session.state()
        session.line()
        started = time.monotonic()
        if stall_in_upload:  # half the bytes, then silence (stdin stays open: the link is silent, not closed)
            data = model_bytes(4)
            sha = hashlib.sha256(data).hexdigest()
            session.send(f"upload {sha[:12]} {sha} {len(data)}", data=data[: len(data) // 2])
        assert session.popen.wait(timeout=15) == 143
        assert 2 <= time.monotonic() - started < 2 + 5
        with open(folder / ".lock", "a") as handle:  # free
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert temporaries(folder) == [] and on_disk(folder)[::2] == (v1, v1)
        session.popen.stdin.close()


@pytest.mark.parametrize("name", sorted(SHELLS))
def test_a_switch_stopped_before_it_was_recorded_is_recorded_by_the_next_command(name, tmp_path):
    folder = tmp_path / "m"
    v1 = upload(name, folder, model_bytes(1))
    v2 = upload(name, folder, model_bytes(2), previous=v1)
    # as a SIGKILL between the switch and the rename of the journal leaves it: current -> v2, manifest names v1
    (folder / "manifest.json").write_text(json.dumps({"current": v1}) + "\n")
    (folder / f".manifest.{v2}.pending").write_text(json.dumps({"current": v2}) + "\n")
    status = Dialogue(name, "status", folder)  # takes no lock: reads the journal
    assert status.state()["manifest"]["current"] == v2
    status.end()
    session = Dialogue(name, "deploy", folder)
    state = session.state()
    assert state["manifest"]["current"] == v2 and "not been recorded" in state["notes"][0]
    session.line()
    session.send("quit")
    assert session.end() == 0
    assert on_disk(folder)[::2] == (v2, v2) and temporaries(folder) == []
    # a journal of a switch that did not happen is dropped
    (folder / f".manifest.{v1}.pending").write_text(json.dumps({"current": v1}) + "\n")
    session = Dialogue(name, "rollback", folder)
    assert session.state()["notes"] == []
    session.line()
    session.send("quit")
    session.end()
    assert on_disk(folder)[::2] == (v2, v2) and temporaries(folder) == []


@pytest.mark.parametrize("name", sorted(SHELLS))
def test_the_lock_names_its_holder_and_a_dead_holder_frees_it(name, tmp_path):
    folder = tmp_path / "m"
    upload(name, folder, model_bytes(1))
    # another edgeq holds the lock; its record says who and since when
    holder = subprocess.Popen(
        ["flock", str(folder / ".lock"), "sleep", "60"], stdout=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until flock holds it
            with open(folder / ".lock", "a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(handle, fcntl.LOCK_UN)
                except BlockingIOError:
                    break
            time.sleep(0.02)
        (folder / ".lock").write_text(f"{holder.pid} {int(time.time()) - 7} 2030-01-01T00:00:00Z deploy 10.1.2.3\n")
        refused = Dialogue(name, "deploy", folder, lock_wait_s=1)
        line = refused.line()
        assert (
            line.startswith("error another edgeq deploy from 10.1.2.3 (pid ") and "since 2030-01-01T00:00:00Z" in line
        )
        assert refused.end() == 3
    finally:
        os.killpg(holder.pid, 9)
        holder.wait()
    # the kernel released the dead holder's lock: the next command takes it at once
    started = time.monotonic()
    session = Dialogue(name, "deploy", folder, lock_wait_s=30)
    session.state()
    assert session.line() == "ready" and time.monotonic() - started < 5
    session.send("quit")
    assert session.end() == 0
    record = (folder / ".lock").read_text().split()
    assert record[3] == "deploy" and record[4] == "this-machine" and int(record[0]) > 0


# --------------------------------------------------------------------------- whole deploys through LocalConnection


@pytest.mark.parametrize(
    ("name", "only_busybox"), [("dash", False), ("busybox", False), ("busybox", True)], ids=["dash", "ash", "busybox"]
)
def test_deploys_through_the_local_connection(name, only_busybox, tmp_path, monkeypatch):
    folder = sh_dir(tmp_path, name, only_busybox=only_busybox)
    monkeypatch.setenv("PATH", str(folder) if only_busybox else f"{folder}:{os.environ['PATH']}")
    home = tmp_path / "home"
    home.mkdir()
    dev = Device(name="local", address="localhost", user="me", transport="local", python=sys.executable)
    models = []
    for seed in (1, 2):
        path = tmp_path / f"m{seed}.tflite"
        path.write_bytes(model_bytes(seed))
        models.append(prepare_model(path, "m"))
    with LocalConnection(home=home, options=options(), shell=str(folder / "sh")) as conn:
        for model in models:
            result = deploy_to_device(conn, dev, model)
            assert (result.status, result.version) == (DeviceStatus.OK, model.version), result
        assert status_of_device(conn, dev, "m").state.intact is True
        assert rollback_device(conn, dev, "m").version == models[0].version
        assert deploy_to_device(conn, dev, models[0]).status is DeviceStatus.UNCHANGED
    model_folder = home / "edgeq" / "models" / "m"
    assert on_disk(model_folder) == (models[0].version, models[0].sha256, models[0].version)
    assert temporaries(model_folder) == []
    assert sorted(p.name.split("-")[0] for p in (home / "edgeq" / "scripts").iterdir()) == ["deploy", "wrapper"]


@pytest.mark.parametrize("tool", ["openssl", "sha256sum", "python", "broken-openssl"])
def test_the_device_hashes_with_what_it_has(tool, tmp_path, monkeypatch):
    """OpenSSL first (the CPU's SHA instructions), else sha256sum, else the device's Python; bad output is not trusted."""
    folder = sh_dir(tmp_path, "busybox", only_busybox=True)  # a BusyBox device: sha256sum, no openssl
    if tool == "openssl":
        if shutil.which("openssl") is None:
            pytest.skip("openssl is not installed")
        (folder / "openssl").symlink_to(shutil.which("openssl"))
    elif tool == "python":
        (folder / "sha256sum").unlink()
    elif tool == "broken-openssl":  # prints something that is not a digest: the next tool decides
        fake = tmp_path / "fake-openssl"
        fake.write_text(f"#!{folder}/sh\necho 'SHA2-256(stdin)= nonsense'\n")
        fake.chmod(0o755)
        (folder / "openssl").symlink_to(fake)
    trace = tmp_path / "hashed-by"
    for name in ("openssl", "sha256sum"):
        if (folder / name).exists():  # leave a trace of each call, then run the real tool
            real = os.path.realpath(folder / name)
            run = f"{real} {name}" if os.path.basename(real) == "busybox" else real  # an applet is named by argv
            (folder / name).unlink()
            (folder / name).write_text(f'#!{folder}/sh\necho {name} >> {trace}\nexec {run} "$@"\n')
            (folder / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))
    home = tmp_path / "home"
    home.mkdir()
    dev = Device(name="local", address="localhost", user="me", transport="local", python=sys.executable)
    path = tmp_path / "m.tflite"
    path.write_bytes(model_bytes(7))
    model = prepare_model(path, "m")
    with LocalConnection(home=home, options=options(), shell=str(folder / "sh")) as conn:
        assert deploy_to_device(conn, dev, model).status is DeviceStatus.OK
        assert status_of_device(conn, dev, "m").state.intact is True
    assert on_disk(home / "edgeq" / "models" / "m") == (model.version, model.sha256, model.version)
    used = trace.read_text().split() if trace.exists() else []
    expected = {
        "openssl": {"openssl"},
        "sha256sum": {"sha256sum"},
        "python": set(),
        "broken-openssl": {"openssl", "sha256sum"},
    }
    assert set(used) == expected[tool], used


@pytest.mark.parametrize(
    ("name", "only_busybox"), [("dash", False), ("busybox", False), ("busybox", True)], ids=["dash", "ash", "busybox"]
)
def test_detect_and_put_under_each_shell(name, only_busybox, tmp_path, monkeypatch):
    folder = sh_dir(tmp_path, name, only_busybox=only_busybox)
    monkeypatch.setenv("PATH", str(folder) if only_busybox else f"{folder}:{os.environ['PATH']}")
    home = tmp_path / "home"
    home.mkdir()
    dev = Device(name="local", address="localhost", user="me", transport="local", python=sys.executable)
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(300_000))
    with LocalConnection(home=home, options=options(), shell=str(folder / "sh")) as conn:
        facts = read_facts(conn, dev)
        assert facts.kernel_arch == os.uname().machine and facts.python == sys.executable and facts.cores
        assert conn.put(source, "a dir/payload.bin") == 300_000
    assert (home / "a dir" / "payload.bin").read_bytes() == source.read_bytes()
    assert [p.name for p in (home / "a dir").iterdir()] == ["payload.bin"]


def test_missing_device_files_are_uploaded_once_and_the_command_run_again(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    extra = remote.DeviceFile.at("edgeq/extra", "data-1.txt", b"payload\n")
    with LocalConnection(home=home, options=options()) as conn:
        first = conn.run(f"cat {extra.path}; cat", stdin=b"and stdin\n", label="show", requires=(extra,))
        assert first.stdout == "payload\nand stdin\n"
        installed = {p: p.stat().st_mtime_ns for p in (home / "edgeq").rglob("*") if p.is_file()}
        again = conn.run(f"cat {extra.path}", label="show", requires=(extra,))
        assert again.stdout == "payload\n"
        assert {p: p.stat().st_mtime_ns for p in (home / "edgeq").rglob("*") if p.is_file()} == installed
        process = conn.start("true", requires=(remote.DeviceFile.at("edgeq/extra", "data-2.txt", b"x"),))
        with pytest.raises(DeviceFilesMissing, match="data-2.txt"):
            process.wait()
        process.close()
