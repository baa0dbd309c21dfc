"""The edgeq.fleet Ansible collection: built by ``edgeq ansible build``, installed by ansible-galaxy, run by real
``ansible-playbook`` against real OpenSSH devices on loopback; and ``ansible-test sanity`` on the built collection.

One implementation: what Ansible deploys, ``edgeq status`` sees and ``edgeq rollback`` rolls back, and the other
way round; every check of the device's state is made on its disk, not through either tool.

Timing (2 cores): the file takes about 55 s warm. SLOW WHEN COLD: ``test_ansible_test_sanity`` takes 12-15 s warm
but 1.5-2 minutes on a cold machine, where ansible-test creates its sanity virtual environments (pylint,
validate-modules, ...) from PyPI; they are cached under ``~/.cache/edgeq-tests/ansible-test`` afterwards.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from _models import digits_classifier, int8_model, model_dir  # noqa: F401 - session fixtures (a real int8 model)
from _remote import active_on_disk, leftovers, model_folder, sha256_of, write_model
from click.testing import CliRunner
from test_bench import device_pythons  # noqa: F401 - session fixture: device Pythons with a TFLite runtime

import edgeq.cli.ansible  # registers `edgeq ansible` (until edgeq.cli lists it in COMMAND_MODULES)
from edgeq import __version__
from edgeq.ansible import collection_tarball_name, render_playbook, rollout
from edgeq.ansible.build import find_ansible_program
from edgeq.cli import cli
from edgeq.errors import EdgeqError

NAME = "digits"
ANSIBLE_TEST_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache")
    / "edgeq-tests"
    / "ansible-test"
)
# ansible-test bootstraps pip in its sanity venvs with get-pip.py from ci-files.testing.ansible.com; where only
# package registries are reachable, this stand-in in its cache does the same with ensurepip and PyPI
GET_PIP_STAND_IN = '''\
"""Stand-in for get-pip.py (written by edgeq's tests): pip from ensurepip, then the pinned pip from PyPI."""
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])  # in-process it would ignore pip.conf
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
'''


def _program(name: str) -> str:
    try:
        return find_ansible_program(name)
    except EdgeqError as exc:
        pytest.skip(str(exc))


def edgeq(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output, result.output
    return result


# --------------------------------------------------------------------------- the collection, built and installed once


@pytest.fixture(scope="session")
def collection(tmp_path_factory) -> dict[str, Path]:
    """``edgeq ansible build`` into a temporary folder, installed there by ``ansible-galaxy collection install``."""
    galaxy = _program("ansible-galaxy")
    folder = tmp_path_factory.mktemp("collection")
    built = edgeq("ansible", "build", "-o", folder)
    assert built.exit_code == 0, built.output
    tarball = Path(built.stdout.strip())
    assert tarball == folder / collection_tarball_name() and tarball.name == f"edgeq-fleet-{__version__}.tar.gz"
    installed = folder / "collections"
    subprocess.run(
        [galaxy, "collection", "install", "-p", str(installed), str(tarball)], check=True, capture_output=True
    )
    root = installed / "ansible_collections" / "edgeq" / "fleet"
    assert (root / "plugins" / "action" / "model.py").is_file()
    return {"tarball": tarball, "path": installed, "root": root}


@pytest.fixture
def ansible_home(isolated_home) -> Path:
    """HOME of the person running Ansible: empty (Ansible's ~/.ansible goes there); known_hosts files are given."""
    return isolated_home


class PlaybookRun:
    """One ``ansible-playbook`` run: its exit status, output, per-task results (default callback, -v, JSON) and recap."""

    TASK_RE = re.compile(r"^TASK \[(?P<task>.+?)\] \*+$")
    RESULT_RE = re.compile(
        r"^(?P<status>ok|changed|fatal|skipping): \[(?P<host>[^\]]+)\](?:: FAILED!)?(?: => (?P<json>.*))?$"
    )
    RECAP_RE = re.compile(r"^(?P<host>\S+)\s+: (?P<counts>(?:\w+=\d+\s*)+)$")

    def __init__(self, done: subprocess.CompletedProcess[str]):
        self.rc = done.returncode
        self.output = done.stdout + done.stderr
        self.results: dict[tuple[str, str], tuple[str, dict]] = {}
        self.recap: dict[str, dict[str, int]] = {}
        task = None
        lines = done.stdout.splitlines()
        index = 0
        while index < len(lines):
            line = lines[index]
            index += 1
            if match := self.TASK_RE.match(line):
                task = match["task"]
            elif (match := self.RESULT_RE.match(line)) and task is not None:
                text = match["json"] or ""
                if text == "{":
                    while index < len(lines) and lines[index] != "}":
                        text += lines[index] + "\n"
                        index += 1
                    text += "}"
                    index += 1
                data = json.loads(text) if text.startswith("{") else {}
                self.results[(task, match["host"])] = (match["status"], data)
            elif (match := self.RECAP_RE.match(line)) and "ok=" in line:
                self.recap[match["host"]] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match["counts"])}

    def result(self, task: str, host: str) -> dict:
        return self.results[(task, host)][1]

    def status(self, task: str, host: str) -> str:
        return self.results[(task, host)][0]


def run_playbook(collection, home: Path, inventory: Path, playbook: str | Path, *args: str) -> PlaybookRun:
    """Real ansible-playbook (the one beside this Python, whose plugins import this edgeq), with the collection."""
    if not isinstance(playbook, Path):
        path = inventory.parent / f"play-{abs(hash(playbook))}.yml"
        path.write_text(playbook)
        playbook = path
    env = dict(
        os.environ,
        HOME=str(home),
        ANSIBLE_COLLECTIONS_PATH=str(collection["path"]),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_GATHERING="explicit",
        ANSIBLE_RETRY_FILES_ENABLED="false",
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        ANSIBLE_DEPRECATION_WARNINGS="false",
    )
    env.pop("SSH_AUTH_SOCK", None)
    done = subprocess.run(
        [_program("ansible-playbook"), "-v", "-i", str(inventory), str(playbook), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=inventory.parent,
    )
    run = PlaybookRun(done)
    assert "Traceback" not in run.output, run.output
    return run


def host_vars(device, **extra) -> dict:
    values = {
        "ansible_host": device.host,
        "ansible_port": device.port,
        "ansible_user": device.user,
        "ansible_ssh_private_key_file": str(device.key_path),
    }
    values.update(extra)
    return values


def write_inventory(path: Path, hosts: dict[str, dict]) -> Path:
    path.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    return path


def trust(folder: Path, *devices) -> Path:
    """A known_hosts file with the devices' host keys (the modules' known_hosts option, edgeq's --known-hosts)."""
    known = folder / "edge_known_hosts"
    with known.open("a") as handle:
        handle.writelines(d.known_hosts_line() + "\n" for d in devices)
    return known


def play(tasks: str, known_hosts: Path, *, extra: str = "") -> str:
    """A playbook with one play; known_hosts (and ``extra`` options) for every edgeq.fleet module: module_defaults."""
    defaults = f"      known_hosts: {known_hosts}\n" + "".join(f"      {line}\n" for line in extra.splitlines())
    head = "- hosts: all\n  gather_facts: false\n  module_defaults:\n    group/edgeq.fleet.fleet:\n" + defaults
    return head + "  tasks:\n" + tasks


def edgeq_status(device, known_hosts: Path) -> dict:
    """``edgeq status`` of NAME on the device, through edgeq's CLI: its JSON row."""
    config = Path(known_hosts).parent / f"ssh_config.{device.name}"
    config.write_text(f"Host *\n  IdentityFile {device.key_path}\n")
    result = edgeq(
        "status", "--name", NAME, "--host", device.spec, "--known-hosts", known_hosts, "--ssh-config", config, "--json"
    )
    (row,) = json.loads(result.stdout)["results"]
    return {"exit_code": result.exit_code, **row}


@pytest.fixture
def models(tmp_path):
    """Three versions of a model (a, b, c): files that pass for a .tflite."""
    folder = tmp_path / "models"
    folder.mkdir()
    return {key: write_model(folder / f"{key}.tflite", 30_000 + 1000 * seed, seed) for seed, key in enumerate("abc")}


def version_of(path: Path) -> str:
    return sha256_of(path)[:12]


# --------------------------------------------------------------------------- deploy, idempotence, check mode


DEPLOY = """\
    - name: deploy
      edgeq.fleet.model:
        path: "{{ model }}"
        name: digits
      register: deployed
"""


def test_deploy_is_what_edgeq_status_sees_idempotent_and_check_mode_changes_nothing(
    collection, start_device, ansible_home, tmp_path, models
):
    devices = [start_device(f"a{i}") for i in range(2)]
    known = trust(tmp_path, *devices)
    inventory = write_inventory(tmp_path / "fleet.yml", {d.name: host_vars(d) for d in devices})
    a, b = models["a"], models["b"]

    first = run_playbook(collection, ansible_home, inventory, play(DEPLOY, known), "-e", f"model={a}")
    assert first.rc == 0, first.output
    for device in devices:
        result = first.result("deploy", device.name)
        assert first.status("deploy", device.name) == "changed"
        assert (result["status"], result["version"], result["previous"], result["bytes_sent"]) == (
            "ok",
            version_of(a),
            None,
            a.stat().st_size,
        )
        assert result["device"] == f"{device.user}@{device.host}:{device.port}" and result["attempts"] == 1
        # edgeq's own status sees Ansible's deploy: the same version, intact, recorded as edgeq records it
        status = edgeq_status(device, known)
        assert status["exit_code"] == 0 and status["status"] == "ok" and status["version"] == version_of(a)
        assert status["state"]["intact"] is True
        (entry,) = status["state"]["versions"]
        assert (entry["sha256"], entry["source"], entry["active"]) == (sha256_of(a), "a.tflite", True)
        assert active_on_disk(device, NAME) == (version_of(a), sha256_of(a)) and leftovers(device, NAME) == []

    again = run_playbook(collection, ansible_home, inventory, play(DEPLOY, known), "-e", f"model={a}")
    assert again.rc == 0 and all(again.recap[d.name]["changed"] == 0 for d in devices), again.output
    assert again.result("deploy", devices[0].name)["status"] == "unchanged"
    assert again.result("deploy", devices[0].name)["bytes_sent"] == 0

    manifests = {d.name: (model_folder(d, NAME) / "manifest.json").read_bytes() for d in devices}
    check = run_playbook(
        collection, ansible_home, inventory, play(DEPLOY, known), "-e", f"model={b}", "--check", "--diff"
    )
    assert check.rc == 0, check.output
    for device in devices:
        result = check.result("deploy", device.name)
        assert check.status("deploy", device.name) == "changed"
        assert (result["version"], result["previous"], result["bytes_sent"], result["bytes_to_send"]) == (
            version_of(b),
            version_of(a),
            0,
            b.stat().st_size,
        )
        assert f"active version: {version_of(a)}" in check.output and f"active version: {version_of(b)}" in check.output
        # nothing changed on the device: the same active file, no new version folder, the same manifest
        assert active_on_disk(device, NAME) == (version_of(a), sha256_of(a))
        assert not (model_folder(device, NAME) / version_of(b)).exists()
        assert (model_folder(device, NAME) / "manifest.json").read_bytes() == manifests[device.name]
    # check mode of an unchanged deploy, and of a rollback: what edgeq would choose
    unchanged = run_playbook(collection, ansible_home, inventory, play(DEPLOY, known), "-e", f"model={a}", "--check")
    assert unchanged.rc == 0 and unchanged.recap[devices[0].name]["changed"] == 0, unchanged.output


# --------------------------------------------------------------------------- either tool rolls back the other's deploy


def test_either_tool_rolls_back_the_others_deploy_and_model_info_sees_both(
    collection, start_device, ansible_home, tmp_path, models
):
    device = start_device("rb")
    known = trust(tmp_path, device)
    inventory = write_inventory(tmp_path / "one.yml", {device.name: host_vars(device)})
    a, b, c = (models[k] for k in "abc")
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  IdentityFile {device.key_path}\n")
    common = ["--host", device.spec, "--known-hosts", known, "--ssh-config", config, "--retries", 0]

    for model in (a, b):  # edgeq deploys a, then b
        assert edgeq("deploy", model, "--name", NAME, *common).exit_code == 0
    rollback = """\
    - name: rollback
      edgeq.fleet.model:
        name: digits
        state: rollback
      register: back
"""
    checked = run_playbook(collection, ansible_home, inventory, play(rollback, known), "--check")
    assert checked.rc == 0 and checked.result("rollback", device.name)["version"] == version_of(a), checked.output
    assert active_on_disk(device, NAME)[0] == version_of(b)  # check mode: still b

    back = run_playbook(collection, ansible_home, inventory, play(rollback, known))  # Ansible rolls back edgeq's deploy
    assert back.rc == 0, back.output
    result = back.result("rollback", device.name)
    assert (back.status("rollback", device.name), result["version"], result["previous"]) == (
        "changed",
        version_of(a),
        version_of(b),
    )
    assert active_on_disk(device, NAME) == (version_of(a), sha256_of(a))

    deployed = run_playbook(collection, ansible_home, inventory, play(DEPLOY, known), "-e", f"model={c}")
    assert deployed.rc == 0, deployed.output
    undo = edgeq("rollback", "--name", NAME, *common, "--json")  # edgeq rolls back Ansible's deploy
    assert undo.exit_code == 0, undo.output
    assert json.loads(undo.stdout)["results"][0]["version"] == version_of(a)
    assert active_on_disk(device, NAME) == (version_of(a), sha256_of(a)) and leftovers(device, NAME) == []

    info_play = """\
    - name: info
      edgeq.fleet.model_info:
        name: digits
    - name: info of nothing
      edgeq.fleet.model_info:
        name: nothing-here
"""
    info = run_playbook(collection, ansible_home, inventory, play(info_play, known))
    assert info.rc == 0, info.output
    state = info.result("info", device.name)
    assert (state["exists"], state["version"], state["intact"], state["changed"]) == (True, version_of(a), True, False)
    assert {v["version"] for v in state["versions"]} == {version_of(m) for m in (a, b, c)}
    assert [(e["action"], e["version"]) for e in state["history"]] == [
        ("deploy", version_of(a)),
        ("deploy", version_of(b)),
        ("rollback", version_of(a)),
        ("deploy", version_of(c)),
        ("rollback", version_of(a)),
    ]
    assert info.result("info of nothing", device.name)["exists"] is False

    # a modified active file: model_info reports it, as a fact rather than a failure
    (model_folder(device, NAME) / version_of(a) / "model.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3 changed")
    damaged = run_playbook(collection, ansible_home, inventory, play(info_play, known))
    assert damaged.rc == 0 and damaged.result("info", device.name)["intact"] is False, damaged.output
    assert f"the sha256 of {version_of(a)}/model.tflite is now" in damaged.result("info", device.name)["detail"]

    remove = """\
    - name: remove one
      edgeq.fleet.model:
        name: digits
        state: absent
        versions: ["{{ old }}"]
    - name: remove all
      edgeq.fleet.model:
        name: digits
        state: absent
    - name: remove again
      edgeq.fleet.model:
        name: digits
        state: absent
"""
    removed = run_playbook(collection, ansible_home, inventory, play(remove, known), "-e", f"old={version_of(b)}")
    assert removed.rc == 0, removed.output
    assert removed.result("remove one", device.name)["removed"] == [version_of(b)]
    assert removed.status("remove all", device.name) == "changed"
    assert removed.status("remove again", device.name) == "ok"  # already absent: unchanged
    assert not model_folder(device, NAME).exists()


# --------------------------------------------------------------------------- failures, arguments, host keys


def test_host_keys_follow_edgeqs_policy_and_failures_carry_kind_and_code(
    collection, start_device, ansible_home, tmp_path, models
):
    device = start_device("hk")
    empty = tmp_path / "edge_known_hosts"
    empty.touch()
    # the port through a template: Ansible resolves it, and edgeq takes it from the connection plugin
    hosts = {device.name: host_vars(device, ansible_port="{{ device_port }}", device_port=device.port)}
    inventory = write_inventory(tmp_path / "one.yml", hosts)
    playbook = play(DEPLOY, empty)
    refused = run_playbook(collection, ansible_home, inventory, playbook, "-e", f"model={models['a']}")
    assert refused.rc != 0 and refused.status("deploy", device.name) == "fatal", refused.output
    failure = refused.result("deploy", device.name)
    assert (failure["kind"], failure["code"]) == ("host-key", 9)
    assert device.fingerprint in failure["msg"] and "\n" not in failure["msg"] and failure["hint"]
    assert not model_folder(device, NAME).exists()

    trusting = play(DEPLOY, empty, extra="trust_new_hosts: true")
    trusted = run_playbook(collection, ansible_home, inventory, trusting, "-e", f"model={models['a']}")
    assert trusted.rc == 0, trusted.output
    assert "trusted the new host key" in trusted.output and device.fingerprint in trusted.output
    assert empty.read_text().strip() == device.known_hosts_line()
    assert active_on_disk(device, NAME)[0] == version_of(models["a"])

    device.server.stop()  # down: unreachable after edgeq's retries, as edgeq reports it
    down = run_playbook(
        collection,
        ansible_home,
        inventory,
        play(DEPLOY, empty, extra="retries: 0"),
        "-e",
        f"model={models['b']}",
    )
    failure = down.result("deploy", device.name)
    assert (down.rc, failure["kind"], failure["code"]) == (2, "unreachable", 7), down.output


BAD_ARGUMENTS = """\
    - name: bogus state
      edgeq.fleet.model: {name: digits, state: bogus}
      ignore_errors: true
    - name: missing path
      edgeq.fleet.model: {name: digits}
      ignore_errors: true
    - name: version without rollback
      edgeq.fleet.model: {path: model.tflite, version: abcd}
      ignore_errors: true
    - name: bad keep
      edgeq.fleet.model: {path: model.tflite, keep: 0}
      ignore_errors: true
    - name: unknown option
      edgeq.fleet.model_info: {name: digits, colour: blue}
      ignore_errors: true
    - name: name and path
      edgeq.fleet.probe: {name: digits, path: model.tflite}
      ignore_errors: true
    - name: bad version
      edgeq.fleet.model: {name: digits, state: rollback, version: "xyz!"}
      ignore_errors: true
    - name: not a model
      edgeq.fleet.model: {path: "{{ playbook_dir }}/play.yml"}
      ignore_errors: true
"""


def test_bad_arguments_fail_as_ansible_modules_do_with_a_clear_msg(collection, ansible_home, tmp_path):
    inventory = write_inventory(
        tmp_path / "local.yml", {"here": {"ansible_connection": "local", "edgeq_remote_dir": str(tmp_path / "dev")}}
    )
    (tmp_path / "play.yml").write_text("not a model\n")
    run = run_playbook(collection, ansible_home, inventory, play(BAD_ARGUMENTS, tmp_path / "unused"))
    assert run.rc == 0, run.output  # every failure ignored
    expected = {
        "bogus state": "value of state must be one of: present, rollback, absent, got: bogus",
        "missing path": "state is present but all of the following are missing: path",
        "version without rollback": "version is used with state=rollback only",
        "bad keep": "keep must be at least 1, got 0",
        "unknown option": "Unsupported parameters for (edgeq.fleet.model_info) module: colour",
        "name and path": "parameters are mutually exclusive: name|path",
        "bad version": "'xyz!' is not a version",
        "not a model": "is not a TFLite model (no TFL3 identifier)",
    }
    for task, text in expected.items():
        status, result = run.results[(task, "here")]
        assert status == "fatal", (task, result)
        assert text in result["msg"], (task, result["msg"])
    assert run.result("not a model", "here")["kind"] == "model" and run.result("not a model", "here")["code"] == 5
    assert not (tmp_path / "dev").exists()  # nothing reached a device


def test_a_local_host_is_this_machine_and_relative_paths_are_found_as_copy_finds_them(
    collection, ansible_home, tmp_path, models
):
    remote = tmp_path / "device-dir"
    inventory = write_inventory(
        tmp_path / "local.yml", {"here": {"ansible_connection": "local", "edgeq_remote_dir": str(remote)}}
    )
    (tmp_path / "files").mkdir()
    shutil.copy(models["a"], tmp_path / "files" / "relative.tflite")  # files/ beside the playbook
    run = run_playbook(
        collection, ansible_home, inventory, play(DEPLOY, tmp_path / "unused"), "-e", "model=relative.tflite"
    )
    assert run.rc == 0 and run.result("deploy", "here")["device"] == "local", run.output
    assert os.readlink(remote / "models" / NAME / "current") == version_of(models["a"])
    manifest = json.loads((remote / "models" / NAME / "manifest.json").read_text())
    assert manifest["versions"][version_of(models["a"])]["source"] == "relative.tflite"


# --------------------------------------------------------------------------- the probe, and the generated playbook


def test_probe_returns_the_figures_as_facts(
    collection, start_device, ansible_home, tmp_path, int8_model, device_pythons
):
    device = start_device("pr")
    known = trust(tmp_path, device)
    python = str(device_pythons["ai-edge-litert"])
    inventory = write_inventory(tmp_path / "one.yml", {device.name: host_vars(device, edgeq_python=python)})
    tasks = (
        DEPLOY
        + """\
    - name: probe
      edgeq.fleet.probe: {name: digits, runs: 5, min_time: 0.05, warmup_time: 0}
    - name: fact
      ansible.builtin.debug: {var: edgeq_probe.latency.p50_ms}
    - name: probe a file
      edgeq.fleet.probe: {path: "{{ model }}", runs: 3, min_time: 0, warmup_time: 0, threads: 1}
"""
    )
    run = run_playbook(collection, ansible_home, inventory, play(tasks, known), "-e", f"model={int8_model}")
    assert run.rc == 0, run.output
    probe = run.result("probe", device.name)["probe"]
    assert probe["version"] == version_of(int8_model) and probe["name"] == NAME
    assert probe["runtime"] == "ai-edge-litert" and probe["latency"]["count"] >= 5
    assert 0 < probe["latency"]["min_ms"] <= probe["latency"]["p50_ms"] <= probe["latency"]["max_ms"]
    assert probe["path"].endswith(f"models/{NAME}/{version_of(int8_model)}/model.tflite")
    assert "latencies_ms" not in probe and run.result("probe", device.name)["changed"] is False
    assert run.result("fact", device.name)["edgeq_probe.latency.p50_ms"] == probe["latency"]["p50_ms"]
    from_file = run.result("probe a file", device.name)["probe"]
    assert from_file["name"] == f"probe-{int8_model.stem}" and from_file["threads"] == 1
    assert active_on_disk(device, NAME)[0] == version_of(int8_model)  # probing a file never switches a deployed model


def test_the_generated_playbook_rolls_back_a_host_whose_health_check_fails(
    collection, start_device, ansible_home, tmp_path, models, int8_model, device_pythons
):
    devices = [start_device(f"r{i}") for i in range(3)]
    known = trust(tmp_path, *devices)
    python = str(device_pythons["ai-edge-litert"])
    old, new = models["a"], int8_model
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  IdentityFile {devices[0].key_path}\n")
    for device in devices:  # the fleet runs version `old`, deployed by edgeq
        assert (
            edgeq(
                "deploy", old, "--name", NAME, "--host", device.spec, "--known-hosts", known, "--ssh-config", config
            ).exit_code
            == 0
        )
    # r1 (second batch) has a latency budget no model meets: its health check fails
    hosts = {d.name: host_vars(d, edgeq_python=python) for d in devices}
    hosts["r1"]["edgeq_max_latency_ms"] = 0.000001
    inventory = write_inventory(tmp_path / "fleet.yml", hosts)
    written = edgeq(
        "ansible",
        "playbook",
        new,
        "--name",
        NAME,
        "--canary",
        "1",
        "--max-fail",
        "50",
        "--max-latency-ms",
        "1000",
        "--runs",
        "3",
        "--min-time",
        "0",
        "--known-hosts",
        known,
        "-o",
        tmp_path / "rollout.yml",
    )
    assert written.exit_code == 0, written.output
    run = run_playbook(collection, ansible_home, inventory, tmp_path / "rollout.yml")
    assert run.rc == 2, run.output  # a host failed
    assert run.recap["r1"]["failed"] == 1 and run.recap["r1"]["rescued"] == 1, run.recap
    assert run.recap["r0"]["failed"] == 0 and run.recap["r2"]["failed"] == 0, run.recap
    assert f"rolled back to {version_of(old)}" in run.output and "health check failed" in run.output
    assert active_on_disk(devices[1], NAME) == (version_of(old), sha256_of(old))
    for device in (devices[0], devices[2]):
        assert active_on_disk(device, NAME) == (version_of(new), sha256_of(new))
        assert edgeq_status(device, known)["version"] == version_of(new)
    assert [
        e["action"] for e in json.loads((model_folder(devices[1], NAME) / "manifest.json").read_text())["history"]
    ] == [
        "deploy",
        "deploy",
        "rollback",
    ]

    # a canary that fails stops the rollout: the other hosts are not touched
    hosts = {d.name: host_vars(d, edgeq_python=python) for d in devices}
    hosts["r0"]["edgeq_max_latency_ms"] = 0.000001
    canary_inventory = write_inventory(tmp_path / "canary.yml", hosts)
    written = edgeq(
        "ansible",
        "playbook",
        new,
        "--name",
        "second",
        "--runs",
        "3",
        "--min-time",
        "0",
        "--known-hosts",
        known,
        "-o",
        tmp_path / "second.yml",
    )
    assert written.exit_code == 0, written.output
    stopped = run_playbook(collection, ansible_home, canary_inventory, tmp_path / "second.yml")
    assert stopped.rc == 2 and stopped.recap["r0"]["failed"] == 1, stopped.output
    assert "no earlier version to roll back to" in stopped.output
    assert "r1" not in stopped.recap or stopped.recap["r1"]["ok"] == 0, stopped.recap
    assert not model_folder(devices[1], "second").exists() and not model_folder(devices[2], "second").exists()


# --------------------------------------------------------------------------- the playbook as text, the CLI, the boundary


def test_render_playbook(tmp_path, models):
    plan = rollout(models["a"], name="digits", canary="10%", max_fail_percent=20, max_latency_ms=12.5, hosts="kitchen")
    (played,) = yaml.safe_load(render_playbook(plan))
    assert played["hosts"] == "kitchen" and played["serial"] == ["10%", "100%"] and played["max_fail_percentage"] == 20
    assert played["gather_facts"] is False and played["vars"]["edgeq_rollout_model"] == str(models["a"].resolve())
    (block,) = played["tasks"]
    deploy, probe, check = block["block"]
    assert (
        deploy["edgeq.fleet.model"]["state"] == "present"
        and probe["edgeq.fleet.probe"]["name"] == "{{ edgeq_rollout_name }}"
    )
    assert "default(12.5)" in check["ansible.builtin.assert"]["that"][1]
    rollback, fail = block["rescue"]
    assert rollback["edgeq.fleet.model"]["state"] == "rollback" and "ansible.builtin.fail" in fail
    assert yaml.safe_load(render_playbook(rollout(models["a"])))[0]["serial"] == [1, "100%"]


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["--canary", "0"], 2, "at least 1 host"),
        (["--canary", "150%"], 2, "1% to 100%"),
        (["--canary", "x"], 2, "neither a number"),
        (["--max-fail", "101"], 2, "--max-fail"),
        (["--name", "../evil"], 1, "not a safe file name"),
        (["--hosts", "{{ x }}"], 1, "not an Ansible host pattern"),
    ],
)
def test_cli_playbook_refuses_bad_values(args, code, text, models, tmp_path):
    result = edgeq("ansible", "playbook", models["a"], *args, "-o", tmp_path / "p.yml")
    assert result.exit_code == code and text in result.output, result.output
    assert not (tmp_path / "p.yml").exists()


def test_cli_playbook_writes_and_prints(models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    written = edgeq("ansible", "playbook", models["a"], "--name", "digits")
    assert written.exit_code == 0 and (tmp_path / "rollout-digits.yml").is_file()
    printed = edgeq("ansible", "playbook", models["a"], "-o", "-")
    assert printed.exit_code == 0 and yaml.safe_load(printed.stdout)[0]["vars"]["edgeq_rollout_name"] == "a"
    missing = edgeq("ansible", "playbook", tmp_path / "missing.tflite")
    assert missing.exit_code == 5 and "no such file" in missing.output


def test_edgeq_never_imports_ansible():
    """The licence boundary: edgeq (Apache-2.0) runs ansible-galaxy as a program; only the collection imports ansible."""
    code = (
        "import sys, edgeq.ansible, edgeq.ansible.tasks, edgeq.cli.ansible, edgeq.deploy, edgeq.bench; "
        "print(sorted(m for m in sys.modules if m == 'ansible' or m.startswith(('ansible.', 'ansible_collections'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_tarball_holds_the_collection_and_its_licence(collection):
    with tarfile.open(collection["tarball"]) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    assert {"plugins/action/model.py", "plugins/modules/probe.py", "meta/runtime.yml", "README.md", "COPYING"} <= names
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"], info["version"]) == ("edgeq", "fleet", __version__)
    assert info["license"] == ["GPL-3.0-or-later"]
    assert not any("__pycache__" in n for n in names)


# --------------------------------------------------------------------------- ansible-test sanity


def test_ansible_test_sanity(collection, tmp_path):
    """``ansible-test sanity`` on the built collection, every test that runs without docker (~15 s warm; ~2 min cold)."""
    program = _program("ansible-test")
    if not shutil.which("git"):
        pytest.skip("ansible-test needs git to list the collection's files")
    tree = tmp_path / "ansible_collections" / "edgeq" / "fleet"
    shutil.copytree(collection["root"], tree)
    home = ANSIBLE_TEST_CACHE / "home"  # ansible-test keeps its sanity venvs under ~/.ansible/test/venv
    cache = home / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    stand_in = cache / "get_pip_24_2.py"
    if not stand_in.exists() or stand_in.read_text() != GET_PIP_STAND_IN:
        stand_in.write_text(GET_PIP_STAND_IN)
    subprocess.run(["git", "init", "-q", "."], cwd=tree, check=True)
    subprocess.run(["git", "add", "-A"], cwd=tree, check=True)
    env = dict(os.environ, HOME=str(home))
    done = subprocess.run(
        [
            program,
            "sanity",
            "--python",
            f"{sys.version_info.major}.{sys.version_info.minor}",
            "--local",
            "--color",
            "no",
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    for test in (
        "validate-modules",
        "pylint",
        "ansible-doc",
        "import",
        "pep8",
        "yamllint",
        "runtime-metadata",
        "compile",
    ):
        assert f'Running sanity test "{test}"' in output, test
    assert "ERROR" not in output, output[-6000:]
