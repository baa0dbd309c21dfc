"""What the deploy operations return: a model's state on a device, each device's result, a fleet's results."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ..errors import InternalError, ModelStateError
from ..fleet import DeviceStatus, Outcome, reason_of, status_of
from ..health import Health
from ..types import to_jsonable

if TYPE_CHECKING:
    from ..devices import Device

__all__ = [
    "DeployFleetResult",
    "DeviceResult",
    "ModelCheckError",
    "ModelState",
    "VersionInfo",
    "device_result",
    "result_from_outcome",
]


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    """One version of a model on a device, from its folder and the manifest."""

    version: str
    sha256: str | None = None
    size_bytes: int | None = None
    deployed_at: str | None = None
    source: str | None = None
    active: bool = False


@dataclasses.dataclass(frozen=True)
class ModelState:
    """A model on one device: the active version, whether its file matches its hash, the versions kept."""

    name: str
    current: str | None
    intact: bool | None  # None: no active version to check
    detail: str | None  # why it is not intact
    versions: tuple[VersionInfo, ...]
    free_bytes: int | None = None


@dataclasses.dataclass(frozen=True)
class DeviceResult:
    """What one operation (deploy, status, rollback, remove) did on one device.

    ``code`` and ``kind`` say what a failure was: the exit code and kind of
    the edgeq error behind it (``0`` and ``None`` when the device succeeded).
    """

    device: str
    destination: str
    action: str  # "deploy" | "status" | "rollback" | "remove"
    model: str
    status: DeviceStatus
    code: int = 0
    kind: str | None = None
    version: str | None = None  # active version afterwards
    previous: str | None = None  # active version before
    reason: str | None = None
    hint: str | None = None
    bytes_sent: int = 0
    seconds: float = 0.0
    attempts: int = 0
    state: ModelState | None = None
    removed: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    health: Health | None = None  # the check after the switch (deploy with --check-samples / --max-slowdown)


class ModelCheckError(ModelStateError):
    """``status`` found the model absent, without an active version, or damaged; what it read comes along."""

    def __init__(
        self, message: str, hint: str | None = None, *, version: str | None = None, state: ModelState | None = None
    ):
        super().__init__(message, hint)
        self.version = version
        self.state = state


@dataclasses.dataclass(frozen=True)
class DeployFleetResult:
    """Every device of a deploy, status, rollback or removal, in the order given."""

    action: str
    model: str
    version: str | None
    results: tuple[DeviceResult, ...]
    seconds: float
    stopped_by_canary: bool = False
    stop_reason: str | None = None  # why the rollout stopped (the canary or a batch failed)
    undone: bool = False  # the devices it had switched were switched back

    @property
    def ok(self) -> bool:
        return all(r.status.succeeded for r in self.results)

    @property
    def failures(self) -> tuple[DeviceResult, ...]:
        return tuple(r for r in self.results if not r.status.succeeded)

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for r in self.results if r.status is s) for s in DeviceStatus}

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = to_jsonable(self)
        data["ok"] = self.ok
        data["counts"] = self.counts()
        return data


def device_result(
    device: Device,
    action: str,
    model: str,
    status: DeviceStatus,
    *,
    version: str | None = None,
    previous: str | None = None,
    reason: str | None = None,
    bytes_sent: int = 0,
    state: ModelState | None = None,
    removed: tuple[str, ...] = (),
    warnings: tuple[str, ...] = (),
) -> DeviceResult:
    """A :class:`DeviceResult` for ``device`` (what the one-device operations return)."""
    return DeviceResult(
        device=device.name,
        destination=device.destination,
        action=action,
        model=model,
        status=status,
        version=version,
        previous=previous,
        reason=reason,
        bytes_sent=bytes_sent,
        state=state,
        removed=removed,
        warnings=warnings,
    )


def result_from_outcome(outcome: Outcome[DeviceResult], action: str, model: str) -> DeviceResult:
    """A fleet runner's outcome as a :class:`DeviceResult`: the operation's own, or one made from its error."""
    if outcome.value is not None:
        return dataclasses.replace(outcome.value, attempts=outcome.attempts, seconds=outcome.seconds)
    error = outcome.error
    if error is None:  # the one-device operations always return a result
        raise InternalError(f"{outcome.device}: {action} returned nothing")
    checked = error if isinstance(error, ModelCheckError) else None
    health = getattr(error, "health", None)
    return DeviceResult(
        device=outcome.device,
        destination=outcome.destination,
        action=action,
        model=model,
        status=status_of(error),
        code=error.exit_code,
        kind=error.kind,
        version=getattr(error, "version", None),
        reason=reason_of(error, outcome.device),
        hint=error.hint,
        attempts=outcome.attempts,
        seconds=outcome.seconds,
        state=checked.state if checked else None,
        health=health if isinstance(health, Health) else None,
    )
