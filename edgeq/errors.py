"""The errors a user can act on, their kinds and their exit codes.

Every error edgeq raises on purpose derives from :class:`EdgeqError`. The CLI
catches that family at one place (``edgeq.cli``), prints ``Error: ...``
and an optional ``Hint: ...`` on stderr and exits with the error's code.
Anything else is a bug and keeps its traceback.

Each class has a stable ``kind`` (what JSON output and decisions use: no
decision is ever taken by matching an error's message) and an exit code.
A more specific case is a subclass, so that code can tell it apart by type:

    EdgeqError                      exit 1   kind "error"
    ├── TargetFileError             exit 3   "target-file"       a target file is missing or invalid
    ├── CalibrationDataError        exit 4   "calibration-data"  calibration / evaluation data unusable
    ├── ModelError                  exit 5   "model"             a model path is missing or not a model
    ├── ConversionError             exit 6   "conversion"        the converter failed or produced something refused
    ├── DeviceUnreachableError      exit 7   "unreachable"       TCP/SSH connection could not be made, or was lost
    ├── DeviceAuthError             exit 8   "authentication"    authentication failed
    ├── HostKeyError                exit 9   "host-key"          unknown or changed host key
    ├── RemoteCommandError          exit 10  "remote-command"    a command on the device failed
    │   ├── CommandTimeoutError              "command-timeout"   ... because it overran its time limit
    │   └── NoRuntimeError                   "no-runtime"        ... because the probe found no TFLite runtime to import
    ├── ProbeOutputError            exit 11  "probe-output"      the probe's result could not be read
    ├── PartialFailure              exit 12  "partial-failure"   devices of a fleet failed in different ways
    │   ├── NotAttempted                     "skipped"           a device left out after a failed canary or batch
    │   └── RolledBack                       "undone"            a device switched by a rollout that stopped, switched back
    ├── ModelStateError             exit 1   "model-state"       a model on a device is absent or damaged, or lacks that version
    ├── BudgetNotMet (edgeq.tune)   exit 13  "budget-not-met"    no candidate within the accuracy budget
    ├── DeviceNotReady              exit 14  "not-ready"         a device fails the checks of edgeq doctor (run before deploy, probe, ...)
    │   └── ProvisionError (edgeq.provision)  "no-wheel"         no runtime wheel fits the device, or the host cannot get one
    ├── HistoryError                exit 15  "history"           the history database is corrupt, not edgeq's, from a newer edgeq or unwritable
    ├── HealthCheckFailed           exit 16  "health-check"      a deployed model failed its check on the device and was rolled back
    └── CheckFailed (edgeq.check)   exit 17  "check"             edgeq check found a problem (version drift, a changed file or runtime)

Exit code 2 is click's: bad command-line usage; 130 is an interrupt (Ctrl-C).
How a fleet's failures become one exit code is ``edgeq.cli._devices.raise_for_fleet``'s rule.
"""

from __future__ import annotations

__all__ = [
    "CalibrationDataError",
    "CommandTimeoutError",
    "ConversionError",
    "DeviceAuthError",
    "DeviceNotReady",
    "DeviceUnreachableError",
    "EdgeqError",
    "HealthCheckFailed",
    "HistoryError",
    "HostKeyError",
    "InternalError",
    "ModelError",
    "ModelStateError",
    "NoRuntimeError",
    "NotAttempted",
    "PartialFailure",
    "ProbeOutputError",
    "RemoteCommandError",
    "RolledBack",
    "TargetFileError",
    "error_class",
]


class EdgeqError(Exception):
    """An error the user can act on: a message, an optional hint, a kind and an exit code."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class TargetFileError(EdgeqError):
    exit_code = 3
    kind = "target-file"


class CalibrationDataError(EdgeqError):
    exit_code = 4
    kind = "calibration-data"


class ModelError(EdgeqError):
    exit_code = 5
    kind = "model"


class ConversionError(EdgeqError):
    exit_code = 6
    kind = "conversion"


class DeviceUnreachableError(EdgeqError):
    exit_code = 7
    kind = "unreachable"


class DeviceAuthError(EdgeqError):
    exit_code = 8
    kind = "authentication"


class HostKeyError(EdgeqError):
    exit_code = 9
    kind = "host-key"


class RemoteCommandError(EdgeqError):
    exit_code = 10
    kind = "remote-command"


class ProbeOutputError(EdgeqError):
    exit_code = 11
    kind = "probe-output"


class PartialFailure(EdgeqError):
    exit_code = 12
    kind = "partial-failure"


class CommandTimeoutError(RemoteCommandError):
    """A remote command overran its time limit and was stopped."""

    kind = "command-timeout"


class NoRuntimeError(RemoteCommandError):
    """The probe ran, but none of the TFLite runtimes it was asked to use could be imported on the device."""

    kind = "no-runtime"


class NotAttempted(PartialFailure):
    """A device of a fleet that was not worked on: the canary devices before it failed."""

    kind = "skipped"


class ModelStateError(EdgeqError):
    """A model on a device is absent, has no active version or is damaged, or has no such version (status, rollback, remove)."""

    kind = "model-state"


class DeviceNotReady(EdgeqError):
    """A device cannot run what was asked: no working runtime, a runtime too old for the model's kernels,
    a full disk, a target file that does not describe it (``edgeq doctor`` lists each problem and its fix)."""

    exit_code = 14
    kind = "not-ready"


class HealthCheckFailed(EdgeqError):
    """The model deployed to a device failed its health check there (load, parity, slowdown); the device was
    switched back. ``version``: the version active afterwards (None: the model was removed); ``health``: the check."""

    exit_code = 16
    kind = "health-check"

    def __init__(self, message: str, hint: str | None = None, *, version: str | None = None, health: object = None):
        super().__init__(message, hint)
        self.version = version
        self.health = health


class HistoryError(EdgeqError):
    """The history database (edgeq.history) cannot be used: not an SQLite file, corrupt, another program's or
    from a newer edgeq (the file is left as it was), or it could not be written."""

    exit_code = 15
    kind = "history"


class RolledBack(PartialFailure):
    """A device a rollout had switched, switched back because the rollout stopped (``version``: active afterwards)."""

    kind = "undone"

    def __init__(self, message: str, hint: str | None = None, *, version: str | None = None):
        super().__init__(message, hint)
        self.version = version


def error_class(kind: str) -> type[EdgeqError]:
    """The error class whose kind is ``kind`` (:class:`EdgeqError` for a kind no class has)."""
    pending: list[type[EdgeqError]] = [EdgeqError]
    while pending:
        cls = pending.pop()
        if cls.__dict__.get("kind") == kind:
            return cls
        pending.extend(cls.__subclasses__())
    return EdgeqError


class InternalError(Exception):
    """A broken invariant inside edgeq: a bug, deliberately not an EdgeqError."""
