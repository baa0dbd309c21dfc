"""The commands record what they did and measured, through the real path: real sshd devices, real edgeq commands.

Two `edgeq` processes recording into one database at once (a cron `edgeq check`
during a rollout) lose nothing; a corrupt database stops the command before it
touches a device, and is left as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _models import *  # noqa: F403 - session fixtures (int8_model)
from _models import DIGITS
from click.testing import CliRunner
from test_bench import device_pythons, ssh_host, write_inventory  # noqa: F401 - fixture

from edgeq.cli import cli

pytestmark = pytest.mark.usefixtures("isolated_home")
CALIB = DIGITS / "calib.npz"
FAST = ["--runs", "3", "--min-time", "0", "--warmup-runs", "1", "--warmup-time", "0"]


def _cli(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output, result.output
    return result


def test_deploy_probe_check_and_rollback_are_recorded(start_device, device_pythons, tmp_path, int8_model):
    device = start_device("pi")
    inventory = write_inventory(tmp_path / "fleet.yml", {"pi": ssh_host(device, device_pythons["ai-edge-litert"])})
    db = tmp_path / "history.sqlite"
    common = ["-i", inventory, "--known-hosts", device.known_hosts, "--db", db]
    assert _cli("deploy", int8_model, "--name", "digits", *common).exit_code == 0
    assert _cli("probe", int8_model, *common, *FAST).exit_code == 0
    assert _cli("check", *common).exit_code == 0
    assert _cli("probe", int8_model, *common, *FAST, "--no-record").exit_code == 0
    shown = _cli("history", "--db", db, "--json")
    assert shown.exit_code == 0, shown.output
    records = json.loads(shown.stdout)
    assert sorted(r["command"] for r in records) == ["check", "deploy", "probe"]
    deploy = next(r for r in records if r["command"] == "deploy")
    assert deploy["device"] == "pi" and deploy["status"] == "ok" and deploy["model_name"] == "digits"
    assert deploy["parity_bit_exact"] is True  # the health check (the model's own samples) is part of the record
    probe = next(r for r in records if r["command"] == "probe")
    assert probe["runtime"] == "ai-edge-litert" and probe["count"] >= 3 and len(probe["latencies"]) == probe["count"]


def test_two_edgeq_processes_record_into_one_database_at_once(start_device, device_pythons, tmp_path, int8_model):
    """A check and a probe, each a real `edgeq` process, several times over, at the same moment."""
    device = start_device("pi")
    inventory = write_inventory(tmp_path / "fleet.yml", {"pi": ssh_host(device, device_pythons["ai-edge-litert"])})
    db = tmp_path / "history.sqlite"
    common = ["-i", str(inventory), "--known-hosts", str(device.known_hosts), "--db", str(db)]
    assert _cli("deploy", int8_model, "--name", "digits", *common, "--no-record").exit_code == 0
    edgeq = [sys.executable, "-m", "edgeq"]
    env = dict(os.environ)
    rounds = 4
    script = "; ".join([" ".join([*edgeq, "probe", str(int8_model), *common, *FAST, "--json", ">/dev/null"])] * rounds)
    other = "; ".join([" ".join([*edgeq, "check", *common, "--json", ">/dev/null"])] * rounds)
    procs = [subprocess.Popen(["sh", "-c", s], env=env) for s in (script, other)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    records = json.loads(_cli("history", "--db", db, "--json").stdout)
    assert sorted(r["command"] for r in records) == ["check"] * rounds + ["probe"] * rounds
    import sqlite3

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_corrupt_database_stops_the_command_before_any_device_and_is_left_alone(start_device, tmp_path, int8_model):
    device = start_device("pi")
    db = tmp_path / "history.sqlite"
    db.write_bytes(b"SQLite format 3\0" + os.urandom(4000))
    before = db.read_bytes()
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  IdentityFile {device.key_path}\n")
    result = _cli(
        "deploy",
        int8_model,
        "--host",
        device.spec,
        "--known-hosts",
        device.known_hosts,
        "--ssh-config",
        config,
        "--db",
        db,
    )
    assert result.exit_code == 15 and result.stderr.count("Error: ") == 1, result.output
    assert db.read_bytes() == before
    assert not Path(device.remote_dir / "models").exists()
