"""The errors a user can act on, and their exit codes.

Every error edgeq raises on purpose derives from :class:`EdgeqError`. The CLI
catches that family at one place (``edgeq.cli.main``), prints ``Error: ...``
and an optional ``Hint: ...`` on stderr and exits with the error's code.
Anything else is a bug and keeps its traceback.

    EdgeqError                      exit 1
    ├── TargetFileError             exit 3   a target file is missing or invalid
    ├── CalibrationDataError        exit 4   calibration / evaluation data unusable
    ├── ModelError                  exit 5   a model path is missing or not a model
    ├── ConversionError             exit 6   the converter failed or produced something refused
    ├── DeviceUnreachableError      exit 7   TCP/SSH connection could not be made
    ├── DeviceAuthError             exit 8   authentication failed
    ├── HostKeyError                exit 9   unknown or changed host key
    ├── RemoteCommandError          exit 10  a command on the device failed
    ├── ProbeOutputError            exit 11  the probe's result could not be read
    ├── PartialFailure              exit 12  some devices of a fleet failed
    └── BudgetNotMet (edgeq.tune)   exit 13  no candidate within the accuracy budget

Exit code 2 is click's: bad command-line usage.
"""

from __future__ import annotations

__all__ = [
    "CalibrationDataError",
    "ConversionError",
    "DeviceAuthError",
    "DeviceUnreachableError",
    "EdgeqError",
    "HostKeyError",
    "InternalError",
    "ModelError",
    "PartialFailure",
    "ProbeOutputError",
    "RemoteCommandError",
    "TargetFileError",
]


class EdgeqError(Exception):
    """An error the user can act on: a message, an optional hint, an exit code."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class TargetFileError(EdgeqError):
    exit_code = 3


class CalibrationDataError(EdgeqError):
    exit_code = 4


class ModelError(EdgeqError):
    exit_code = 5


class ConversionError(EdgeqError):
    exit_code = 6


class DeviceUnreachableError(EdgeqError):
    exit_code = 7


class DeviceAuthError(EdgeqError):
    exit_code = 8


class HostKeyError(EdgeqError):
    exit_code = 9


class RemoteCommandError(EdgeqError):
    exit_code = 10


class ProbeOutputError(EdgeqError):
    exit_code = 11


class PartialFailure(EdgeqError):
    exit_code = 12


class InternalError(Exception):
    """A broken invariant inside edgeq: a bug, deliberately not an EdgeqError."""
