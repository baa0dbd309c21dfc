"""``edgeq check`` results for Prometheus: node_exporter's textfile-collector format, written atomically.

The metrics (one sample per device and model; ``device`` is the inventory name):

* ``edgeq_device_up{device}``: 1 when the device was checked, 0 when it could not be reached or read;
* ``edgeq_model_info{device,model,version,expected}``: 1 for the active version (a label join gives what runs where);
* ``edgeq_model_expected{device,model}``: 1 when the device runs the fleet's expected version;
* ``edgeq_model_intact{device,model}``: 1 when the active file matches its sha256;
* ``edgeq_model_runtime_changed{device,model}``: 1 when the runtime is not the one of the deploy's health check;
* ``edgeq_model_problems{device,model}``: how many problems the check found;
* ``edgeq_model_p50_seconds{device,model}`` and ``edgeq_model_drift_seconds{device,model}``: with --samples;
* ``edgeq_check_timestamp_seconds``: when the check ran (alert when it stops being fresh).

prometheus-client renders them (its ``write_to_textfile`` writes a temporary file beside the target and
renames it, so node_exporter never reads half a file).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .check import DeviceCheck, FleetCheck

__all__ = ["PROM_FILE", "device_registry", "fleet_registry", "render", "write_textfile"]

PROM_FILE = "edgeq.prom"


def _registry(rows: list[tuple[str, DeviceCheck | None]], at: float) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    up = Gauge("edgeq_device_up", "1 when edgeq check could read the device", ["device"], registry=registry)
    info = Gauge(
        "edgeq_model_info",
        "The active version of a model",
        ["device", "model", "version", "expected"],
        registry=registry,
    )
    expected = Gauge(
        "edgeq_model_expected",
        "1 when the device runs the fleet's expected version",
        ["device", "model"],
        registry=registry,
    )
    intact = Gauge(
        "edgeq_model_intact", "1 when the active file matches its sha256", ["device", "model"], registry=registry
    )
    changed = Gauge(
        "edgeq_model_runtime_changed",
        "1 when the runtime differs from the one of the deploy's health check",
        ["device", "model"],
        registry=registry,
    )
    problems = Gauge("edgeq_model_problems", "Problems edgeq check found", ["device", "model"], registry=registry)
    p50 = Gauge(
        "edgeq_model_p50_seconds", "p50 latency measured by edgeq check", ["device", "model"], registry=registry
    )
    drift = Gauge(
        "edgeq_model_drift_seconds",
        "p50 now minus p50 at the deploy's health check",
        ["device", "model"],
        registry=registry,
    )
    stamp = Gauge("edgeq_check_timestamp_seconds", "When edgeq check ran (Unix time)", registry=registry)
    stamp.set(at)
    for name, device in rows:
        up.labels(name).set(0 if device is None else 1)
        for m in device.models if device else ():
            info.labels(name, m.name, m.version or "none", m.expected or "unknown").set(1)
            expected.labels(name, m.name).set(1 if m.expected is None or m.version == m.expected else 0)
            intact.labels(name, m.name).set(1 if m.intact else 0)
            changed.labels(name, m.name).set(1 if any("runtime changed" in p for p in m.problems) else 0)
            problems.labels(name, m.name).set(len(m.problems))
            if m.p50_ms is not None:
                p50.labels(name, m.name).set(m.p50_ms / 1000.0)
            if m.drift_ms is not None:
                drift.labels(name, m.name).set(m.drift_ms / 1000.0)
    return registry


def fleet_registry(view: FleetCheck, at: float | None = None) -> CollectorRegistry:
    """Every device of a fleet's check (devices that could not be read: ``edgeq_device_up 0``)."""
    return _registry(list(zip(view.names, view.devices, strict=True)), time.time() if at is None else at)


def device_registry(name: str, device: DeviceCheck | None, at: float | None = None) -> CollectorRegistry:
    """One device's own metrics (what ``--on-device`` puts in its node_exporter's folder)."""
    return _registry([(name, device)], time.time() if at is None else at)


def render(registry: CollectorRegistry) -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(registry)


def write_textfile(folder: str, registry: CollectorRegistry, name: str = PROM_FILE) -> str:
    """``folder/name`` written atomically (temporary file, then rename); its path."""
    import os

    from prometheus_client import write_to_textfile

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    write_to_textfile(path, registry)
    return path
