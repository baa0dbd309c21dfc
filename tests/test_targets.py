"""The target registry: bundled targets, extends, lookup order, strict loading, the CLI, convert --target, packaging."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeq.cli import cli
from edgeq.convert import apply_target
from edgeq.errors import ConversionError, TargetFileError
from edgeq.targets import (
    CPU_FEATURES,
    Target,
    bundled_targets_dir,
    cpu_facts_from_cpuinfo,
    list_targets,
    load_target,
    machine_arch,
)
from edgeq.types import IOType, QuantMode

REPO = Path(__file__).resolve().parents[1]
BUNDLED = bundled_targets_dir()
BUNDLED_NAMES = sorted(p.stem for p in BUNDLED.glob("*.toml"))
REQUIRED_NAMES = {
    "rpi4b", "rpi5", "rpi3b-plus", "rpi-zero-2w", "rpi4b-32bit", "jetson-nano",
    "coral-dev-board", "generic-aarch64-linux", "x86_64-linux", "host",
}  # fmt: skip
TARGET_KEYS = [
    "name", "description", "arch", "cpu", "memory_mb", "power_w", "os", "python", "runtimes", "runtime_versions",
    "default_threads", "delegates", "quantization", "deploy", "source", "origin", "extends", "parents", "auto",
]  # fmt: skip

# A complete, valid standalone target; tests derive bad files from it by editing one line.
MINIMAL = """\
name = "{name}"
description = "a test board"
arch = "aarch64"
memory_mb = 2048
os = "Linux"
python = "python3"
runtimes = ["tflite-runtime"]
default_threads = 2
delegates = ["xnnpack"]

[cpu]
model = "Cortex-A53"
cores = 4
max_clock_mhz = 1200
features = ["neon"]

[quantization]
modes = ["int8", "float32"]
io_types = ["int8", "float32"]
per_channel = true

[deploy]
transport = "ssh"
"""


@pytest.fixture(autouse=True)
def isolated_lookup(tmp_path, monkeypatch):
    """No test sees the real user's targets or EDGEQ_TARGETS_PATH."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("EDGEQ_TARGETS_PATH", raising=False)
    monkeypatch.delenv("EDGEQ_DEBUG", raising=False)


def user_dir(tmp_path: Path) -> Path:
    path = tmp_path / "config" / "edgeq" / "targets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(textwrap.dedent(text))
    return path


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def assert_clean_failure(result, exit_code: int) -> None:
    """A user error: the expected exit code, no traceback, no escaped exception."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


# --------------------------------------------------------------------------- bundled targets


def test_the_issue_targets_are_bundled():
    assert set(BUNDLED_NAMES) >= REQUIRED_NAMES


@pytest.mark.parametrize("name", BUNDLED_NAMES)
def test_every_bundled_target_loads(name):
    target = load_target(name)
    assert target.name == name
    assert target.origin == "bundled"
    assert Path(target.source) == BUNDLED / f"{name}.toml"
    assert target.runtimes and target.quantization.modes and target.quantization.io_types
    if target.arch in CPU_FEATURES:
        assert set(target.cpu.features) <= set(CPU_FEATURES[target.arch])


@pytest.mark.parametrize("name", sorted(set(BUNDLED_NAMES) - {"host"}))
def test_bundled_files_say_where_their_facts_come_from(name):
    text = (BUNDLED / f"{name}.toml").read_text()
    assert text.startswith("#") and "Sources:" in text


def test_raspberry_pi_facts():
    pi4, pi5 = load_target("rpi4b"), load_target("rpi5")
    assert (pi4.arch, pi4.cpu.model, pi4.cpu.soc, pi4.cpu.cores, pi4.cpu.max_clock_mhz) == (
        "aarch64",
        "Cortex-A72",
        "BCM2711",
        4,
        1500,
    )
    assert pi4.cpu.features == ("neon",)  # no dot-product, no fp16 arithmetic on the A72
    assert (pi5.cpu.model, pi5.cpu.soc, pi5.cpu.max_clock_mhz, pi5.cpu.isa) == (
        "Cortex-A76",
        "BCM2712",
        2400,
        "ARMv8.2-A",
    )
    assert {"neon", "asimddp", "asimdhp"} <= set(pi5.cpu.features)
    pi3, zero = load_target("rpi3b-plus"), load_target("rpi-zero-2w")
    assert (pi3.cpu.model, pi3.cpu.soc, pi3.cpu.max_clock_mhz, pi3.memory_mb) == ("Cortex-A53", "BCM2837B0", 1400, 1024)
    assert (zero.cpu.model, zero.cpu.soc, zero.cpu.max_clock_mhz, zero.memory_mb) == ("Cortex-A53", "RP3A0", 1000, 512)
    pi4_32 = load_target("rpi4b-32bit")
    assert pi4_32.arch == "armv7l" and pi4_32.runtimes == ("tflite-runtime",)
    assert "neon" in pi4_32.cpu.features and "asimddp" not in pi4_32.cpu.features
    for pi in (pi4, pi5, pi3, zero, pi4_32):
        assert pi.deploy.transport == "ssh" and pi.deploy.user is None  # no default "pi" user any more


def test_jetson_and_coral_facts():
    nano = load_target("jetson-nano")
    assert (nano.cpu.model, nano.cpu.cores, nano.cpu.max_clock_mhz, nano.memory_mb) == ("Cortex-A57", 4, 1430, 4096)
    assert "edgetpu" not in nano.delegates and "gpu" not in nano.delegates  # the CPU path
    coral = load_target("coral-dev-board")
    assert (coral.cpu.model, coral.cpu.cores, coral.cpu.max_clock_mhz, coral.memory_mb) == ("Cortex-A53", 4, 1500, 1024)
    assert coral.quantization.modes == ("int8",)
    assert coral.quantization.io_types == ("uint8", "int8")
    assert coral.delegates[0] == "edgetpu"
    assert any("innermost" in note for note in coral.quantization.notes)  # the op/tensor constraints are recorded
    assert coral.deploy.user == "mendel"


def test_generic_targets_leave_unknowable_facts_unknown():
    for name, arch in (("generic-aarch64-linux", "aarch64"), ("x86_64-linux", "x86_64")):
        target = load_target(name)
        assert target.arch == arch
        assert target.cpu.cores is None and target.cpu.max_clock_mhz is None and target.memory_mb is None
        assert target.to_dict()["cpu"]["cores"] is None


def test_host_reads_this_machine():
    host = load_target("host")
    assert host.deploy.transport == "local"
    assert host.arch == machine_arch()
    assert host.cpu.cores == os.cpu_count()
    assert host.python == sys.executable
    assert host.default_threads >= 1
    assert {"arch", "cpu.cores", "memory_mb", "python"} <= set(host.auto)
    if host.arch in CPU_FEATURES:
        assert set(host.cpu.features) <= set(CPU_FEATURES[host.arch])


def test_host_os_is_os_release_pretty_name_or_the_kernel(monkeypatch):
    import platform

    from edgeq.machine import host_value

    monkeypatch.setattr(platform, "freedesktop_os_release", lambda: {"NAME": "Debian", "PRETTY_NAME": "Debian 12"})
    assert host_value("os") == "Debian 12"

    def absent() -> dict[str, str]:
        raise OSError("no os-release")  # as on macOS, or a container without /etc/os-release

    monkeypatch.setattr(platform, "freedesktop_os_release", absent)
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(platform, "release", lambda: "6.1.0")
    assert host_value("os") == "Linux 6.1.0"


PI4_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
"""
PI5_CPUINFO = PI4_CPUINFO.replace("0xd08", "0xd0b").replace(
    "fp asimd evtstrm crc32 cpuid",
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
)
X86_CPUINFO = "model name\t: Some CPU @ 3.00GHz\nflags\t\t: fpu sse2 avx2 fma lm\n"


def test_cpuinfo_is_read_into_target_vocabulary():
    assert cpu_facts_from_cpuinfo(PI4_CPUINFO, "aarch64") == ("Cortex-A72", ("neon",))
    assert cpu_facts_from_cpuinfo(PI5_CPUINFO, "aarch64") == ("Cortex-A76", ("neon", "fphp", "asimdhp", "asimddp"))
    assert cpu_facts_from_cpuinfo(X86_CPUINFO, "x86_64") == ("Some CPU @ 3.00GHz", ("sse2", "avx2", "fma"))
    assert machine_arch("arm64") == "aarch64" and machine_arch("AMD64") == "x86_64"


# --------------------------------------------------------------------------- extends and overrides


def test_extends_merges_tables_deeply_and_children_win():
    pi5 = load_target("rpi5")
    assert pi5.extends == "rpi4b"
    assert [Path(p).name for p in pi5.parents] == ["rpi4b.toml", "generic-aarch64-linux.toml"]
    assert pi5.cpu.model == "Cortex-A76"  # own value wins
    assert pi5.runtimes == ("ai-edge-litert", "tflite-runtime", "tensorflow")  # from generic-aarch64-linux
    assert pi5.deploy.transport == "ssh" and pi5.deploy.keep_versions == 3
    pi4_32 = load_target("rpi4b-32bit")
    assert pi4_32.cpu.model == "Cortex-A72" and pi4_32.cpu.cores == 4  # [cpu] merged key by key
    assert pi4_32.cpu.features == ("vfp", "vfpv3", "vfpv4", "neon")  # arrays replaced, not concatenated
    assert pi4_32.description != load_target("rpi4b").description


def test_name_and_description_are_not_inherited(tmp_path):
    folder = tmp_path / "t"
    write(folder, "child", 'name = "child"\nextends = "rpi4b"\nmemory_mb = 8192\n')
    with pytest.raises(TargetFileError) as err:
        load_target(folder / "child.toml")
    assert "missing required key 'description'" in err.value.message


def test_a_user_target_overrides_the_bundled_one_everywhere(tmp_path):
    write(
        user_dir(tmp_path),
        "rpi4b",
        """\
        name = "rpi4b"
        description = "our 8 GB Pi 4s"
        extends = "rpi4b"
        memory_mb = 8192

        [deploy]
        user = "ops"
        """,
    )
    pi4 = load_target("rpi4b")
    assert (pi4.origin, pi4.memory_mb, pi4.description) == ("user", 8192, "our 8 GB Pi 4s")
    assert pi4.cpu.model == "Cortex-A72"  # the rest comes from the bundled rpi4b it extends
    assert Path(pi4.parents[0]) == BUNDLED / "rpi4b.toml"
    assert load_target("rpi5").deploy.user == "ops"  # targets extending rpi4b see the override
    by_name = {t.name: t for t in list_targets()}
    assert by_name["rpi4b"].origin == "user" and by_name["rpi5"].origin == "bundled"
    result = invoke("targets", "list")
    assert result.exit_code == 0, result.output
    assert "user:" in result.output


def test_extending_its_own_name_needs_one_further_down(tmp_path):
    path = write(tmp_path / "t", "lonely", 'extends = "lonely"\n' + MINIMAL.format(name="lonely"))
    with pytest.raises(TargetFileError) as err:
        load_target(path)
    assert "names the target itself" in err.value.message


# --------------------------------------------------------------------------- lookup order


def test_lookup_order_path_then_dir_then_env_then_user_then_bundled(tmp_path, monkeypatch):
    def override(folder: Path, label: str) -> Path:
        return write(folder, "rpi4b", f'name = "rpi4b"\ndescription = "from {label}"\nextends = "rpi4b"\n')

    explicit = override(tmp_path / "explicit", "path")
    targets_dir = tmp_path / "dir"
    override(targets_dir, "targets-dir")
    env_dir = tmp_path / "env"
    override(env_dir, "env")
    user_file = override(user_dir(tmp_path), "user")
    monkeypatch.setenv("EDGEQ_TARGETS_PATH", str(env_dir))

    assert load_target(explicit, targets_dir=targets_dir).description == "from path"
    top = load_target("rpi4b", targets_dir=targets_dir)
    assert (top.description, top.origin) == ("from targets-dir", "targets-dir")
    # Each extends the rpi4b below it: the whole chain down to the bundled family.
    assert [Path(p).parent.name for p in top.parents[:2]] == ["env", "targets"]
    assert Path(top.parents[-2]) == BUNDLED / "rpi4b.toml"
    assert load_target("rpi4b").description == "from env"
    monkeypatch.delenv("EDGEQ_TARGETS_PATH")
    assert load_target("rpi4b").description == "from user"
    user_file.unlink()
    bundled = load_target("rpi4b")
    assert (bundled.origin, bundled.description) == ("bundled", "Raspberry Pi 4 Model B, 64-bit Raspberry Pi OS")


def test_edgeq_targets_path_is_searched_in_order(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    write(first, "board", MINIMAL.format(name="board").replace("a test board", "first"))
    write(second, "board", MINIMAL.format(name="board").replace("a test board", "second"))
    monkeypatch.setenv("EDGEQ_TARGETS_PATH", os.pathsep.join(["", str(first), str(second)]))
    assert load_target("board").description == "first"


def test_search_folders_given_explicitly_must_exist(tmp_path, monkeypatch):
    with pytest.raises(TargetFileError, match="--targets-dir .*no such directory"):
        load_target("rpi4b", targets_dir=tmp_path / "nope")
    monkeypatch.setenv("EDGEQ_TARGETS_PATH", str(tmp_path / "missing"))
    with pytest.raises(TargetFileError, match="EDGEQ_TARGETS_PATH: .*missing: no such directory"):
        load_target("rpi4b")
    result = invoke("targets", "list", "--targets-dir", str(tmp_path / "nope"))
    assert_clean_failure(result, 2)  # click's usage error


def test_unknown_name_suggests_the_closest_and_says_where_it_looked():
    with pytest.raises(TargetFileError) as err:
        load_target("rpi4")
    assert err.value.message == "unknown target 'rpi4'. Did you mean 'rpi4b'?"
    assert "bundled" in err.value.hint and str(BUNDLED) in err.value.hint
    assert err.value.exit_code == 3
    result = invoke("targets", "show", "rpi4")
    assert_clean_failure(result, 3)
    assert "unknown target 'rpi4'. Did you mean 'rpi4b'?" in result.stderr


# --------------------------------------------------------------------------- strict loading: every kind of bad file

BAD_FILES = {
    "unknown-key": (
        {"board": MINIMAL.format(name="board").replace("cores = 4", "coress = 4")},
        "unknown key 'cpu.coress'. Did you mean 'cpu.cores'?",
    ),
    "key-in-wrong-table": (
        {"board": MINIMAL.format(name="board").replace("memory_mb = 2048", "memory_mb = 2048\ncores = 4")},
        "unknown key 'cores'. Did you mean 'cpu.cores'?",
    ),
    "wrong-type": (
        {"board": MINIMAL.format(name="board").replace("cores = 4", 'cores = "four"')},
        "cpu.cores: expected an integer (or 'auto' or 'unknown'), got string 'four'",
    ),
    "boolean-is-not-an-integer": (
        {"board": MINIMAL.format(name="board").replace("default_threads = 2", "default_threads = true")},
        "default_threads: expected an integer (or 'auto'), got boolean true",
    ),
    "missing-field": (
        {"board": MINIMAL.format(name="board").replace("memory_mb = 2048\n", "")},
        "missing required key 'memory_mb'",
    ),
    "missing-table": (
        {"board": MINIMAL.format(name="board").split("[deploy]")[0]},
        "missing required table [deploy]",
    ),
    "unknown-value": (
        {"board": MINIMAL.format(name="board").replace('["tflite-runtime"]', '["tflite_runtime"]')},
        "runtimes: unknown runtime 'tflite_runtime'. Did you mean 'tflite-runtime'?",
    ),
    "feature-of-another-arch": (
        {"board": MINIMAL.format(name="board").replace('features = ["neon"]', 'features = ["neon", "dotprod"]')},
        "cpu.features: 'dotprod' is not a known aarch64 feature. Did you mean 'asimddp'?",
    ),
    "cycle": (
        {
            "a": 'extends = "b"\n' + MINIMAL.format(name="a"),
            "b": 'extends = "a"\n' + MINIMAL.format(name="b"),
        },
        "'extends' makes a cycle: a -> b -> a",
    ),
    "unknown-parent": (
        {"board": 'extends = "rpi9"\n' + MINIMAL.format(name="board")},
        "extends = 'rpi9': unknown target 'rpi9'. Did you mean 'rpi5'?",
    ),
    "toml-syntax": (
        {"board": MINIMAL.format(name="board").replace("cores = 4", "cores = = 4")},
        "invalid TOML: Invalid value (at line 13, column 9)",
    ),
    "name-does-not-match-file": (
        {"board": MINIMAL.format(name="bored")},
        "name = 'bored' does not match the file name 'board.toml'",
    ),
    "auto-on-an-ssh-target": (
        {"board": MINIMAL.format(name="board").replace("cores = 4", 'cores = "auto"')},
        "cpu.cores: 'auto' reads this machine, so it is only allowed when deploy.transport = 'local'",
    ),
    "mode-without-io-type": (
        {
            "board": MINIMAL.format(name="board")
            .replace('modes = ["int8", "float32"]', 'modes = ["int8", "float16"]')
            .replace('io_types = ["int8", "float32"]', 'io_types = ["int8"]')
        },
        "quantization: mode 'float16' needs one of the I/O types float32",
    ),
    "more-threads-than-cores": (
        {"board": MINIMAL.format(name="board").replace("default_threads = 2", "default_threads = 8")},
        "default_threads = 8 is more than cpu.cores = 4",
    ),
    "power-not-a-number": (
        {"board": MINIMAL.format(name="board").replace("default_threads = 2", 'default_threads = 2\npower_w = "6 W"')},
        "power_w: expected a number, got string '6 W'",
    ),
    "negative-power": (
        {"board": MINIMAL.format(name="board").replace("default_threads = 2", "default_threads = 2\npower_w = -2.5")},
        "power_w: must be greater than 0, got -2.5",
    ),
    "runtime-versions-not-a-table": (
        {
            "board": MINIMAL.format(name="board").replace(
                "default_threads = 2", 'default_threads = 2\nruntime_versions = "2.14.0"'
            )
        },
        'runtime_versions: expected a table of runtime = "version"',
    ),
    "unknown-runtime-in-versions": (
        {
            "board": MINIMAL.format(name="board").replace(
                "default_threads = 2", 'default_threads = 2\nruntime_versions = { ai_edge_litert = "2.3.0" }'
            )
        },
        "runtime_versions: unknown runtime 'ai_edge_litert'. Did you mean 'ai-edge-litert'?",
    ),
    "bad-version-string": (
        {
            "board": MINIMAL.format(name="board").replace(
                "default_threads = 2", 'default_threads = 2\nruntime_versions = { tflite-runtime = "2.14-rc1" }'
            )
        },
        "runtime_versions.tflite-runtime: '2.14-rc1' is not a version",
    ),
    "version-not-a-string": (
        {
            "board": MINIMAL.format(name="board").replace(
                "default_threads = 2", "default_threads = 2\nruntime_versions = { tflite-runtime = 2.14 }"
            )
        },
        'runtime_versions.tflite-runtime: expected a version string such as "2.14.0", got float 2.14',
    ),
    "version-of-an-unlisted-runtime": (
        {
            "board": MINIMAL.format(name="board").replace(
                "default_threads = 2", 'default_threads = 2\nruntime_versions = { tensorflow = "2.21.0" }'
            )
        },
        "runtime_versions.tensorflow: 'tensorflow' is not among this target's runtimes (tflite-runtime)",
    ),
}


def _write_bad(tmp_path: Path, kind: str) -> Path:
    files, _ = BAD_FILES[kind]
    folder = tmp_path / "bad"
    for name, text in files.items():
        write(folder, name, text)
    return folder / f"{next(iter(files))}.toml"


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_each_bad_file_has_its_own_message(tmp_path, kind):
    path = _write_bad(tmp_path, kind)
    with pytest.raises(TargetFileError) as err:
        load_target(path, targets_dir=path.parent)
    assert err.value.message.startswith(str(path.parent)), err.value.message  # names the file
    assert BAD_FILES[kind][1] in err.value.message
    # No other kind's message leaks into this one: each gets its own.
    others = [msg for k, (_, msg) in BAD_FILES.items() if k != kind and msg not in BAD_FILES[kind][1]]
    assert not [m for m in others if m in err.value.message]


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_files_exit_3_without_a_traceback(tmp_path, kind):
    path = _write_bad(tmp_path, kind)
    shown = invoke("targets", "show", str(path), "--targets-dir", str(path.parent))
    assert_clean_failure(shown, 3)
    assert shown.stderr.startswith("Error: ") and BAD_FILES[kind][1] in shown.stderr
    validated = invoke("targets", "validate", str(path), "--targets-dir", str(path.parent))
    assert_clean_failure(validated, 3)
    assert BAD_FILES[kind][1] in validated.stdout
    assert "1 of 1 target files are invalid" in validated.stderr


def test_all_problems_of_a_file_are_reported_together(tmp_path):
    text = MINIMAL.format(name="board").replace("cores = 4", 'cores = "four"').replace("transport", "transprt")
    path = write(tmp_path, "board", text)
    with pytest.raises(TargetFileError) as err:
        load_target(path)
    assert "2 problems" in err.value.message
    assert "cpu.cores: expected an integer" in err.value.message
    assert "unknown key 'deploy.transprt'. Did you mean 'deploy.transport'?" in err.value.message


def test_validate_reports_every_file(tmp_path):
    good = write(tmp_path / "mixed", "good", MINIMAL.format(name="good"))
    bad = write(tmp_path / "mixed", "bad", MINIMAL.format(name="bad").replace("cores = 4", "coress = 4"))
    result = invoke("targets", "validate", str(good), str(bad), "--json")
    assert_clean_failure(result, 3)
    payload = json.loads(result.stdout)
    assert payload["schema_version"] == 1 and payload["valid"] is False
    assert [(f["path"], f["valid"], f["name"]) for f in payload["files"]] == [
        (str(good), True, "good"),
        (str(bad), False, None),
    ]
    assert "Did you mean 'cpu.cores'?" in payload["files"][1]["error"]

    folder = invoke("targets", "validate", str(tmp_path / "mixed"))  # a folder: every .toml in it
    assert_clean_failure(folder, 3)
    assert "ok       " in folder.stdout and "invalid  " in folder.stdout

    bad.unlink()
    ok = invoke("targets", "validate", str(good), "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["valid"] is True


def test_validate_checks_the_bundled_targets():
    result = invoke("targets", "validate", str(BUNDLED))
    assert result.exit_code == 0, result.output
    assert result.stdout.count("ok       ") == len(BUNDLED_NAMES)


def test_runtime_versions_and_power_load_and_merge(tmp_path):
    text = (
        MINIMAL.format(name="board")
        .replace(
            "default_threads = 2",
            'default_threads = 2\npower_w = 4\nruntimes = ["tensorflow", "tflite-runtime"]\n'
            'runtime_versions = { tflite-runtime = "2.13.0", tensorflow = "2.16" }',
        )
        .replace('runtimes = ["tflite-runtime"]\n', "", 1)
    )
    write(tmp_path, "board", text)
    board = load_target("board", targets_dir=tmp_path)
    assert board.power_w == 4.0 and isinstance(board.power_w, float)  # an integer is a number of watts too
    assert board.runtime_versions == {"tensorflow": "2.16", "tflite-runtime": "2.13.0"}
    assert list(board.runtime_versions) == ["tensorflow", "tflite-runtime"]  # the order of preference
    assert board.to_dict()["runtime_versions"] == {"tensorflow": "2.16", "tflite-runtime": "2.13.0"}
    assert hash(board)  # still usable as a key: the versions table is left out of the hash

    # a child overrides one runtime's version and keeps the other; dropping a runtime drops its version
    write(
        tmp_path,
        "child",
        'name = "child"\ndescription = "d"\nextends = "board"\nruntime_versions = { tflite-runtime = "2.14.0" }\n',
    )
    child = load_target("child", targets_dir=tmp_path)
    assert child.runtime_versions == {"tensorflow": "2.16", "tflite-runtime": "2.14.0"} and child.power_w == 4.0
    write(
        tmp_path,
        "lean",
        'name = "lean"\ndescription = "d"\nextends = "board"\nruntimes = ["tflite-runtime"]\npower_w = 2.5\n',
    )
    lean = load_target("lean", targets_dir=tmp_path)
    assert lean.runtime_versions == {"tflite-runtime": "2.13.0"} and lean.power_w == 2.5

    plain = load_target(write(tmp_path / "plain", "plain", MINIMAL.format(name="plain")))
    assert plain.power_w is None and plain.runtime_versions == {}  # both optional


@pytest.mark.parametrize("value", ["0", "0.0", "-1", "nan", "inf", "true"])
def test_power_must_be_a_positive_finite_number(tmp_path, value):
    path = write(
        tmp_path,
        "board",
        MINIMAL.format(name="board").replace("default_threads = 2", f"default_threads = 2\npower_w = {value}"),
    )
    with pytest.raises(TargetFileError) as err:
        load_target(path)
    assert "power_w:" in err.value.message


def test_bundled_runtime_versions_and_power():
    for name in ("rpi4b", "rpi5", "rpi3b-plus", "rpi-zero-2w", "rpi4b-32bit", "generic-aarch64-linux", "x86_64-linux"):
        assert load_target(name).runtime_versions.get("tflite-runtime") == "2.14.0", name  # its final release
    assert load_target("rpi4b-32bit").runtime_versions == {"tflite-runtime": "2.14.0"}
    assert load_target("jetson-nano").runtime_versions == {"tflite-runtime": "2.13.0", "tensorflow": "2.7.0"}
    watts = {name: load_target(name).power_w for name in BUNDLED_NAMES}
    assert watts["rpi4b"] == 6 and watts["rpi4b-32bit"] == 6 and watts["rpi5"] == 9
    assert watts["rpi3b-plus"] == 5 and watts["rpi-zero-2w"] == 3 and watts["jetson-nano"] == 10
    assert watts["host"] is None and watts["generic-aarch64-linux"] is None and watts["x86_64-linux"] is None
    for name in BUNDLED_NAMES:  # every figure says where it comes from and that it is rough
        text = (BUNDLED / f"{name}.toml").read_text()
        if "power_w =" in text:
            assert "ESTIMATE" in text and any(w in text for w in ("public", "datasheet", "NVIDIA")), name


def test_show_displays_versions_and_power():
    shown = invoke("targets", "show", "rpi4b-32bit")
    assert shown.exit_code == 0, shown.output
    assert "tflite-runtime (up to 2.14.0)" in shown.stdout and "6 W typical" in shown.stdout
    host = invoke("targets", "show", "host")
    assert re.search(r"power\s+unknown", host.stdout)


# --------------------------------------------------------------------------- JSON output


def _key_tree(value):
    if isinstance(value, dict):
        return {k: _key_tree(v) for k, v in value.items()}
    return None


def test_show_json_shape():
    result = invoke("targets", "show", "rpi4b", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert list(payload) == ["schema_version", "target"] and payload["schema_version"] == 1
    target = payload["target"]
    assert list(target) == TARGET_KEYS
    assert list(target["cpu"]) == ["model", "cores", "max_clock_mhz", "features", "soc", "isa"]
    assert list(target["quantization"]) == ["modes", "io_types", "per_channel", "notes"]
    assert list(target["deploy"]) == ["transport", "user", "port", "remote_dir", "keep_versions", "prometheus_dir"]
    assert target["runtimes"] == ["ai-edge-litert", "tflite-runtime", "tensorflow"]
    assert target["deploy"]["user"] is None and target["origin"] == "bundled"


def test_list_json_shape():
    result = invoke("targets", "list", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert list(payload) == ["schema_version", "search_path", "targets"]
    assert [t["name"] for t in payload["targets"]] == BUNDLED_NAMES
    assert all(list(t) == TARGET_KEYS for t in payload["targets"])
    assert [d["origin"] for d in payload["search_path"]] == ["user", "bundled"]
    assert payload["search_path"][-1]["path"] == str(BUNDLED)


def test_readme_documents_the_real_show_json():
    readme = (REPO / "targets" / "README.md").read_text()
    example = re.search(r"<!-- show-json-example.*?-->\s*```json\n(.*?)```", readme, re.DOTALL)
    assert example, "targets/README.md lost its show --json example"
    documented = json.loads(example.group(1))
    actual = json.loads(invoke("targets", "show", "rpi4b", "--json").stdout)
    assert _key_tree(documented) == _key_tree(actual)
    assert documented["target"]["cpu"] == actual["target"]["cpu"]


def test_text_output_is_for_people():
    listed = invoke("targets", "list")
    assert listed.exit_code == 0, listed.output
    assert re.search(r"rpi4b\s+aarch64\s+Cortex-A72", listed.stdout) and "bundled" in listed.stdout
    shown = invoke("targets", "show", "coral-dev-board")
    assert shown.exit_code == 0, shown.output
    assert "edgetpu" in shown.stdout and "uint8, int8" in shown.stdout and "notes" in shown.stdout


def test_target_round_trips_through_json():
    target = load_target("coral-dev-board")
    data = json.loads(json.dumps(target.to_dict()))
    assert data["quantization"]["modes"] == ["int8"]
    assert isinstance(target, Target) and dataclasses.is_dataclass(target)
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.name = "other"  # type: ignore[misc]


# --------------------------------------------------------------------------- convert --target


def test_apply_target_fills_what_the_user_did_not_give():
    from edgeq.convert import ConvertOptions

    coral = load_target("coral-dev-board")
    options = apply_target(coral, ConvertOptions(), mode_given=False)
    assert (options.mode, options.io_type, options.target, options.per_channel) == (
        QuantMode.INT8,
        IOType.UINT8,
        "coral-dev-board",
        True,
    )
    assert apply_target(coral, ConvertOptions(io_type=IOType.INT8)).io_type is IOType.INT8
    pi = load_target("rpi4b")
    dynamic = apply_target(pi, ConvertOptions(mode=QuantMode.DYNAMIC))
    assert (dynamic.mode, dynamic.io_type, dynamic.target) == (QuantMode.DYNAMIC, IOType.FLOAT32, "rpi4b")


def test_apply_target_refuses_what_the_target_cannot_run():
    from edgeq.convert import ConvertOptions

    coral = load_target("coral-dev-board")
    with pytest.raises(ConversionError) as err:
        apply_target(coral, ConvertOptions(mode=QuantMode.FLOAT16))
    assert "coral-dev-board cannot run --mode float16" in err.value.message
    assert "fully quantized to 8 bits" in err.value.message  # the reason, from the target's notes
    assert err.value.hint.startswith("use --mode int8")
    assert err.value.exit_code == 6
    with pytest.raises(ConversionError) as err:
        apply_target(coral, ConvertOptions(io_type=IOType.FLOAT32))
    assert "--io-type float32" in err.value.message and "uint8 or int8" in err.value.hint
    with pytest.raises(ConversionError, match="--io-type int8 is not possible with --mode float16"):
        apply_target(load_target("rpi4b"), ConvertOptions(mode=QuantMode.FLOAT16, io_type=IOType.INT8))


def test_apply_target_turns_per_channel_off_where_the_target_lacks_it(tmp_path):
    from edgeq.convert import ConvertOptions

    path = write(
        tmp_path,
        "per-tensor-npu",
        MINIMAL.format(name="per-tensor-npu").replace("per_channel = true", "per_channel = false"),
    )
    options = apply_target(load_target(path), ConvertOptions())
    assert options.per_channel is False and options.target == "per-tensor-npu"


def test_convert_refuses_a_mode_before_any_tensorflow_work(tmp_path, monkeypatch):
    import edgeq.convert

    def never(*args, **kwargs):
        raise AssertionError("convert_model must not run when the target refuses the mode")

    monkeypatch.setattr(edgeq.convert, "convert_model", never)
    out = tmp_path / "out.tflite"
    result = invoke(
        "convert", str(tmp_path / "missing.keras"), "-o", str(out), "--target", "coral-dev-board", "--mode", "float16"
    )
    assert_clean_failure(result, 6)
    assert "Error: target coral-dev-board cannot run --mode float16 models" in result.stderr
    assert "Hint: use --mode int8" in result.stderr
    assert not out.exists()


def test_convert_passes_the_targets_options_on(tmp_path, monkeypatch):
    import edgeq.convert
    from edgeq.errors import ModelError

    seen = {}

    def fake(model, calib, output, options, **kwargs):
        seen["options"] = options
        raise ModelError("stop here")

    monkeypatch.setattr(edgeq.convert, "convert_model", fake)
    result = invoke(
        "convert", str(tmp_path / "m.keras"), "-o", str(tmp_path / "o.tflite"), "--target", "coral-dev-board"
    )
    assert_clean_failure(result, 5)
    options = seen["options"]
    assert (options.mode, options.io_type, options.target) == (QuantMode.INT8, IOType.UINT8, "coral-dev-board")
    unknown = invoke("convert", str(tmp_path / "m.keras"), "-o", str(tmp_path / "o.tflite"), "--target", "rpi4")
    assert_clean_failure(unknown, 3)
    assert "Did you mean 'rpi4b'?" in unknown.stderr


def test_the_cli_does_not_load_the_registry_until_a_command_needs_it():
    code = "import sys, edgeq.cli; print(sorted(m for m in ('edgeq.targets', 'tensorflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- packaging


def test_a_wheel_ships_the_targets_and_loads_them_without_the_repo(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "edgeq", src / "edgeq", ignore=ignore)
    shutil.copytree(REPO / "targets", src / "targets", ignore=ignore)
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("edgeq-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"edgeq/_bundled_targets/{n}.toml" for n in BUNDLED_NAMES} <= names
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "edgeq").rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(modules - names)
    assert not missing, (
        f"not in the wheel: {missing}; add their packages to [tool.setuptools] packages in pyproject.toml"
    )
    scripts = {p.relative_to(REPO).as_posix() for p in (REPO / "edgeq").rglob("*.sh")}
    assert scripts and not sorted(scripts - names), (
        f"device scripts not in the wheel: {sorted(scripts - names)}; add them to [tool.setuptools.package-data]"
    )

    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    code = (
        "import json, edgeq.targets as t; "
        "print(json.dumps({'module': t.__file__, 'bundled': str(t.bundled_targets_dir()), "
        "'names': [x.name for x in t.list_targets()]}))"
    )
    env = {
        "PYTHONPATH": str(site),
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "HOME": str(tmp_path),
        "PATH": os.environ.get("PATH", ""),
    }
    # -S: no site-packages, so the editable checkout cannot be imported instead of the installed copy.
    run = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    loaded = json.loads(run.stdout)
    assert Path(loaded["module"]).is_relative_to(site)
    assert Path(loaded["bundled"]) == site / "edgeq" / "_bundled_targets"
    assert loaded["names"] == BUNDLED_NAMES
