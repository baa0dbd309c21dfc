"""The history of every measurement and deploy: one SQLite database on the host, recorded into and queried.

Every probe, bench, tune, deploy, rollback and check result becomes rows of
one table, ``records``, in ``default_db_path()`` (``$EDGEQ_DB``, else
``$XDG_DATA_HOME/edgeq/history.sqlite``, else
``~/.local/share/edgeq/history.sqlite``)::

    with open_history() as history:                 # checked, created or migrated; HistoryError if unusable
        history.record_probe(fleet, model_file, devices=found)
        rows = history.query(model="digits", since=parse_since("7d"))
    plot_history(rows, "digits.png")                # p50 over time per device, deploys and rollbacks marked

**Why one wide table.** Every kind of record shares most of what is asked of
it (when, which device, which model and version, which runtime, a latency
summary, a status) and every question is a filter on those plus a time
order. Devices and models are not entities edgeq knows more about than
their names and hashes, so tables of their own would only add joins. What
only one kind has goes into ``details`` (JSON); a field that becomes a
question of its own becomes a column by a migration. The raw runs of a
measurement are one JSON array per record (``latencies``): they are read
whole or not at all, and a row per run would multiply the table by
thousands.

**Schema versions.** ``PRAGMA user_version`` is the number of migrations
applied; :data:`MIGRATIONS` lists them in order, each one applied in one
transaction together with the new version number (a crash leaves the old
version, whole). ``PRAGMA application_id`` marks the file as edgeq's, so
that another program's database given by mistake is refused, not altered.

**Safety.** A file that is not an SQLite database, fails ``PRAGMA
quick_check``, belongs to another program or comes from a newer edgeq is one
:class:`~edgeq.errors.HistoryError` naming the file and what is wrong, and
is never modified: it is first opened read-only (``file:...?mode=ro``) to be
checked, and only then read-write. A new database is made and migrated
under a temporary name, then linked into place. It runs in WAL mode with a
busy timeout of 30 s, and every call that records is one ``BEGIN
IMMEDIATE`` transaction: concurrent edgeq processes (a cron ``check`` during
a rollout) wait for each other instead of failing, and never lose or tear a
record.

Besides edgeq's errors, files and types, only the standard library is
imported here; matplotlib only inside :func:`plot_history`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import re
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import HistoryError, InternalError
from .files import atomic_write_bytes, sha256_file
from .types import to_jsonable

if TYPE_CHECKING:
    from .bench import BenchModels, BenchReport, ModelRun, ProbeOutcome
    from .check import DeviceCheck, FleetCheck
    from .deploy import ModelFile
    from .deploy.results import DeployFleetResult
    from .devices import Device
    from .fleet import FleetResult
    from .tune import TuneReport

__all__ = [
    "APPLICATION_ID",
    "BUSY_TIMEOUT_S",
    "COMMANDS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "History",
    "Migration",
    "Record",
    "default_db_path",
    "open_history",
    "parse_since",
    "plot_history",
]

APPLICATION_ID = 0x45445131  # "EDQ1": PRAGMA application_id of an edgeq history database
BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another edgeq process before giving up
COMMANDS = ("probe", "bench", "tune", "deploy", "rollback", "check")
LATENCY_COMMANDS = ("probe", "bench", "tune", "check")
DEPLOY_COMMANDS = ("deploy", "rollback")

_HINT = "use another file with --db PATH or EDGEQ_DB (recording commands also take --no-record); edgeq left the file as it is"


# --------------------------------------------------------------------------- schema


@dataclasses.dataclass(frozen=True)
class Migration:
    """One step of the schema: its statements run in one transaction that also sets ``user_version``.

    Statements, not a script: ``executescript`` would commit on its own, outside the migration's transaction.
    """

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "the records table",
        (
            f"PRAGMA application_id = {APPLICATION_ID}",
            """
            CREATE TABLE records (
                id               INTEGER PRIMARY KEY,
                at               TEXT    NOT NULL,  -- UTC, ISO 8601: 2026-11-01T10:00:00.000000Z (sorts as text)
                run_id           TEXT    NOT NULL,  -- one per edgeq invocation: the rows of one bench share it
                command          TEXT    NOT NULL,  -- probe | bench | tune | deploy | rollback | check
                device           TEXT    NOT NULL,
                destination      TEXT,              -- user@address:port, or local
                target           TEXT,
                status           TEXT    NOT NULL,  -- ok | unchanged | failed | unreachable | skipped
                exit_code        INTEGER NOT NULL DEFAULT 0,
                error_kind       TEXT,              -- edgeq.errors kind of a failure
                reason           TEXT,
                model_name       TEXT,
                model_sha256     TEXT,              -- the full hash, where edgeq had the file
                model_version    TEXT,              -- its first 12 hex digits (what devices call a version)
                mode             TEXT,              -- int8 | float32 | ...
                runtime          TEXT,
                runtime_version  TEXT,
                python           TEXT,
                numpy            TEXT,
                machine          TEXT,
                threads          INTEGER,
                xnnpack          INTEGER CHECK (xnnpack IN (0, 1)),
                count            INTEGER,           -- timed runs
                p50_ms           REAL,
                mean_ms          REAL,
                std_ms           REAL,
                min_ms           REAL,
                p90_ms           REAL,
                p99_ms           REAL,
                max_ms           REAL,
                latencies        TEXT,              -- JSON array of every timed run (ms)
                parity_bit_exact INTEGER CHECK (parity_bit_exact IN (0, 1)),
                parity           TEXT,              -- JSON: output -> {mismatched, max_abs_diff}
                version          TEXT,              -- deploy / rollback: active version afterwards
                previous_version TEXT,              -- ... and before
                details          TEXT    NOT NULL DEFAULT '{}',  -- JSON: what only this kind of record has
                edgeq_version    TEXT    NOT NULL
            )
            """,
            "CREATE INDEX records_at ON records (at)",
            "CREATE INDEX records_device_at ON records (device, at)",
        ),
    ),
    Migration(
        2,
        "indexes for --model: by name and by hash, in time order",
        (
            "CREATE INDEX records_model_at ON records (model_name, at)",
            "CREATE INDEX records_sha256_at ON records (model_sha256, at)",
        ),
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def _check_migrations() -> None:
    for number, migration in enumerate(MIGRATIONS, start=1):
        if migration.version != number:  # a bug: any test that opens a history catches it
            raise InternalError(f"migration {migration.version} is listed as number {number}")


_check_migrations()


# --------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class Record:
    """One row of the history: one device's result of one command."""

    id: int
    at: str  # UTC, ISO 8601 with Z
    run_id: str
    command: str
    device: str
    destination: str | None
    target: str | None
    status: str
    exit_code: int
    error_kind: str | None
    reason: str | None
    model_name: str | None
    model_sha256: str | None
    model_version: str | None
    mode: str | None
    runtime: str | None
    runtime_version: str | None
    python: str | None
    numpy: str | None
    machine: str | None
    threads: int | None
    xnnpack: bool | None
    count: int | None
    p50_ms: float | None
    mean_ms: float | None
    std_ms: float | None
    min_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    latencies: tuple[float, ...]
    parity_bit_exact: bool | None
    parity: dict[str, Any] | None
    version: str | None
    previous_version: str | None
    details: dict[str, Any]
    edgeq_version: str

    @property
    def time(self) -> datetime:
        """``at`` as an aware datetime (UTC)."""
        return datetime.fromisoformat(self.at)

    @property
    def variant(self) -> str | None:
        """What was measured of the model: tune's candidate name, else the mode."""
        candidate = self.details.get("candidate")
        return str(candidate) if candidate else self.mode

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = to_jsonable(self)
        return data


COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Record))
_WRITABLE = frozenset(COLUMNS) - {"id"}
_JSON_COLUMNS = ("latencies", "parity", "details")
_BOOL_COLUMNS = ("xnnpack", "parity_bit_exact")
_SUMMARY = ("count", "p50_ms", "mean_ms", "std_ms", "min_ms", "p90_ms", "p99_ms", "max_ms")


def _record_from_row(row: sqlite3.Row) -> Record:
    values = {name: row[name] for name in COLUMNS}
    values["latencies"] = tuple(json.loads(values["latencies"])) if values["latencies"] else ()
    values["parity"] = json.loads(values["parity"]) if values["parity"] else None
    values["details"] = json.loads(values["details"]) if values["details"] else {}
    for name in _BOOL_COLUMNS:
        values[name] = None if values[name] is None else bool(values[name])
    return Record(**values)


# --------------------------------------------------------------------------- times


def _iso(moment: datetime) -> str:
    """UTC with microseconds and a Z: one fixed width, so that text order is time order."""
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a naive time is this machine's local time
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _now() -> datetime:
    return datetime.now(UTC)


def _at(value: datetime | str | None) -> str:
    """A record's time as stored: now, a datetime, or an ISO 8601 text (made canonical, so that it sorts)."""
    if value is None:
        return _iso(_now())
    return _iso(value if isinstance(value, datetime) else datetime.fromisoformat(value))


_AGE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)", re.IGNORECASE)
_AGE_UNITS = {"s": "seconds", "m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """The moment ``text`` names, as an aware datetime in UTC; ValueError with the accepted forms otherwise.

    An age back from now (``30m``, ``24h``, ``7d``, ``2w``, ``90s``), a date (``2026-11-01``: its local
    midnight) or a time (``2026-11-01T10:00``, ``2026-11-01 10:00:30``: local time, unless it ends with
    ``Z`` or an offset such as ``+02:00``).
    """
    value = text.strip()
    age = _AGE_RE.fullmatch(value)
    if age:
        amount, unit = float(age.group(1)), _AGE_UNITS[age.group(2).lower()]
        return (now or _now()).astimezone(UTC) - timedelta(**{unit: amount})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give a date (2026-11-01), a time (2026-11-01T10:00) or an age (7d, 24h, 30m)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time, as the user reads their clock
    return moment.astimezone(UTC)


# --------------------------------------------------------------------------- paths


def default_db_path() -> Path:
    """``$EDGEQ_DB``, else ``$XDG_DATA_HOME/edgeq/history.sqlite``, else ``~/.local/share/edgeq/history.sqlite``."""
    explicit = os.environ.get("EDGEQ_DB")
    if explicit:
        return Path(explicit).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME")
    base = Path(data_home) if data_home and os.path.isabs(data_home) else Path.home() / ".local" / "share"
    return base / "edgeq" / "history.sqlite"


# --------------------------------------------------------------------------- opening


def _error(path: Path, problem: str, hint: str = _HINT) -> HistoryError:
    return HistoryError(f"{path}: {problem}", hint=hint)


def _sqlite_problem(exc: sqlite3.Error) -> str:
    """What an SQLite error means for the user, in their words."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name in ("SQLITE_BUSY", "SQLITE_LOCKED") or name.startswith("SQLITE_BUSY"):
        return f"the history database stayed locked by another edgeq process for {BUSY_TIMEOUT_S:g} s ({exc})"
    if name == "SQLITE_NOTADB":
        return f"not an SQLite database ({exc})"
    if name.startswith("SQLITE_CORRUPT"):
        return f"the history database is corrupt ({exc})"
    if name.startswith("SQLITE_FULL"):
        return f"the disk is full ({exc})"
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_READONLY", "SQLITE_AUTH")):
        return f"cannot open the history database for writing ({exc})"
    return f"the history database failed: {exc}"


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_existing(path: Path) -> None:
    """Raise HistoryError unless ``path`` is an edgeq history this edgeq can use; it is only ever read here.

    The header is read as bytes first (not an SQLite file, another program's, a newer schema: refused
    without SQLite opening the file at all), then the file is opened read-only (``mode=ro``) for
    ``quick_check``. (For a database in WAL mode, SQLite may create the empty ``-wal`` and ``-shm``
    companions it reads through; the database file itself is never written.)
    """
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        raise _error(path, f"cannot read the history database ({exc.strerror or exc})") from exc
    if not header:
        return  # an empty file: SQLite makes it a new database
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise _error(path, "not an SQLite database (its first bytes are not SQLite's header)")
    # the header as the file holds it; committed changes still in the -wal are read through SQLite below
    _check_identity(path, int.from_bytes(header[60:64], "big"), int.from_bytes(header[68:72], "big"), [])
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise _error(path, _sqlite_problem(exc)) from exc
    try:
        user_version = conn.execute("PRAGMA user_version").fetchone()[0]
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        _check_identity(path, user_version, application_id, tables)
        problems = [
            line.strip()
            for row in conn.execute("PRAGMA quick_check(5)")
            for line in str(row[0]).splitlines()
            if line.strip() and not line.startswith("***")
        ]
        if problems != ["ok"]:
            shown = "; ".join(problems[:2]) + ("; ..." if len(problems) > 2 else "")
            raise _error(path, f"the history database is corrupt (quick_check: {shown})")
    except sqlite3.Error as exc:
        raise _error(path, _sqlite_problem(exc)) from exc
    finally:
        conn.close()


def _check_identity(path: Path, user_version: int, application_id: int, tables: Sequence[str]) -> None:
    """Refuse another program's database, and one from a newer edgeq."""
    if application_id not in (0, APPLICATION_ID) or (application_id == 0 and (tables or user_version)):
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise _error(
            path,
            f"an SQLite database, but not an edgeq history (application_id {application_id:#x}"
            + (f"; tables: {shown})" if tables else ")"),
        )
    if user_version > SCHEMA_VERSION:
        raise _error(
            path,
            f"written by a newer edgeq (history schema version {user_version}; this edgeq {__version__} "
            f"knows up to {SCHEMA_VERSION})",
            hint="upgrade edgeq, or " + _HINT,
        )


def _migrate(conn: sqlite3.Connection, upto: int | None = None) -> int:
    """Apply the migrations the database lacks (up to ``upto``, default all), in one transaction; return the
    version it had."""
    upto = SCHEMA_VERSION if upto is None else upto
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current >= upto:
        return int(current)  # nothing to do: no write lock taken, so opening never waits for another writer
    conn.execute("BEGIN IMMEDIATE")  # the write lock first: two processes creating the file migrate it once
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:  # a newer edgeq migrated it since the read-only check
            raise HistoryError(f"written by a newer edgeq (history schema version {found})")
        for migration in MIGRATIONS[found:upto]:
            for statement in migration.statements:
                conn.execute(statement)
        if upto > found:
            conn.execute(f"PRAGMA user_version = {int(upto)}")
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return int(found)


def _connect(path: Path) -> sqlite3.Connection:
    # transactions are explicit; any thread may record (a lock in History serialises them)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    try:
        _use_wal(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _use_wal(conn: sqlite3.Connection) -> None:
    """WAL mode (stored in the file): readers never block the writer, nor the writer them.

    Switching needs the database to itself, and SQLite answers "locked" at once rather than calling the
    busy handler, so the switch is retried for the busy timeout. (New files are made in WAL mode before
    anyone else can see them: see :func:`_create`.)
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if not str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_BUSY") or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _create(db: Path) -> None:
    """Make a new history at ``db`` atomically: built and migrated under a temporary name, then linked
    into place only if no other process made one meanwhile (theirs is used then). No process ever sees
    a half-made database, and two edgeq processes starting on a new machine do not race to set it up."""
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{db.name}.", suffix=".new", dir=db.parent)
    except OSError as exc:
        raise _error(db, f"cannot create the history database ({exc.strerror or exc})") from exc
    os.close(fd)
    temporary = Path(name)
    try:
        conn = _connect(temporary)
        try:
            _migrate(conn)
        finally:
            conn.close()  # checkpoints the WAL into the file
        try:
            os.link(temporary, db)  # atomic, and refuses to replace: never over another process's database
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: made in place (the WAL switch is retried)
            pass
    except sqlite3.Error as exc:
        raise _error(db, _sqlite_problem(exc)) from exc
    finally:
        for leftover in (temporary, Path(name + "-wal"), Path(name + "-shm")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def open_history(
    path: str | os.PathLike[str] | None = None,
    *,
    run_id: str | None = None,
    on_error: Callable[[HistoryError], None] | None = None,
) -> History:
    """The history database at ``path`` (default: :func:`default_db_path`), checked, created or migrated.

    A missing file is created with its parent folders. An existing one is checked read-only first; a file
    that is not an SQLite database, is corrupt, belongs to another program or comes from a newer edgeq
    raises :class:`~edgeq.errors.HistoryError` and is left as it was. ``run_id`` groups what this
    invocation records (default: a new random id). ``on_error``: see :class:`History`.
    """
    db = Path(path).expanduser() if path is not None else default_db_path()
    if db.is_dir():
        raise _error(db, "is a folder, not a history database file")
    if db.exists():
        _check_existing(db)
    else:
        _create(db)
    conn = None
    try:
        conn = _connect(db)
        _migrate(conn)
    except HistoryError as exc:
        if conn is not None:
            conn.close()
        raise _error(db, exc.message, hint="upgrade edgeq, or " + _HINT) from exc
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise _error(db, _sqlite_problem(exc)) from exc
    return History(conn, db, run_id=run_id or uuid.uuid4().hex, on_error=on_error)


# --------------------------------------------------------------------------- the database


class History:
    """An open history database: record results, query them. A context manager; :func:`open_history` makes it.

    Every ``record*`` call is one transaction and returns the number of rows written. When it fails
    (the disk is full, another process held the database longer than the busy timeout), it raises
    :class:`~edgeq.errors.HistoryError`, or, with ``on_error``, hands the error to it and returns 0:
    the command's result, measured already, must not be lost to its history.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        run_id: str,
        on_error: Callable[[HistoryError], None] | None = None,
    ):
        self._conn = conn
        self._lock = threading.Lock()  # one connection, shared by the threads that record (fleet workers)
        self.path = path
        self.run_id = run_id
        self.on_error = on_error

    def __enter__(self) -> History:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @property
    def journal_mode(self) -> str:
        return str(self._conn.execute("PRAGMA journal_mode").fetchone()[0])

    # ----------------------------------------------------------------------- writing

    def record(self, command: str, device: str, *, at: datetime | str | None = None, **fields: Any) -> int:
        """One record (the coming ``edgeq check`` uses this): ``fields`` are columns of :class:`Record`.

        ``latencies`` (a sequence of ms) fills the summary columns it does not give; ``parity`` and
        ``details`` are mappings; ``status`` defaults to ``ok``.
        """
        return self.record_many([{"command": command, "device": device, **fields}], at=at)

    def record_many(self, rows: Iterable[Mapping[str, Any]], *, at: datetime | str | None = None) -> int:
        """Several records in one transaction (each a mapping of columns, with ``command`` and ``device``)."""
        when = _at(at)
        prepared = [self._prepare(row, when) for row in rows]
        return self._insert(prepared)

    def record_probe(
        self,
        fleet: FleetResult[ProbeOutcome],
        model: ModelFile,
        *,
        devices: Sequence[Device] = (),
        name: str | None = None,
        mode: str | None = None,
        at: datetime | str | None = None,
    ) -> int:
        """``edgeq probe``: one record per device, failed ones included.

        ``name`` defaults to the model file's stem (not the ``probe-...`` name it has on devices); ``mode``
        to the one in the recipe edgeq wrote beside the model (``OUT.recipe.json``), when there is one.
        ``devices`` (those probed) give each record its target.
        """
        targets = _targets(devices)
        model_name = name or Path(model.path).stem
        model_mode = mode or _recipe_mode(model.path)
        rows = []
        for outcome in fleet.results:
            row: dict[str, Any] = {
                "command": "probe",
                "device": outcome.device,
                "destination": outcome.destination,
                "target": targets.get(outcome.device),
                "status": outcome.status.value,
                "exit_code": outcome.code,
                "error_kind": outcome.kind,
                "reason": outcome.reason,
                "model_name": model_name,
                "model_sha256": model.sha256,
                "model_version": model.version,
                "mode": model_mode,
                "details": {"model_file": model.path, "size_bytes": model.size_bytes, "attempts": outcome.attempts},
            }
            if outcome.value is not None:
                result, parity = outcome.value
                row.update(_runtime_fields(result))
                row.update(_summary_fields(result.latency))
                row["latencies"] = result.latencies_ms
                row["details"].update(
                    remote_model=result.model,
                    cpu_count=result.cpu_count,
                    delegate_partitions=result.delegate_partitions,
                    input_source=result.input_source,
                    load_ms=result.load_ms,
                    allocate_ms=result.allocate_ms,
                    first_inference_ms=result.first_inference_ms,
                    warmup_runs=result.warmup_runs,
                    peak_rss_mb=result.peak_rss_mb,
                    throttled=result.throttled,
                    throttle_reason=result.throttle_reason,
                    thermal_before=to_jsonable(result.thermal_before),
                    thermal_after=to_jsonable(result.thermal_after),
                )
                if parity is not None:
                    row["parity_bit_exact"] = parity.bit_exact
                    row["parity"] = parity.outputs
            rows.append(row)
        return self.record_many(rows, at=at)

    def record_bench(
        self,
        report: BenchReport,
        *,
        models: BenchModels | None = None,
        at: datetime | str | None = None,
    ) -> int:
        """``edgeq bench``: per measured device one record for float32 and one for int8 (parity on int8's);
        one record for a device that failed.

        The model's name is the stem of the model given (``digits`` for ``digits.keras``), the mode says
        which of the two. ``models`` gives the full hashes; without it they are read from the files
        the report names, when these still hold the versions measured.
        """
        model_name = _stem(report.model)
        files = {"float32": report.float_model, "int8": report.int8_model}
        known = {label: m.sha256 for label, m in (models.by_label().items() if models else ())}
        rows = []
        for bench in report.devices:
            base: dict[str, Any] = {
                "command": "bench",
                "device": bench.device,
                "target": bench.target,
                "status": bench.status,
                "exit_code": bench.code,
                "error_kind": bench.kind,
                "reason": bench.reason,
                "model_name": model_name,
                "machine": bench.machine,
            }
            runs = [(label, run) for label, run in (("float32", bench.float32), ("int8", bench.int8)) if run]
            if not runs:
                rows.append({**base, "details": {"model": report.model}})
                continue
            for label, run in runs:
                sha = known.get(label) or _sha256_if(files[label], run.version)
                details: dict[str, Any] = {
                    "model": report.model,
                    "model_file": files[label],
                    **_run_details(run),
                }
                if bench.speedup is not None:
                    details["speedup"] = to_jsonable(bench.speedup)
                    details["verdict"] = bench.verdict
                if bench.recommended.get(label) is not None:
                    details["recommended"] = to_jsonable(bench.recommended[label])
                row = {
                    **base,
                    "model_sha256": sha,
                    "model_version": run.version,
                    "mode": label,
                    "runtime": run.runtime,
                    "runtime_version": run.runtime_version,
                    "threads": run.threads,
                    "xnnpack": run.xnnpack,
                    "latencies": run.latencies_ms,
                    **_summary_fields(run.latency),
                    "details": details,
                }
                if label == "int8" and bench.parity is not None:
                    row["parity_bit_exact"] = bench.parity.bit_exact
                    row["parity"] = bench.parity.outputs
                rows.append(row)
        return self.record_many(rows, at=at)

    def record_tune(self, report: TuneReport, *, at: datetime | str | None = None) -> int:
        """``edgeq tune`` on devices: one record per device and candidate probed (its pooled p50 and
        interval; the candidate in ``details``, and whether the device chose it), one per failed device.

        The chosen candidates' files give their hashes; the others were not kept. A tune without devices
        measured nothing on a device: it records nothing.
        """
        model_name = _stem(report.model)
        modes = {c.name: getattr(c.mode, "value", c.mode) for c in report.candidates}
        chosen_files = _chosen_files(report.chosen)
        rows = []
        for choice in report.devices:
            base: dict[str, Any] = {
                "command": "tune",
                "device": choice.device,
                "target": choice.target,
                "status": choice.status,
                "exit_code": choice.code,
                "error_kind": choice.kind,
                "reason": choice.reason,
                "model_name": model_name,
            }
            if not choice.latencies:
                rows.append({**base, "details": {"model": report.model, "budget": report.budget}})
                continue
            for latency in choice.latencies:
                chosen = latency.candidate == choice.chosen
                path = chosen_files.get(choice.device, chosen_files.get("")) if chosen else None
                sha = _sha256_if(path, None) if path else None
                rows.append(
                    {
                        **base,
                        "model_sha256": sha,
                        "model_version": sha[:12] if sha else None,
                        "mode": modes.get(latency.candidate),
                        "runtime": latency.runtime,
                        "runtime_version": latency.runtime_version,
                        "threads": latency.threads,
                        "count": latency.runs,
                        "p50_ms": latency.p50_ms,
                        "details": {
                            "model": report.model,
                            "candidate": latency.candidate,
                            "chosen": chosen,
                            "chosen_file": path,
                            "ci_low_ms": latency.ci_low_ms,
                            "ci_high_ms": latency.ci_high_ms,
                            "energy_mj": latency.energy_mj,
                            "budget": report.budget,
                        },
                    }
                )
        return self.record_many(rows, at=at)

    def record_deploy(
        self,
        result: DeployFleetResult,
        action: str | None = None,
        *,
        model: ModelFile | None = None,
        devices: Sequence[Device] = (),
        at: datetime | str | None = None,
    ) -> int:
        """``edgeq deploy`` or ``edgeq rollback`` (``action``, default the result's own): one record per device,
        with the version active afterwards and before. ``model`` (the file deployed) gives the full hash."""
        command = action or result.action
        if command not in DEPLOY_COMMANDS:
            raise ValueError(f"record_deploy records deploy or rollback, not {command!r}")
        targets = _targets(devices)
        rows = []
        for device in result.results:
            sha = model.sha256 if model is not None and device.version == model.version else None
            health = getattr(device, "health", None)
            measured: dict[str, Any] = {}
            if health is not None:  # the check after the switch: the runtime, the timing baseline and parity
                measured = {"runtime": health.runtime, "runtime_version": health.runtime_version}
                measured["machine"] = health.machine
                if health.latencies_ms:
                    measured |= _summarize(health.latencies_ms) | {"latencies": list(health.latencies_ms)}
                if health.parity is not None:
                    measured |= {"parity_bit_exact": health.parity.bit_exact, "parity": health.parity.outputs}
            rows.append(
                measured
                | {
                    "command": command,
                    "device": device.device,
                    "destination": device.destination,
                    "target": targets.get(device.device),
                    "status": device.status.value,
                    "exit_code": device.code,
                    "error_kind": device.kind,
                    "reason": device.reason,
                    "model_name": device.model,
                    "model_sha256": sha,
                    "model_version": device.version,
                    "version": device.version,
                    "previous_version": device.previous,
                    "details": {
                        "model_file": model.path if model is not None else None,
                        "bytes_sent": device.bytes_sent,
                        "seconds": device.seconds,
                        "attempts": device.attempts,
                        "warnings": list(device.warnings),
                        "removed": list(device.removed),
                        # the check after the switch, where the deploy made one (read by name: optional)
                        "health": to_jsonable(getattr(device, "health", None)),
                    },
                }
            )
        return self.record_many(rows, at=at)

    def record_check(
        self,
        view: FleetCheck,
        fleet: FleetResult[DeviceCheck],
        *,
        at: datetime | str | None = None,
    ) -> int:
        """``edgeq check`` (both things :func:`edgeq.check.check_fleet` returns): one record per device and
        model, with the active version, the runtime now, the p50 and parity when measured, and the problems
        found (status ``failed``, kind ``check``); one record for a device that could not be checked or holds
        no model."""
        rows: list[dict[str, Any]] = []
        for name, checked, outcome in zip(view.names, view.devices, fleet.results):
            base: dict[str, Any] = {"command": "check", "device": name, "destination": outcome.destination}
            if checked is None or not checked.models:
                rows.append(
                    {
                        **base,
                        "target": checked.target if checked else None,
                        "status": outcome.status.value,
                        "exit_code": outcome.code,
                        "error_kind": outcome.kind,
                        "reason": outcome.reason,
                        "runtime": checked.runtime if checked else None,
                        "runtime_version": checked.runtime_version if checked else None,
                        "details": {"models": 0} if checked else {},
                    }
                )
                continue
            for m in checked.models:
                rows.append(
                    {
                        **base,
                        "target": checked.target,
                        "status": "ok" if m.ok else "failed",
                        "exit_code": 0 if m.ok else outcome.code,
                        "error_kind": None if m.ok else outcome.kind,
                        "reason": "; ".join(m.problems) or None,
                        "model_name": m.name,
                        "model_version": m.version,
                        "version": m.version,
                        "runtime": checked.runtime,
                        "runtime_version": checked.runtime_version,
                        "p50_ms": m.p50_ms,
                        "parity_bit_exact": m.parity.bit_exact if m.parity is not None else None,
                        "parity": m.parity.outputs if m.parity is not None else None,
                        "details": {
                            "expected": m.expected,
                            "intact": m.intact,
                            "detail": m.detail,
                            "deployed_runtime": m.deployed_runtime,
                            "deployed_runtime_version": m.deployed_runtime_version,
                            "baseline_p50_ms": m.baseline_p50_ms,
                            "drift_ms": m.drift_ms,
                            "speed": to_jsonable(m.speed),
                            "problems": list(m.problems),
                        },
                    }
                )
        return self.record_many(rows, at=at)

    def _prepare(self, fields: Mapping[str, Any], at: str) -> dict[str, Any]:
        unknown = sorted(set(fields) - _WRITABLE)
        if unknown:
            raise TypeError(f"not a column of the history: {', '.join(unknown)}")
        command, device = fields.get("command"), fields.get("device")
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}: one of {', '.join(COMMANDS)}")
        if not device or not isinstance(device, str):
            raise ValueError("a record needs a device name")
        row: dict[str, Any] = dict.fromkeys(_WRITABLE)
        row.update(fields)
        row["at"] = _at(row["at"]) if row["at"] is not None else at
        row["run_id"] = row["run_id"] or self.run_id
        row["status"] = row["status"] or "ok"
        row["exit_code"] = int(row["exit_code"] or 0)
        row["edgeq_version"] = row["edgeq_version"] or __version__
        latencies = [float(v) for v in (row["latencies"] or ())]
        if latencies:
            for name, value in _summarize(latencies).items():
                if row[name] is None:
                    row[name] = value
        row["latencies"] = json.dumps(latencies) if latencies else None
        row["parity"] = json.dumps(to_jsonable(row["parity"])) if row["parity"] is not None else None
        row["details"] = json.dumps(to_jsonable(dict(row["details"] or {})), allow_nan=False)
        for name in _BOOL_COLUMNS:
            row[name] = None if row[name] is None else int(bool(row[name]))
        for name in _SUMMARY[1:]:  # NaN is not a number SQLite keeps: it would come back as NULL anyway
            if isinstance(row[name], float) and not math.isfinite(row[name]):
                row[name] = None
        return row

    def _insert(self, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        names = sorted(_WRITABLE)
        sql = f"INSERT INTO records ({', '.join(names)}) VALUES ({', '.join(':' + n for n in names)})"
        try:
            with self._lock, self._transaction():
                self._conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            error = _error(self.path, "could not record: " + _sqlite_problem(exc))
            if self.on_error is None:
                raise error from exc
            self.on_error(error)
            return 0
        return len(rows)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")  # take the write lock now: the busy timeout applies to it
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # ----------------------------------------------------------------------- reading

    def query(
        self,
        device: str | Sequence[str] | None = None,
        model: str | None = None,
        since: datetime | None = None,
        command: str | Sequence[str] | None = None,
        limit: int | None = None,
        *,
        until: datetime | None = None,
    ) -> tuple[Record, ...]:
        """Records in time order, filtered: ``device`` (one name or several), ``model`` (a name, a glob such as
        ``digits*``, or a hash prefix of 4+ hex digits: full hash or version), ``since``/``until`` (aware or
        local datetimes), ``command``; ``limit`` keeps the most recent ones."""
        where, params = _filters(device, model, since, command, until)
        sql = f"SELECT {', '.join(COLUMNS)} FROM records" + (f" WHERE {' AND '.join(where)}" if where else "")
        if limit is not None:
            sql = f"SELECT * FROM ({sql} ORDER BY at DESC, id DESC LIMIT ?) ORDER BY at, id"
            params.append(int(limit))
        else:
            sql += " ORDER BY at, id"
        try:
            with self._lock:
                rows = self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _error(self.path, _sqlite_problem(exc)) from exc
        return tuple(_record_from_row(row) for row in rows)

    def deploys_for(
        self,
        records: Sequence[Record],
        *,
        device: str | Sequence[str] | None = None,
        since: datetime | None = None,
    ) -> tuple[Record, ...]:
        """The deploys and rollbacks of the models in ``records``: same model name, or a version one of them
        measured (``edgeq probe`` names a model by its file, ``deploy`` by ``--name``: the hash links them)."""
        names = {r.model_name for r in records if r.model_name}
        versions = {r.model_version for r in records if r.model_version}
        found = self.query(device=device, since=since, command=DEPLOY_COMMANDS)
        return tuple(
            r for r in found if r.model_name in names or r.version in versions or (r.previous_version or "") in versions
        )

    def count(self) -> int:
        """How many records the database holds."""
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM records").fetchone()[0])


def _filters(
    device: str | Sequence[str] | None,
    model: str | None,
    since: datetime | None,
    command: str | Sequence[str] | None,
    until: datetime | None,
) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("device", device), ("command", command)):
        if value is None:
            continue
        values = [value] if isinstance(value, str) else list(value)
        if values:
            where.append(f"{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)
    if model:
        clauses = ["model_name GLOB ?" if any(c in model for c in "*?[") else "model_name = ?"]
        params.append(model)
        if re.fullmatch(r"[0-9a-fA-F]{4,64}", model):
            prefix = model.lower()
            clauses += ["model_sha256 LIKE ?", "model_version LIKE ?", "version LIKE ?"]
            params += [prefix + "%", prefix[:12] + "%", prefix[:12] + "%"]
        where.append("(" + " OR ".join(clauses) + ")")
    if since is not None:
        where.append("at >= ?")
        params.append(_iso(since))
    if until is not None:
        where.append("at <= ?")
        params.append(_iso(until))
    return where, params


# --------------------------------------------------------------------------- from result objects


def _summarize(latencies: Sequence[float]) -> dict[str, Any]:
    """The probe's summary (linear percentiles as numpy's, sample standard deviation) with the standard library."""
    ordered = sorted(latencies)

    def percentile(p: float) -> float:
        position = (len(ordered) - 1) * p / 100
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    mean = math.fsum(ordered) / len(ordered)
    # statistics.stdev is exact (fractions) and 100x slower: plain floats, as numpy's
    variance = math.fsum((x - mean) ** 2 for x in ordered) / (len(ordered) - 1) if len(ordered) > 1 else 0.0
    return {
        "count": len(ordered),
        "min_ms": ordered[0],
        "mean_ms": mean,
        "std_ms": math.sqrt(variance),
        "p50_ms": percentile(50),
        "p90_ms": percentile(90),
        "p99_ms": percentile(99),
        "max_ms": ordered[-1],
    }


def _summary_fields(stats: Any) -> dict[str, Any]:
    return {name: getattr(stats, name) for name in _SUMMARY}


def _runtime_fields(result: Any) -> dict[str, Any]:
    return {
        "runtime": result.runtime,
        "runtime_version": result.runtime_version,
        "python": result.python,
        "numpy": result.numpy,
        "machine": result.machine,
        "threads": result.threads,
        "xnnpack": result.xnnpack,
    }


def _run_details(run: ModelRun) -> dict[str, Any]:
    return {
        "size_bytes": run.size_bytes,
        "rounds": run.rounds,
        "load_ms": run.load_ms,
        "first_inference_ms": run.first_inference_ms,
        "peak_rss_mb": run.peak_rss_mb,
        "throttled": run.throttled,
        "throttle_reason": run.throttle_reason,
    }


def _targets(devices: Sequence[Device]) -> dict[str, str | None]:
    return {d.name: d.target for d in devices}


def _stem(model: str) -> str:
    path = Path(model.rstrip("/"))
    return path.stem if path.suffix else path.name


def _recipe_mode(model_path: str) -> str | None:
    """The mode in the recipe edgeq wrote beside a model (``OUT.recipe.json``), if it is there and readable."""
    recipe = Path(model_path).with_suffix(".recipe.json")
    try:
        mode = json.loads(recipe.read_text()).get("mode")
    except (OSError, ValueError, AttributeError):
        return None
    return mode if isinstance(mode, str) else None


def _sha256_if(path: str | None, version: str | None) -> str | None:
    """The file's sha256 when it exists (and still holds ``version``, when one is given), else None."""
    if not path:
        return None
    try:
        digest = sha256_file(path).sha256
    except OSError:
        return None
    return digest if version is None or digest.startswith(version) else None


def _chosen_files(chosen: Mapping[str, Any] | None) -> dict[str, str]:
    """tune's ``chosen``: device -> the chosen model's path ("" when one file serves every device)."""
    if not chosen:
        return {}
    files = {"": str(chosen["path"])} if chosen.get("path") else {}
    for device, entry in (chosen.get("per_device") or {}).items():
        if isinstance(entry, Mapping) and entry.get("path"):
            files[str(device)] = str(entry["path"])
    return files


# --------------------------------------------------------------------------- the figure


def plot_history(
    records: Sequence[Record],
    out_png: str | os.PathLike[str],
    *,
    events: Sequence[Record] = (),
    title: str | None = None,
) -> Path:
    """p50 latency over time, one line per device and model version / variant, written atomically as PNG.

    ``events`` (deploy and rollback records; those among ``records`` count too) become vertical lines
    labelled with the version switched to, one per rollout. A change of runtime or runtime version
    along a line is written beside the point where it happened: that is where a regression shows.
    Returns the path written; ValueError when no record has a latency.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    measured = [r for r in records if r.p50_ms is not None]  # a check that found a slowdown measured it too
    if not measured:
        raise ValueError("no record with a latency to plot")
    switches = [r for r in (*records, *events) if r.command in DEPLOY_COMMANDS and r.status in ("ok", "unchanged")]
    series: dict[tuple[str, str, str, str], list[Record]] = {}
    for r in measured:
        key = (r.model_name or "?", r.device, r.variant or "", r.model_version or "")
        series.setdefault(key, []).append(r)
    models = sorted({key[0] for key in series})
    several_models = len(models) > 1

    fig, ax = plt.subplots(figsize=(11, 5.5))
    changes: dict[str, tuple[float, float]] = {}  # runtime -> the first point measured with it after another one
    for (model, device, variant, version), points in sorted(series.items()):
        points.sort(key=lambda r: (r.at, r.id))
        times = [float(t) for t in mdates.date2num([_local(r.time) for r in points])]
        latencies = [float(r.p50_ms or 0.0) for r in points]  # measured: every p50 is there
        label = " ".join(part for part in (model if several_models else "", device, variant, version) if part)
        (line,) = ax.plot(times, latencies, marker="o", markersize=4, linewidth=1.2, label=label)
        previous: str | None = None
        for r, when, p50 in zip(points, times, latencies):
            runtime = f"{r.runtime or '?'} {r.runtime_version or ''}".strip()
            if previous is not None and runtime != previous:
                ax.plot([when], [p50], marker="D", markersize=8, fillstyle="none", color=line.get_color())
                if runtime not in changes or when < changes[runtime][0]:
                    changes[runtime] = (when, p50)
            previous = runtime
    for runtime, (when, p50) in changes.items():  # once per runtime: a fleet upgraded at once is one label
        ax.annotate(f"-> {runtime}", (when, p50), textcoords="offset points", xytext=(6, 8), fontsize=8)

    rollouts: dict[tuple[str, str, str | None], list[Record]] = {}
    for r in switches:
        rollouts.setdefault((r.run_id, r.command, r.version), []).append(r)
    for (_run, command, switched_to), rows in sorted(rollouts.items(), key=lambda item: min(r.at for r in item[1])):
        when = float(mdates.date2num(_local(min(r.time for r in rows))))
        color = "#2ca02c" if command == "deploy" else "#d62728"
        ax.axvline(when, color=color, linestyle="--" if command == "deploy" else ":", linewidth=1.2, alpha=0.8)
        who = rows[0].device if len(rows) == 1 else f"{len(rows)} devices"
        ax.annotate(
            f"{command} {switched_to or '?'} ({who})",
            (when, 0.02),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="bottom",
            ha="right",
            fontsize=7,
            color=color,
        )
    ax.set_ylim(0, max(r.p50_ms or 0.0 for r in measured) * 1.15)  # from 0: a step reads as its true size
    ax.set_ylabel("p50 latency (ms)")
    ax.set_xlabel("time (local)")
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"{', '.join(models)}: p50 latency per device over time")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    out = Path(out_png)
    atomic_write_bytes(out, buffer.getvalue())
    return out


def _local(moment: datetime) -> datetime:
    """This machine's local time, naive (what matplotlib draws on a date axis as it is)."""
    return moment.astimezone().replace(tzinfo=None)
