"""The history database: records from real result objects, queries, migrations, concurrent writers, damaged files,
and ``edgeq history`` (table, JSON, CSV, figure)."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgeq import history as history_module
from edgeq.bench import BenchReport, DeviceBench, FleetSummary, ModelRun
from edgeq.cli import cli
from edgeq.cli._record import record_options, recorder
from edgeq.cli.history import COMMANDS as CLI_COMMANDS
from edgeq.deploy import ModelFile
from edgeq.deploy.results import DeployFleetResult, DeviceResult
from edgeq.devices import Device
from edgeq.errors import DeviceUnreachableError, HistoryError, RemoteCommandError
from edgeq.fleet import DeviceStatus, FleetResult, Outcome
from edgeq.history import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    default_db_path,
    open_history,
    parse_since,
    plot_history,
)
from edgeq.probe import Parity, ProbeResult, Thermal, summarize_latencies
from edgeq.stats import Speedup
from edgeq.tune import Candidate, DeviceChoice, Latency, Score, TuneReport
from edgeq.types import QuantMode

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- realistic result objects


def _model_file(path: Path, content: bytes, name: str | None = None) -> ModelFile:
    import hashlib

    path.write_bytes(content)
    return ModelFile(
        path=str(path), name=name or path.stem, sha256=hashlib.sha256(content).hexdigest(), size_bytes=len(content)
    )


def _probe_result(device: str, latencies: tuple[float, ...], *, runtime_version: str = "2.14.0") -> ProbeResult:
    cool = Thermal(51.0, 1500.0, 1500.0, 0)
    return ProbeResult(
        device=device,
        model="edgeq/models/probe-digits_int8/3f2a9c0d1b7e/model.tflite",
        runtime="tflite-runtime",
        runtime_version=runtime_version,
        python="3.11.2",
        numpy="1.26.4",
        machine="aarch64",
        cpu_count=4,
        threads=4,
        xnnpack=True,
        delegate_partitions=1,
        input_source="random",
        load_ms=12.5,
        allocate_ms=0.8,
        first_inference_ms=9.1,
        warmup_runs=5,
        latency=summarize_latencies(latencies),
        latencies_ms=latencies,
        peak_rss_mb=48.2,
        thermal_before=cool,
        thermal_after=Thermal(58.0, 1500.0, 1500.0, 0),
        throttled=False,
        throttle_reason=None,
    )


def _probe_fleet(ok_latencies: tuple[float, ...]) -> FleetResult:
    parity = Parity(bit_exact=False, outputs={"output_0": {"mismatched": 0.03125, "max_abs_diff": 1.0}})
    ok = Outcome(
        device="pi-1",
        destination="pi@10.0.0.11:22",
        value=(_probe_result("pi-1", ok_latencies), parity),
        attempts=1,
        seconds=3.2,
    )
    down = Outcome(
        device="pi-2",
        destination="pi@10.0.0.12:22",
        error=DeviceUnreachableError("pi-2: connection refused (10.0.0.12:22)"),
        attempts=3,
        seconds=7.0,
    )
    return FleetResult(action="probe", results=(ok, down), seconds=7.1)


def _devices() -> tuple[Device, ...]:
    return (
        Device(name="pi-1", address="10.0.0.11", user="pi", target="rpi4b"),
        Device(name="pi-2", address="10.0.0.12", user="pi", target="rpi5"),
    )


def _run(label: str, version: str, latencies: tuple[float, ...]) -> ModelRun:
    return ModelRun(
        label=label,
        version=version,
        size_bytes=45928 if label == "int8" else 157060,
        runtime="ai-edge-litert",
        runtime_version="2.3.0",
        threads=4,
        xnnpack=True,
        rounds=2,
        latency=summarize_latencies(latencies),
        latencies_ms=latencies,
        load_ms=20.0,
        first_inference_ms=4.0,
        peak_rss_mb=60.0,
        throttled=False,
        throttle_reason=None,
    )


def _bench_report(tmp_path: Path) -> tuple[BenchReport, ModelFile]:
    float_file = _model_file(tmp_path / "digits_float32.tflite", b"TFL3 float32 model bytes")
    int8_path = tmp_path / "digits_int8.tflite"  # not on disk any more: its hash cannot be read back
    float_run = _run("float32", float_file.version, (4.1, 4.0, 4.2, 4.05))
    int8_run = _run("int8", "0123456789ab", (2.1, 2.0, 2.2, 2.05))
    measured = DeviceBench(
        device="pi-1",
        target="rpi4b",
        status="ok",
        machine="aarch64",
        float32=float_run,
        int8=int8_run,
        speedup=Speedup(1.98, 1.9, 2.05, 0.95, 2000),
        verdict="int8 is 1.98x faster than float32",
        parity=Parity(bit_exact=True, outputs={"output_0": {"mismatched": 0.0, "max_abs_diff": 0.0}}),
    )
    failed = DeviceBench(
        device="pi-2",
        target="rpi5",
        status="failed",
        reason="the probe failed: no TFLite runtime",
        code=10,
        kind="no-runtime",
    )
    report = BenchReport(
        model="models/digits.keras",
        float_model=float_file.path,
        int8_model=str(int8_path),
        float_size_bytes=157060,
        int8_size_bytes=45928,
        conversion={"fidelity": None, "accuracy": None, "warnings": []},
        devices=(measured, failed),
        fleet=FleetSummary(2, 1, 1.98, 1.98, 1.98, {"float32": (4.05, 4.05), "int8": (2.05, 2.05)}, ()),
    )
    return report, float_file


def _tune_report(tmp_path: Path) -> tuple[TuneReport, ModelFile]:
    chosen = _model_file(tmp_path / "digits_tuned.tflite", b"TFL3 the chosen w4a8 model")
    score = Score(samples=179, accuracy=0.97, drop_points=0.4)
    candidates = tuple(
        Candidate(name, mode, (), (), None, size, "base", score, True)
        for name, mode, size in (("int8", QuantMode.INT8, 45000), ("w4a8", QuantMode.W4A8, 30000))
    )
    choice = DeviceChoice(
        device="pi-1",
        target="rpi4b",
        status="ok",
        latencies=(
            Latency("int8", 2.0, 1.9, 2.1, 100, "ai-edge-litert", "2.3.0", 4),
            Latency("w4a8", 1.7, 1.6, 1.8, 100, "ai-edge-litert", "2.3.0", 4, energy_mj=5.1),
        ),
        chosen="w4a8",
        power_w=3.0,
    )
    unreachable = DeviceChoice(
        device="pi-2", target="rpi5", status="unreachable", reason="connection timed out", code=7, kind="unreachable"
    )
    report = TuneReport(
        model="models/digits.keras",
        budget="accuracy drop <= 1.0 point",
        budget_kind="accuracy",
        samples={"calibration": 200, "search": 178, "report": 179},
        float_search=score,
        candidates=candidates,
        front=("w4a8",),
        ranking=(),
        evaluations=2,
        report_split={"w4a8": score},
        chosen={
            "candidate": "w4a8",
            "path": chosen.path,
            "per_device": {"pi-1": {"candidate": "w4a8", "path": chosen.path}},
        },
        best_found=None,
        devices=(choice, unreachable),
        latency_measured=True,
        target=None,
        notes=(),
        wall_s=12.0,
    )
    return report, chosen


def _deploy_result(action: str, model: ModelFile, previous: str) -> DeployFleetResult:
    ok = DeviceResult(
        device="pi-1",
        destination="pi@10.0.0.11:22",
        action=action,
        model="digits",
        status=DeviceStatus.OK,
        version=model.version if action == "deploy" else previous,
        previous=previous if action == "deploy" else model.version,
        bytes_sent=45928 if action == "deploy" else 0,
        seconds=0.4,
        attempts=1,
    )
    failed = DeviceResult(
        device="pi-2",
        destination="pi@10.0.0.12:22",
        action=action,
        model="digits",
        status=DeviceStatus.FAILED,
        code=10,
        kind="remote-command",
        reason="deploy failed: No space left on device",
        attempts=1,
    )
    return DeployFleetResult(action=action, model="digits", version=model.version, results=(ok, failed), seconds=1.0)


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "data" / "history.sqlite"


# --------------------------------------------------------------------------- opening


def test_default_path_follows_edgeq_db_then_xdg_then_home(isolated_home, monkeypatch, tmp_path):
    monkeypatch.delenv("EDGEQ_DB", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert default_db_path() == isolated_home / ".local" / "share" / "edgeq" / "history.sqlite"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the XDG spec: relative paths are invalid
    assert default_db_path() == isolated_home / ".local" / "share" / "edgeq" / "history.sqlite"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_db_path() == tmp_path / "xdg" / "edgeq" / "history.sqlite"
    monkeypatch.setenv("EDGEQ_DB", "~/mine.sqlite")
    assert default_db_path() == isolated_home / "mine.sqlite"


def test_a_new_database_is_created_with_its_folders_in_wal_mode(db):
    with open_history(db) as history:
        assert history.journal_mode == "wal"
        assert history.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
        assert history._conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
        assert history._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert [p.name for p in db.parent.iterdir()] == ["history.sqlite"]  # made aside and linked: nothing left over
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent: stored in the file


# --------------------------------------------------------------------------- recording real results


def test_probe_results_round_trip_failed_devices_included(db, tmp_path):
    model = _model_file(tmp_path / "digits_int8.tflite", b"TFL3 int8 model", name="probe-digits_int8")
    (tmp_path / "digits_int8.recipe.json").write_text(json.dumps({"recipe_version": 1, "mode": "int8"}))
    latencies = (5.2, 5.0, 5.1, 5.6, 4.9)
    with open_history(db, run_id="run-1") as history:
        assert history.record_probe(_probe_fleet(latencies), model, devices=_devices(), at=T0) == 2
        ok, down = history.query()
    assert (ok.command, ok.device, ok.destination, ok.target, ok.status) == (
        "probe",
        "pi-1",
        "pi@10.0.0.11:22",
        "rpi4b",
        "ok",
    )
    assert (
        (ok.model_name, ok.model_sha256, ok.model_version, ok.mode)
        == (
            "digits_int8",  # the file's name, not the probe-... name it has on devices
            model.sha256,
            model.sha256[:12],
            "int8",  # from the recipe beside the model
        )
    )
    assert (ok.runtime, ok.runtime_version, ok.python, ok.numpy, ok.machine, ok.threads, ok.xnnpack) == (
        "tflite-runtime",
        "2.14.0",
        "3.11.2",
        "1.26.4",
        "aarch64",
        4,
        True,
    )
    stats = summarize_latencies(latencies)
    assert ok.latencies == latencies
    assert (ok.count, ok.p50_ms, ok.p90_ms, ok.p99_ms, ok.mean_ms, ok.std_ms, ok.min_ms, ok.max_ms) == (
        stats.count,
        stats.p50_ms,
        stats.p90_ms,
        stats.p99_ms,
        stats.mean_ms,
        stats.std_ms,
        stats.min_ms,
        stats.max_ms,
    )
    assert ok.parity_bit_exact is False and ok.parity == {"output_0": {"mismatched": 0.03125, "max_abs_diff": 1.0}}
    assert ok.details["load_ms"] == 12.5 and ok.details["thermal_after"]["temp_c"] == 58.0
    assert ok.at == "2026-11-01T08:00:00.000000Z" and ok.time == T0
    assert ok.run_id == down.run_id == "run-1" and ok.edgeq_version
    assert (down.device, down.target, down.status, down.exit_code, down.error_kind) == (
        "pi-2",
        "rpi5",
        "unreachable",
        7,
        "unreachable",
    )
    assert down.reason == "connection refused (10.0.0.12:22)" and down.p50_ms is None and down.latencies == ()
    assert down.model_sha256 == model.sha256  # a failure is still about that model


def test_bench_records_both_models_per_device_and_the_failed_one(db, tmp_path):
    report, float_file = _bench_report(tmp_path)
    with open_history(db) as history:
        assert history.record_bench(report, at=T0) == 3
        float32, int8, failed = history.query()
    assert [r.mode for r in (float32, int8)] == ["float32", "int8"]
    assert {r.model_name for r in (float32, int8, failed)} == {"digits"}
    assert float32.model_sha256 == float_file.sha256  # read back from the file, which still holds that version
    assert int8.model_sha256 is None and int8.model_version == "0123456789ab"  # the file is gone: version only
    assert int8.latencies == (2.1, 2.0, 2.2, 2.05) and int8.p50_ms == pytest.approx(2.075)
    assert int8.parity_bit_exact is True and float32.parity_bit_exact is None
    assert int8.details["speedup"]["ratio"] == 1.98 and float32.details["rounds"] == 2
    assert (failed.status, failed.exit_code, failed.error_kind, failed.mode) == ("failed", 10, "no-runtime", None)
    assert len({float32.run_id, int8.run_id, failed.run_id}) == 1


def test_tune_records_each_candidate_measured_and_which_was_chosen(db, tmp_path):
    report, chosen = _tune_report(tmp_path)
    with open_history(db) as history:
        assert history.record_tune(report, at=T0) == 3
        int8, w4a8, down = history.query()
    assert [(r.variant, r.mode, r.p50_ms, r.count) for r in (int8, w4a8)] == [
        ("int8", "int8", 2.0, 100),
        ("w4a8", "w4a8", 1.7, 100),
    ]
    assert w4a8.details["chosen"] is True and int8.details["chosen"] is False
    assert w4a8.model_sha256 == chosen.sha256 and int8.model_sha256 is None  # only the chosen file was kept
    assert w4a8.details["ci_low_ms"] == 1.6 and w4a8.details["energy_mj"] == 5.1
    assert (down.status, down.exit_code, down.error_kind, down.p50_ms) == ("unreachable", 7, "unreachable", None)


def test_deploys_and_rollbacks_record_versions_before_and_after(db, tmp_path):
    model = _model_file(tmp_path / "digits.tflite", b"TFL3 new version")
    with open_history(db) as history:
        history.record_deploy(_deploy_result("deploy", model, "aaaabbbbcccc"), model=model, devices=_devices(), at=T0)
        history.record_deploy(_deploy_result("rollback", model, "aaaabbbbcccc"), at=T0 + timedelta(hours=1))
        with pytest.raises(ValueError, match="deploy or rollback"):
            history.record_deploy(_deploy_result("deploy", model, "aaaabbbbcccc"), action="status")
        deploy_ok, deploy_failed, rollback_ok, _ = history.query()
    assert (deploy_ok.command, deploy_ok.version, deploy_ok.previous_version, deploy_ok.target) == (
        "deploy",
        model.version,
        "aaaabbbbcccc",
        "rpi4b",
    )
    assert deploy_ok.model_sha256 == model.sha256 and deploy_ok.details["bytes_sent"] == 45928
    assert (deploy_failed.status, deploy_failed.error_kind, deploy_failed.model_sha256) == (
        "failed",
        "remote-command",
        None,
    )
    assert (rollback_ok.command, rollback_ok.version, rollback_ok.previous_version) == (
        "rollback",
        "aaaabbbbcccc",
        model.version,
    )


def test_check_records_each_model_on_each_device_with_its_problems(db):
    from edgeq.check import CheckFailed, DeviceCheck, FleetCheck, ModelCheck

    fine = ModelCheck(
        name="digits",
        version="3f2a9c0d1b7e",
        intact=True,
        detail=None,
        expected="3f2a9c0d1b7e",
        deployed_runtime="tflite-runtime",
        deployed_runtime_version="2.14.0",
        baseline_p50_ms=5.0,
        parity=Parity(bit_exact=True, outputs={"output_0": {"mismatched": 0.0, "max_abs_diff": 0.0}}),
        p50_ms=7.9,
        drift_ms=2.9,
        speed=Speedup(0.63, 0.6, 0.66, 0.95, 2000),
        problems=("runtime changed since the deploy: tflite-runtime 2.14.0 -> 2.15.0", "1.58x slower than at deploy"),
    )
    pi1 = DeviceCheck("pi-1", "rpi4b", "tflite-runtime", "2.15.0", (fine,))
    failed = CheckFailed("pi-1: " + "; ".join(pi1.problems))
    fleet = FleetResult(
        action="check",
        results=(
            Outcome("pi-1", "pi@10.0.0.11:22", error=failed, attempts=1),
            Outcome("pi-2", "pi@10.0.0.12:22", error=DeviceUnreachableError("pi-2: no route to host"), attempts=3),
        ),
        seconds=2.0,
    )
    view = FleetCheck(
        devices=(pi1, None),
        names=("pi-1", "pi-2"),
        errors=(None, "no route to host"),
        versions={"digits": {"3f2a9c0d1b7e": 1}},
        expected={"digits": "3f2a9c0d1b7e"},
        unreachable=1,
    )
    with open_history(db) as history:
        assert history.record_check(view, fleet, at=T0) == 2
        checked, down = history.query(command="check")
    assert (checked.device, checked.status, checked.exit_code, checked.error_kind) == ("pi-1", "failed", 17, "check")
    assert (checked.model_name, checked.version, checked.runtime_version, checked.p50_ms) == (
        "digits",
        "3f2a9c0d1b7e",
        "2.15.0",
        7.9,
    )
    assert checked.reason.endswith("1.58x slower than at deploy") and checked.parity_bit_exact is True
    assert checked.details["baseline_p50_ms"] == 5.0 and checked.details["speed"]["ratio"] == 0.63
    assert (down.device, down.status, down.exit_code, down.reason) == ("pi-2", "unreachable", 7, "no route to host")


def test_a_generic_record_fills_its_summary_and_refuses_unknown_columns(db):
    runs = [3.0, 1.0, 2.0, 10.0, 2.5, 2.2]
    with open_history(db) as history:
        history.record("check", "pi-1", latencies=runs, model_name="digits", details={"slowdown": 1.1})
        with pytest.raises(TypeError, match="not a column of the history: p50"):
            history.record("check", "pi-1", p50=2.0)
        with pytest.raises(ValueError, match="unknown command 'status'"):
            history.record("status", "pi-1")
        (record,) = history.query()
    expected = summarize_latencies(runs)  # the probe's own (numpy) summary
    assert record.count == expected.count and record.std_ms == pytest.approx(expected.std_ms)
    for name in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms"):
        assert getattr(record, name) == pytest.approx(getattr(expected, name)), name
    assert record.status == "ok" and record.details == {"slowdown": 1.1}


def test_every_call_is_one_transaction(db):
    """A record the database refuses takes the other records of its call with it: all or nothing."""
    with open_history(db) as history:
        history.record("check", "before", p50_ms=1.0)
        raw = sqlite3.connect(db)
        raw.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON records WHEN NEW.device = 'b' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
        raw.close()
        with pytest.raises(HistoryError, match="could not record: the history database failed: refused by the test"):
            history.record_many([{"command": "check", "device": "a"}, {"command": "check", "device": "b"}])
        assert [r.device for r in history.query()] == ["before"]


def test_threads_may_record_through_one_history(db):
    """Fleet workers finishing at once (FleetEvents.finished runs in their threads) share one History."""
    from concurrent.futures import ThreadPoolExecutor

    with open_history(db) as history:
        with ThreadPoolExecutor(8) as pool:
            written = list(pool.map(lambda i: history.record("check", f"pi-{i % 8}", p50_ms=float(i)), range(200)))
        assert sum(written) == 200
        assert sorted(r.p50_ms for r in history.query()) == [float(i) for i in range(200)]


# --------------------------------------------------------------------------- querying


def _seed(history) -> None:
    """Three devices over ten days; one runtime upgrade on day 5; a deploy and a rollback."""
    for day in range(10):
        for device in ("pi-1", "pi-2", "pi-3"):
            upgraded = day >= 5
            history.record(
                "check",
                device,
                at=T0 + timedelta(days=day, minutes=int(device[-1])),
                model_name="digits" if device != "pi-3" else "mobilenet",
                model_sha256=("3f2a9c0d1b7e" + "0" * 52) if device != "pi-3" else "b" * 64,
                model_version="3f2a9c0d1b7e" if device != "pi-3" else "b" * 12,
                mode="int8",
                runtime="tflite-runtime",
                runtime_version="2.15.0" if upgraded else "2.14.0",
                latencies=[6.0 + 0.1 * i if upgraded else 5.0 + 0.1 * i for i in range(5)],
            )
    history.record(
        "deploy",
        "pi-1",
        at=T0 + timedelta(days=2, hours=1),
        model_name="digits-prod",  # deployed under another name: linked by its version
        model_version="3f2a9c0d1b7e",
        version="3f2a9c0d1b7e",
        previous_version="aaaabbbbcccc",
    )
    history.record(
        "rollback",
        "pi-1",
        at=T0 + timedelta(days=7, hours=1),
        model_name="digits-prod",
        model_version="aaaabbbbcccc",
        version="aaaabbbbcccc",
        previous_version="3f2a9c0d1b7e",
    )


def test_queries_filter_by_device_model_time_and_command(db):
    with open_history(db) as history:
        _seed(history)
        assert history.count() == 32
        assert {r.device for r in history.query(device="pi-2")} == {"pi-2"}
        assert len(history.query(device=["pi-1", "pi-3"])) == 22
        assert {r.device for r in history.query(model="digits")} == {"pi-1", "pi-2"}
        assert {r.model_name for r in history.query(model="digits*")} == {"digits", "digits-prod"}
        assert {r.device for r in history.query(model="bbbbbbbb")} == {"pi-3"}  # a hash prefix
        by_version = history.query(model="3F2A9C0D")  # hex in either case: hashes, versions and deploys of them
        assert {r.command for r in by_version} == {"check", "deploy"}
        assert history.query(model="3f2") == ()  # under 4 hex digits: a name, and no model has it
        since = history.query(since=T0 + timedelta(days=8))
        assert len(since) == 6 and all(r.time >= T0 + timedelta(days=8) for r in since)
        assert [r.command for r in history.query(command=["deploy", "rollback"])] == ["deploy", "rollback"]
        last = history.query(device="pi-1", limit=3)
        assert [r.time for r in last] == sorted(r.time for r in last)  # the most recent 3, in time order
        assert last[-1].time == T0 + timedelta(days=9, minutes=1)
        everything = history.query()
        assert [(r.at, r.id) for r in everything] == sorted((r.at, r.id) for r in everything)


def test_deploys_are_linked_to_measurements_by_version(db):
    with open_history(db) as history:
        _seed(history)
        measured = history.query(model="digits")
        events = history.deploys_for(measured)
    assert [(e.command, e.model_name) for e in events] == [("deploy", "digits-prod"), ("rollback", "digits-prod")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", T0 - timedelta(days=7)),
        ("24h", T0 - timedelta(hours=24)),
        ("30m", T0 - timedelta(minutes=30)),
        ("90s", T0 - timedelta(seconds=90)),
        ("2w", T0 - timedelta(weeks=2)),
        ("2026-10-01T10:00Z", datetime(2026, 10, 1, 10, 0, tzinfo=UTC)),
        ("2026-10-01T10:00+02:00", datetime(2026, 10, 1, 8, 0, tzinfo=UTC)),
        ("2026-10-01", datetime(2026, 10, 1).astimezone().astimezone(UTC)),  # local midnight
        ("2026-10-01 10:00:30", datetime(2026, 10, 1, 10, 0, 30).astimezone().astimezone(UTC)),
    ],
)
def test_parse_since(text, expected):
    assert parse_since(text, now=T0) == expected
    assert parse_since(text, now=T0).tzinfo is not None


@pytest.mark.parametrize("text", ["yesterday", "7 days", "-3d", "2026-13-01", ""])
def test_parse_since_refuses_what_it_cannot_read(text):
    with pytest.raises(ValueError, match="give a date"):
        parse_since(text, now=T0)


# --------------------------------------------------------------------------- migrations


def _version_1_database(path: Path) -> None:
    """A database as edgeq with only migration 1 left it, holding one record."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    history_module._migrate(conn, upto=1)
    conn.execute(
        "INSERT INTO records (at, run_id, command, device, status, model_name, p50_ms, latencies, edgeq_version)"
        " VALUES ('2026-10-01T00:00:00.000000Z', 'old', 'probe', 'pi-1', 'ok', 'digits', 5.0, '[5.0]', '0.0.9')"
    )
    conn.close()


def _indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()


def test_a_version_1_database_is_migrated_and_keeps_its_records(db):
    db.parent.mkdir()
    _version_1_database(db)
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 1
    assert "records_model_at" not in _indexes(db)
    with open_history(db) as history:
        assert history.schema_version == 2
        (old,) = history.query(model="digits")
        assert (old.run_id, old.p50_ms, old.latencies, old.edgeq_version) == ("old", 5.0, (5.0,), "0.0.9")
        history.record("probe", "pi-1", model_name="digits", p50_ms=5.5)
        assert history.count() == 2
    assert {"records_model_at", "records_sha256_at"} <= _indexes(db)
    plan = sqlite3.connect(db).execute(
        "EXPLAIN QUERY PLAN SELECT * FROM records WHERE model_name = 'digits' ORDER BY at"
    )
    assert "records_model_at" in " ".join(str(row) for row in plan)


def test_a_migration_that_fails_leaves_the_database_at_its_version(db, monkeypatch):
    with open_history(db):
        pass
    broken = history_module.Migration(
        3, "half good", ("ALTER TABLE records ADD COLUMN note TEXT", "CREATE INDEX bad ON no_such_table (x)")
    )
    monkeypatch.setattr(history_module, "MIGRATIONS", (*MIGRATIONS, broken))
    monkeypatch.setattr(history_module, "SCHEMA_VERSION", 3)
    with pytest.raises(HistoryError, match="no such table"):
        open_history(db)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert "note" not in [row[1] for row in conn.execute("PRAGMA table_info(records)")]  # rolled back as one


# --------------------------------------------------------------------------- concurrent edgeq processes

_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from edgeq.history import open_history
    db, name, count, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    open(start + "." + name, "w").close()  # ready: started and imported
    while not os.path.exists(start):  # both processes begin together
        time.sleep(0.001)
    with open_history(db) as history:  # both also create the database at once
        for i in range(count):
            history.record("check", name, model_name="digits", latencies=[1.0, 2.0, 3.0 + i], details={"i": i})
            time.sleep(0.001 * (i % 3))  # as a command between its records: the two runs surely overlap
    """
)


def test_two_processes_recording_at_once_lose_nothing(tmp_path):
    db = tmp_path / "shared" / "history.sqlite"
    start = tmp_path / "start"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(db), name, "200", str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("writer-a", "writer-b")
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"start.{name}").exists() for name in ("writer-a", "writer-b")):
        assert time.monotonic() < deadline and all(w.poll() is None for w in writers), "a writer did not start"
        time.sleep(0.005)
    start.touch()
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = conn.execute("SELECT device, json_extract(details, '$.i'), at FROM records ORDER BY id").fetchall()
    assert len(rows) == 400
    for name in ("writer-a", "writer-b"):
        assert sorted(i for device, i, _ in rows if device == name) == list(range(200))
    a = [at for device, _, at in rows if device == "writer-a"]
    b = [at for device, _, at in rows if device == "writer-b"]
    assert min(a) < max(b) and min(b) < max(a), "the two writers did not overlap: the test proved nothing"


# --------------------------------------------------------------------------- damaged and foreign files


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(3 * 4096))


def _page_overwritten(path: Path) -> None:
    with open_history(path) as history:
        _seed(history)
        for i in range(200):  # enough rows for a b-tree of several pages
            history.record("check", f"pi-{i}", latencies=[float(i)] * 50)
    with open(path, "r+b") as handle:
        handle.seek(2 * 4096)  # page 3: a page of the records table
        handle.write(b"\xa5" * 4096)


def _newer_schema(path: Path) -> None:
    with open_history(path) as history:
        history.record("probe", "pi-1", p50_ms=1.0)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()


def _another_programs_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    conn.execute("INSERT INTO invoices (amount) VALUES (12.5)")
    conn.commit()
    conn.close()


DAMAGED = {
    "random-bytes": (_random_bytes, "not an SQLite database"),
    "page-overwritten": (_page_overwritten, "the history database is corrupt"),
    "newer-schema": (_newer_schema, "written by a newer edgeq (history schema version 99; this edgeq"),
    "another-program": (_another_programs_database, "not an edgeq history (application_id 0x0; tables: invoices)"),
}


@pytest.fixture
def record_cmd(monkeypatch):
    """A command that records like probe and bench will: registered on the real group, removed afterwards."""
    monkeypatch.delenv("EDGEQ_NO_RECORD", raising=False)
    monkeypatch.delenv("EDGEQ_DB", raising=False)

    @cli.command("_record_test", hidden=True)
    @record_options
    def _record_test(db: Path | None, no_record: bool) -> None:
        with recorder(db, no_record) as history:
            click.echo("measured: p50 5.0 ms")  # the command's result, printed before it is recorded
            if history is not None:
                history.record("check", "pi-1", p50_ms=5.0)

    yield "_record_test"
    cli.commands.pop("_record_test", None)


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_or_foreign_file_is_one_clear_error_and_left_as_it_was(case, tmp_path, record_cmd):
    make, message = DAMAGED[case]
    path = tmp_path / "history.sqlite"
    make(path)
    before = path.read_bytes()
    companions = sorted(p.name for p in tmp_path.iterdir())

    with pytest.raises(HistoryError, match=message.replace("(", r"\(").replace(")", r"\)")) as raised:
        open_history(path)
    assert str(raised.value).startswith(f"{path}: ") and "\n" not in str(raised.value)
    assert "--db PATH" in (raised.value.hint or "")

    for args in (["history", "--db", str(path)], [record_cmd, "--db", str(path)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 15, (args, result.output)
        assert result.stderr.count("Error: ") == 1 and result.stderr.startswith(f"Error: {path}: ")
        assert "Traceback" not in result.output and "measured" not in result.stdout  # stopped before the work
    assert path.read_bytes() == before  # byte for byte
    if case != "page-overwritten":  # (SQLite reads a WAL-mode file through -wal/-shm companions it may create)
        assert sorted(p.name for p in tmp_path.iterdir()) == companions

    skipped = CliRunner().invoke(cli, [record_cmd, "--db", str(path), "--no-record"])
    assert skipped.exit_code == 0 and "measured: p50 5.0 ms" in skipped.stdout
    assert path.read_bytes() == before


def test_a_failure_to_record_after_the_work_is_a_warning_and_keeps_the_result(tmp_path, record_cmd, monkeypatch):
    path = tmp_path / "history.sqlite"
    open_history(path).close()
    monkeypatch.setattr(history_module, "BUSY_TIMEOUT_S", 0.2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another edgeq holds the write lock for longer than the busy timeout
    try:
        result = CliRunner().invoke(cli, [record_cmd, "--db", str(path)])
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert result.exit_code == 0, result.output
    assert result.stdout == "measured: p50 5.0 ms\n"
    assert result.stderr.startswith(f"Warning: {path}: could not record: the history database stayed locked")
    assert "this run is not in the history" in result.stderr and "Traceback" not in result.output
    assert open_history(path).count() == 0


def test_recording_commands_record_into_edgeq_db(tmp_path, record_cmd, monkeypatch):
    path = tmp_path / "env.sqlite"
    monkeypatch.setenv("EDGEQ_DB", str(path))
    result = CliRunner().invoke(cli, [record_cmd])
    assert result.exit_code == 0 and result.stderr == ""
    with open_history(path) as history:
        assert [(r.command, r.device, r.p50_ms) for r in history.query()] == [("check", "pi-1", 5.0)]
    monkeypatch.setenv("EDGEQ_NO_RECORD", "1")
    assert CliRunner().invoke(cli, [record_cmd]).exit_code == 0
    assert open_history(path).count() == 1


# --------------------------------------------------------------------------- edgeq history


@pytest.fixture
def seeded(tmp_path) -> Path:
    path = tmp_path / "seeded.sqlite"
    with open_history(path) as history:
        _seed(history)
    return path


def test_history_prints_a_table(seeded):
    result = CliRunner().invoke(
        cli, ["history", "--db", str(seeded), "--device", "pi-1", "--since", "2026-11-08T12:00Z"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert (
        sum("│ check" in line for line in lines) == 2
        and "pi-2" not in result.stdout
        and "rollback" not in result.stdout
    )
    assert "tflite-runtime 2.15.0" in result.stdout and "digits 3f2a9c0d" in result.stdout
    assert lines[-1] == "2 record(s), 1 device(s)"
    deploys = CliRunner().invoke(cli, ["history", "--db", str(seeded), "--command", "deploy", "--command", "rollback"])
    assert "aaaabbbb -> 3f2a9c0d" in deploys.stdout and "3f2a9c0d -> aaaabbbb" in deploys.stdout


def test_history_json_is_an_array_of_records(seeded):
    result = CliRunner().invoke(cli, ["history", "--db", str(seeded), "--model", "mobilenet", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data) == 10 and {r["device"] for r in data} == {"pi-3"}
    assert data[0]["latencies"] == [5.0, 5.1, 5.2, 5.3, 5.4] and data[0]["p50_ms"] == pytest.approx(5.2)
    assert list(data[0]) == list(history_module.COLUMNS)


def test_history_csv_has_a_header_and_one_line_per_record(seeded):
    result = CliRunner().invoke(cli, ["history", "--db", str(seeded), "--command", "check", "--limit", "4", "--csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 4 and list(rows[0]) == list(history_module.COLUMNS)
    assert json.loads(rows[-1]["latencies"]) == [6.0, 6.1, 6.2, 6.3, 6.4]
    assert rows[-1]["runtime_version"] == "2.15.0" and rows[-1]["parity_bit_exact"] == ""


def test_history_plots_a_model_over_time_with_its_deploys(seeded, tmp_path):
    out = tmp_path / "digits.png"
    out.write_bytes(b"an older figure")
    result = CliRunner().invoke(cli, ["history", "--db", str(seeded), "--model", "digits", "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {out}: 20 measurements of digits on 2 device(s), 2 line(s), ")
    assert "2 deploy(s) and rollback(s) marked" in result.stdout
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1210, 605)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary file left


def test_plot_history_marks_runtime_changes_and_rollouts(seeded, tmp_path, monkeypatch):
    """What the figure holds: one line per device, the step at the runtime upgrade, the two rollouts."""
    import matplotlib.axes

    drawn: dict[str, list] = {"lines": [], "vlines": [], "notes": []}
    plot, axvline, annotate = matplotlib.axes.Axes.plot, matplotlib.axes.Axes.axvline, matplotlib.axes.Axes.annotate
    monkeypatch.setattr(
        matplotlib.axes.Axes, "plot", lambda self, *a, **k: drawn["lines"].append(k.get("label")) or plot(self, *a, **k)
    )
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "axvline",
        lambda self, *a, **k: drawn["vlines"].append(k["linestyle"]) or axvline(self, *a, **k),
    )
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "annotate",
        lambda self, text, *a, **k: drawn["notes"].append(text) or annotate(self, text, *a, **k),
    )
    with open_history(seeded) as history:
        measured = history.query(model="digits")
        plot_history(measured, tmp_path / "f.png", events=history.deploys_for(measured))
    assert [label for label in drawn["lines"] if label] == ["pi-1 int8 3f2a9c0d1b7e", "pi-2 int8 3f2a9c0d1b7e"]
    assert drawn["vlines"] == ["--", ":"]  # the deploy, then the rollback
    assert drawn["notes"] == ["-> tflite-runtime 2.15.0", "deploy 3f2a9c0d1b7e (pi-1)", "rollback aaaabbbbcccc (pi-1)"]


def test_history_plot_needs_one_model(seeded, tmp_path):
    result = CliRunner().invoke(cli, ["history", "--db", str(seeded), "--plot", str(tmp_path / "all.png")])
    assert (
        result.exit_code == 2 and "these records hold 2 (digits, mobilenet): choose one with --model" in result.stderr
    )
    assert not (tmp_path / "all.png").exists()


def test_history_without_records_says_so_and_exits_0(isolated_home, monkeypatch, seeded):
    monkeypatch.delenv("EDGEQ_DB", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    missing = CliRunner().invoke(cli, ["history"])
    expected = isolated_home / ".local" / "share" / "edgeq" / "history.sqlite"
    assert (
        missing.exit_code == 0
        and missing.stdout
        == f"no records: {expected} does not exist yet (probe, bench, tune, deploy and rollback record into it)\n"
    )
    assert not expected.exists()  # reading creates nothing
    missing_json = CliRunner().invoke(cli, ["history", "--json"])
    assert missing_json.exit_code == 0 and json.loads(missing_json.stdout) == []
    assert "does not exist yet" in missing_json.stderr
    none = CliRunner().invoke(cli, ["history", "--db", str(seeded), "--device", "pi-9"])
    assert none.exit_code == 0 and none.stdout == f"no records in {seeded} match --device pi-9\n"
    as_json = CliRunner().invoke(cli, ["history", "--db", str(seeded), "--device", "pi-9", "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.stdout) == []
    as_csv = CliRunner().invoke(cli, ["history", "--db", str(seeded), "--device", "pi-9", "--csv"])
    assert as_csv.stdout == ",".join(history_module.COLUMNS) + "\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last tuesday"], "Invalid value for '--since': 'last tuesday' is not a time"),
        (["--json", "--csv"], "--json and --csv print the records in two ways: choose one"),
        (["--command", "status"], "Invalid value for '--command'"),
        (["--limit", "0"], "Invalid value for '--limit'"),
        (["--plot", "/no/such/folder/out.png"], "the folder /no/such/folder does not exist"),
    ],
)
def test_history_bad_input_is_a_usage_error(args, message, seeded):
    result = CliRunner().invoke(cli, ["history", "--db", str(seeded), *args])
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_cli_and_library_agree_on_the_commands():
    assert CLI_COMMANDS == history_module.COMMANDS


def test_history_error_has_its_exit_code_and_kind():
    assert (HistoryError.exit_code, HistoryError.kind) == (15, "history")
    assert not issubclass(HistoryError, RemoteCommandError)
