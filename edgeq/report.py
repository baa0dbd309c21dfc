"""Rendering result objects: rich tables for people, JSON for machines."""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

from rich.table import Table
from rich.text import Text

from .types import ConversionReport, ModelSummary, TensorInfo, to_jsonable

__all__ = [
    "to_json",
    "conversion_tables",
    "summary_tables",
    "layer_table",
    "format_bytes",
]


def to_json(value: Any) -> str:
    return json.dumps(to_jsonable(value), indent=2)


def format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def _db(value: float) -> str:
    if math.isinf(value):
        return "inf (identical)" if value > 0 else "-inf"
    return f"{value:.1f} dB"


def _quant(t: TensorInfo) -> str:
    if t.scale is None:
        return "-"
    return f"scale {t.scale:.6g} zp {t.zero_point}" + (" (per-channel)" if t.per_channel else "")


def _io_table(title: str, tensors: Iterable[TensorInfo]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("name", "shape", "type", "quantization"):
        table.add_column(col)
    for t in tensors:
        table.add_row(t.name, "x".join(str(d) for d in t.shape), t.dtype, _quant(t))
    return table


def summary_tables(summary: ModelSummary) -> list[Any]:
    """Inputs, outputs, op census and tensor types of a .tflite model."""
    head = Table.grid(padding=(0, 2))
    head.add_row("model", summary.path)
    head.add_row("size", f"{summary.size_bytes} bytes ({format_bytes(summary.size_bytes)})")
    head.add_row("ops left in float", ", ".join(summary.float_ops) or "none")
    ops = Table(title="op census", title_justify="left")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for name, count in sorted(summary.op_counts.items(), key=lambda kv: (-kv[1], kv[0])):
        ops.add_row(name, str(count))
    types = Table(title="tensor types", title_justify="left")
    types.add_column("type")
    types.add_column("tensors", justify="right")
    for name, count in summary.tensor_type_counts.items():
        types.add_row(name, str(count))
    return [head, _io_table("inputs", summary.inputs), _io_table("outputs", summary.outputs), ops, types]


def layer_table(layers: Iterable[Any]) -> Table:
    """Layers with the largest quantization error (from ``edgeq inspect --per-layer``)."""
    table = Table(title="layers by quantization error (RMSE / scale; ~0.29 is ideal rounding)", title_justify="left")
    for col, justify in (("op", "left"), ("tensor", "left"), ("RMSE/scale", "right"), ("max abs error", "right"), ("scale", "right")):
        table.add_column(col, justify=justify, overflow="fold")
    for layer in layers:
        table.add_row(layer.op, layer.tensor, f"{layer.rmse_over_scale:.3f}", f"{layer.max_abs_error:.4g}", f"{layer.scale:.4g}")
    return table


def conversion_tables(report: ConversionReport) -> list[Any]:
    """The size / fidelity / accuracy table printed after ``edgeq convert``."""
    table = Table(title=f"edgeq convert: {report.mode.value} ({report.io_type.value} I/O)", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("float32 size", f"{report.float_size_bytes} B ({format_bytes(report.float_size_bytes)})")
    table.add_row(f"{report.mode.value} size", f"{report.quantized_size_bytes} B ({format_bytes(report.quantized_size_bytes)})")
    table.add_row("size ratio (quantized / float)", f"{report.size_ratio:.3f}")
    table.add_row("calibration samples", str(report.calibration_samples))
    table.add_row("ops left in float", ", ".join(report.summary.float_ops) or "none")
    for t in report.summary.inputs:
        table.add_row(f"input '{t.name}'", f"{t.dtype}  {_quant(t)}")
    for t in report.summary.outputs:
        table.add_row(f"output '{t.name}'", f"{t.dtype}  {_quant(t)}")
    if report.fidelity:
        table.add_row("held-out samples (not calibrated on)", str(report.fidelity.samples))
        for out in report.fidelity.outputs:
            if out.top1_agreement is not None:
                table.add_row(f"top-1 agreement '{out.name}'", f"{out.top1_agreement * 100:.2f} %")
            elif out.float_undetermined:
                table.add_row(f"top-1 agreement '{out.name}'", "n/a (float model has no unique top class)")
            table.add_row(f"SQNR '{out.name}'", _db(out.sqnr_db))
            table.add_row(f"mean / max abs error '{out.name}'", f"{out.mean_abs_error:.4g} / {out.max_abs_error:.4g}")
    if report.accuracy:
        acc = report.accuracy
        table.add_row(f"float accuracy ({acc.samples} labelled)", f"{acc.float_accuracy * 100:.2f} %")
        table.add_row(f"{report.mode.value} accuracy", f"{acc.quantized_accuracy * 100:.2f} %")
        style = "red" if acc.drop_points > 1.0 else ""
        table.add_row("accuracy drop", Text(f"{acc.drop_points:.2f} points", style=style))
    parts: list[Any] = [table]
    for warning in report.warnings:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    return parts
