"""``edgeq targets detect``: facts read from a real sshd device, parsing, matching against the bundled targets, the TOML."""

from __future__ import annotations

import json
import textwrap

import pytest
from _remote import as_device, ssh
from click.testing import CliRunner
from test_bench import device_pythons  # noqa: F401 - session fixture: device Pythons with each runtime

from edgeq.cli import cli
from edgeq.detect import DeviceFacts, detect_device, match_targets, parse_facts, read_facts, suggest_target_toml
from edgeq.errors import ProbeOutputError
from edgeq.targets import list_targets, load_target

pytestmark = pytest.mark.usefixtures("isolated_home")

PI4_CPUINFO = "\n".join(
    f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n"
    for i in range(4)
)


def _pi4_output(
    bits: str = "64",
    python: str = '{"version": "3.11.2", "bits": 64, "runtimes": {"tflite-runtime": "2.14.0", "numpy": "1.26.4"}, "broken": {}}',
) -> str:
    return textwrap.dedent(
        f"""\
        @@uname
        aarch64
        6.6.31+rpt-rpi-v8
        {bits}
        @@model
        Raspberry Pi 4 Model B Rev 1.4
        @@cpuinfo
        {{cpuinfo}}
        @@nproc
        4
        @@maxfreq
        1800000
        @@meminfo
        MemTotal:        3885396 kB
        MemFree:         3000000 kB
        @@os-release
        PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
        ID=debian
        @@python
        /usr/bin/python3
        {python}
        @@end
        """
    ).replace("{cpuinfo}", PI4_CPUINFO)


def test_parse_a_raspberry_pi_4():
    facts = parse_facts(_pi4_output(), device="pi")
    assert (facts.arch, facts.board, facts.cpu_model, facts.cores, facts.max_clock_mhz, facts.memory_mb) == (
        "aarch64",
        "Raspberry Pi 4 Model B Rev 1.4",
        "Cortex-A72",
        4,
        1800,
        3794,
    )
    assert facts.cpu_features == ("neon",) and facts.os == "Debian GNU/Linux 12 (bookworm)"
    assert facts.runtimes == {"tflite-runtime": "2.14.0", "numpy": "1.26.4"} and facts.python == "/usr/bin/python3"


def test_a_pi_4_matches_rpi4b_and_a_32_bit_userland_rpi4b_32bit():
    targets = list_targets()
    best = match_targets(parse_facts(_pi4_output()), targets)[0]
    assert best.target == "rpi4b" and best.specific
    assert any("1800 MHz" in note for note in best.notes)  # a C0-stepping board: the note says what differs
    armv7 = parse_facts(
        _pi4_output(bits="32").replace(
            "fp asimd evtstrm crc32 cpuid",
            "half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32",
        )
    )
    assert armv7.arch == "armv7l"
    assert match_targets(armv7, targets)[0].target == "rpi4b-32bit"


def test_incomplete_output_is_a_probe_output_error():
    with pytest.raises(ProbeOutputError):
        parse_facts("@@uname\naarch64\n")


def test_the_suggested_toml_is_a_valid_target(tmp_path):
    facts = DeviceFacts(
        "box",
        "aarch64",
        "aarch64",
        "6.1",
        "Acme Board X1 Rev 2",
        "Cortex-A55",
        ("neon", "asimddp"),
        8,
        2000,
        7800,
        "Ubuntu 24.04",
        "/usr/bin/python3",
        "3.12.3",
        {"ai-edge-litert": "1.2.0"},
        {},
    )
    assert match_targets(facts, list_targets())[0].specific is False
    text = suggest_target_toml(facts, extends="generic-aarch64-linux")
    path = tmp_path / "acme-board-x1.toml"
    path.write_text(text)
    target = load_target(path)
    assert (
        target.name,
        target.cpu.model,
        target.cpu.cores,
        target.memory_mb,
        target.runtimes,
        target.deploy.transport,
    ) == (
        "acme-board-x1",
        "Cortex-A55",
        8,
        7800,
        ("ai-edge-litert",),
        "ssh",
    )


def _broken_litert_in_edgeq_env(device, python) -> None:
    """An ai_edge_litert that does not import, in the runtime folder edgeq provision keeps (first on the path)."""
    import subprocess

    tag = subprocess.run(
        [str(python), "-c", "import platform, sys; print('py%d%d-%s' % (*sys.version_info[:2], platform.machine()))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    root = device.home / "edgeq" / "runtime" / tag
    (root / "ai_edge_litert").mkdir(parents=True)
    (root / "ai_edge_litert" / "__init__.py").write_text("")
    (root / "ai_edge_litert" / "interpreter.py").write_text(
        "raise ImportError('numpy.core.multiarray failed to import')\n"
    )
    subprocess.run(["chown", "-R", f"{device.uid}", str(device.home / "edgeq")], check=True)


def test_facts_from_a_real_device(device, device_pythons):
    python = device_pythons["tflite-runtime"]
    _broken_litert_in_edgeq_env(device, python)
    dev = as_device(device, python=str(python))
    with ssh(device) as conn:
        facts = read_facts(conn, dev)
        detection = detect_device(conn, dev, list_targets())
    assert facts.arch == "x86_64" and facts.cores and facts.memory_mb and facts.os and facts.kernel
    assert facts.python == str(python) and facts.python_version.startswith("3.")
    assert facts.runtimes.get("tflite-runtime") == "2.14.0"  # imported, and ran the tiny model
    assert facts.numpy_with["tflite-runtime"].startswith("1.")
    assert facts.runtime_env == str(device.home / "edgeq" / "runtime" / f"py311-{facts.arch}")
    assert facts.disk_free_mb and facts.memory_available_mb and facts.libc.startswith("glibc")
    assert "numpy.core.multiarray" in facts.broken_runtimes["ai-edge-litert"]
    assert (
        detection.matches[0].target == "x86_64-linux"
        and detection.toml
        and 'extends = "x86_64-linux"' in detection.toml
    )


def test_a_device_without_the_python_asked_for(device):
    with ssh(device) as conn:
        facts = read_facts(conn, as_device(device, python="/nonexistent/python3"))
    assert facts.python is None and facts.runtimes == {} and facts.arch == "x86_64"


def test_cli_targets_detect(device, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  IdentityFile {device.key_path}\n")
    common = ["--host", device.spec, "--known-hosts", str(device.known_hosts), "--ssh-config", str(config)]
    shown = CliRunner().invoke(cli, ["targets", "detect", *common])
    assert shown.exit_code == 0, shown.output
    assert (
        "x86_64" in shown.stdout
        and "no specific target matches; closest: x86_64-linux" in shown.stdout
        and "[cpu]" in shown.stdout
    )
    as_json = CliRunner().invoke(cli, ["targets", "detect", "--json", *common])
    data = json.loads(as_json.stdout)
    (row,) = data["results"]
    assert row["value"]["facts"]["arch"] == "x86_64" and (row["status"], row["code"], row["kind"]) == ("ok", 0, None)
    toml = CliRunner().invoke(cli, ["targets", "detect", "--toml", "--name", "lab-box", *common])
    assert toml.exit_code == 0 and toml.stdout.startswith("# Written by `edgeq targets detect`")
    path = tmp_path / "lab-box.toml"
    path.write_text(toml.stdout)
    assert load_target(path).arch == "x86_64"
    bad = CliRunner().invoke(cli, ["targets", "detect", "--toml", "--name", "Bad Name", *common])
    assert bad.exit_code == 2


def test_cli_targets_detect_unreachable_is_one_line(down_address):
    host, port = down_address
    result = CliRunner().invoke(cli, ["targets", "detect", "--host", f"pi@{host}:{port}", "--retries", "0"])
    assert result.exit_code == 7 and "Traceback" not in result.output
    assert result.stderr.count("Error: ") == 1 and "refused" in result.stderr
