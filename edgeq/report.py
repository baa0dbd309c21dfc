"""Rendering result objects: rich tables for people, JSON for machines."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from rich.console import JustifyMethod, RenderableType
from rich.table import Table
from rich.text import Text

from .errors import InternalError
from .types import ConversionReport, ModelSummary, TensorInfo, to_jsonable

if TYPE_CHECKING:
    from .bench import BenchReport, DeviceBench, ModelRun
    from .debugger import LayerError
    from .probe import Parity
    from .quantize import Layer
    from .stats import Speedup
    from .tune import Candidate, Score, TuneReport

__all__ = [
    "conversion_tables",
    "format_bytes",
    "layer_table",
    "summary_tables",
    "to_json",
]


def _justify(value: str) -> JustifyMethod:
    if value not in ("default", "left", "center", "right", "full"):
        raise ValueError(value)
    return value  # type: ignore[return-value]  # narrowed by the check above


def to_json(value: Any) -> str:
    return json.dumps(to_jsonable(value), indent=2)


def format_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)  # pragma: no cover


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


def summary_tables(summary: ModelSummary) -> list[RenderableType]:
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


def layers_table(layers: Iterable[Layer]) -> Table:
    table = Table(title="layers (select them with --layer PATTERN=PRECISION or --op OP=PRECISION)")
    for col in ("#", "op", "weights", "name"):
        table.add_column(col, justify="right" if col == "#" else "left", overflow="fold")
    for layer in layers:
        table.add_row(str(layer.index), layer.op, "yes" if layer.has_weights else "", layer.name)
    return table


def layer_table(layers: Iterable[LayerError]) -> Table:
    """Layers with the largest quantization error (from ``edgeq inspect --per-layer``)."""
    table = Table(title="layers by quantization error (RMSE / scale; ~0.29 is ideal rounding)", title_justify="left")
    for col, justify in (
        ("op", "left"),
        ("tensor", "left"),
        ("RMSE/scale", "right"),
        ("max abs error", "right"),
        ("scale", "right"),
    ):
        table.add_column(col, justify=_justify(justify), overflow="fold")
    for layer in layers:
        table.add_row(
            layer.op, layer.tensor, f"{layer.rmse_over_scale:.3f}", f"{layer.max_abs_error:.4g}", f"{layer.scale:.4g}"
        )
    return table


def conversion_tables(report: ConversionReport) -> list[RenderableType]:
    """The size / fidelity / accuracy table printed after ``edgeq convert``."""
    table = Table(title=f"edgeq convert: {report.mode.value} ({report.io_type.value} I/O)", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("float32 size", f"{report.float_size_bytes} B ({format_bytes(report.float_size_bytes)})")
    table.add_row(
        f"{report.mode.value} size", f"{report.quantized_size_bytes} B ({format_bytes(report.quantized_size_bytes)})"
    )
    table.add_row("size ratio (quantized / float)", f"{report.size_ratio:.3f}")
    table.add_row("calibration samples", str(report.calibration_samples))
    if report.engine:
        table.add_row("quantized by", report.engine)
    for override in report.overrides:
        table.add_row("override", override)
    from .kernels import weights_text

    weights = weights_text(report.weights)
    if weights:
        table.add_row("weights", weights)
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
    parts: list[RenderableType] = [table]
    for warning in report.warnings:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    return parts


# --------------------------------------------------------------------------- bench


CSV_FIELDS = (
    "device",
    "target",
    "status",
    "model",
    "size_bytes",
    "runtime",
    "runtime_version",
    "threads",
    "xnnpack",
    "runs",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "std_ms",
    "min_ms",
    "max_ms",
    "speedup",
    "speedup_ci_low",
    "speedup_ci_high",
    "throttled",
    "parity_bit_exact",
    "verdict",
    "reason",
)


def _measured(d: DeviceBench) -> tuple[ModelRun, ModelRun, Speedup]:
    """A measured device's float32 and int8 runs and the speedup (all set when its status is "ok")."""
    if d.float32 is None or d.int8 is None or d.speedup is None:
        raise InternalError(f"{d.device}: bench status {d.status!r} without its measurements")
    return d.float32, d.int8, d.speedup


def bench_rows(report: BenchReport) -> list[dict[str, object]]:
    """One row per device and model (a failed device gives one row with its reason)."""
    rows: list[dict[str, object]] = []
    for d in report.devices:
        base = {"device": d.device, "target": d.target or "", "status": d.status, "reason": d.reason or ""}
        if d.status != "ok":
            rows.append({**{k: "" for k in CSV_FIELDS}, **base})
            continue
        float32, int8, speedup = _measured(d)
        for run in (float32, int8):
            lat = run.latency
            rows.append(
                {
                    **base,
                    "model": run.label,
                    "size_bytes": run.size_bytes,
                    "runtime": run.runtime,
                    "runtime_version": run.runtime_version or "",
                    "threads": run.threads,
                    "xnnpack": run.xnnpack,
                    "runs": lat.count,
                    "p50_ms": f"{lat.p50_ms:.4f}",
                    "p90_ms": f"{lat.p90_ms:.4f}",
                    "p99_ms": f"{lat.p99_ms:.4f}",
                    "mean_ms": f"{lat.mean_ms:.4f}",
                    "std_ms": f"{lat.std_ms:.4f}",
                    "min_ms": f"{lat.min_ms:.4f}",
                    "max_ms": f"{lat.max_ms:.4f}",
                    "speedup": f"{speedup.ratio:.4f}",
                    "speedup_ci_low": f"{speedup.ci_low:.4f}",
                    "speedup_ci_high": f"{speedup.ci_high:.4f}",
                    "throttled": run.throttled,
                    "parity_bit_exact": "" if d.parity is None else d.parity.bit_exact,
                    "verdict": d.verdict,
                }
            )
    return rows


def bench_csv(report: BenchReport) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(bench_rows(report))
    return buf.getvalue()


def _ms(value: float) -> str:
    """Milliseconds with 4 significant digits: 41.27, 0.006551 (a microsecond model is not 0.007)."""
    return f"{value:.4g}"


def _speedup_text(s: Speedup) -> str:
    return f"{s.ratio:.2f}x [{s.ci_low:.2f}, {s.ci_high:.2f}]"


def _parity_text(d: DeviceBench) -> str:
    return "-" if d.parity is None else _parity_words(d.parity)


def bench_markdown(report: BenchReport, figure: str | None = None) -> str:
    conv = report.conversion or {}
    lines = [
        f"# edgeq bench: {report.model}",
        "",
        f"- float32 model: {report.float_size_bytes} bytes; int8 model: {report.int8_size_bytes} bytes "
        f"({report.int8_size_bytes / report.float_size_bytes:.3f} of float)",
    ]
    acc = conv.get("accuracy")
    if acc:
        lines.append(
            f"- accuracy on {acc['samples']} labelled samples: float {acc['float_accuracy'] * 100:.2f} %, "
            f"int8 {acc['quantized_accuracy'] * 100:.2f} % (drop {acc['drop_points']:.2f} points)"
        )
    for out in (conv.get("fidelity") or {}).get("outputs", []):
        top1 = "n/a" if out.get("top1_agreement") is None else f"{out['top1_agreement'] * 100:.2f} %"
        sqnr = "inf" if out.get("sqnr_db") is None else f"{out['sqnr_db']:.1f} dB"
        lines.append(f"- fidelity of '{out['name']}' on held-out data: top-1 agreement {top1}, SQNR {sqnr}")
    lines += [
        "",
        "| device | target | runtime | threads | float32 p50 ms | int8 p50 ms | speedup [95 % CI] | parity | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d in report.devices:
        if d.status != "ok":
            lines.append(f"| {d.device} | {d.target or '-'} | - | - | - | - | - | - | {d.status}: {d.reason} |")
            continue
        float32, int8, speedup = _measured(d)
        runtime = f"{int8.runtime} {int8.runtime_version or ''}".strip()
        flags = " (throttled)" if float32.throttled or int8.throttled else ""
        lines.append(
            f"| {d.device} | {d.target or '-'} | {runtime} | {int8.threads} | {_ms(float32.latency.p50_ms)} | "
            f"{_ms(int8.latency.p50_ms)} | {_speedup_text(speedup)} | {_parity_text(d)} | {d.verdict}{flags} |"
        )
    fleet = report.fleet
    if fleet.devices > 1 and fleet.measured:
        lines += [
            "",
            f"Fleet: {fleet.measured} of {fleet.devices} devices measured; speedup min {fleet.speedup_min:.2f}x, "
            f"median {fleet.speedup_median:.2f}x, max {fleet.speedup_max:.2f}x.",
        ]
        if fleet.outliers:
            lines.append(f"Outlier devices: {', '.join(fleet.outliers)}.")
    recommended = [(d, label, p) for d in report.devices for label, p in d.recommended.items()]
    if recommended:
        lines += ["", "| device | model | fastest runtime | threads | p50 ms |", "| --- | --- | --- | --- | --- |"]
        for d, label, p in recommended:
            lines.append(
                f"| {d.device} | {label} | {p.runtime} {p.runtime_version or ''} | {p.threads} | {_ms(p.p50_ms)} |"
            )
    if figure:
        lines += ["", f"![latency and speedup]({figure})"]
    return "\n".join(lines) + "\n"


def bench_figure(report: BenchReport, target: Path | BinaryIO) -> None:
    """Latency distribution per device and model, and the speedup per device with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    measured = [(d.device, *_measured(d)) for d in report.devices if d.status == "ok"]
    fig, (ax_lat, ax_speed) = plt.subplots(
        1, 2, figsize=(11, 1.6 + 0.9 * max(1, len(measured))), gridspec_kw={"width_ratios": [3, 2]}
    )
    data, labels, colors = [], [], []
    for device, float32, int8, _ in measured:
        for run, color in ((float32, "#4c72b0"), (int8, "#dd8452")):
            data.append(run.latencies_ms)
            labels.append(f"{device} {run.label}")
            colors.append(color)
    if data:
        boxes = ax_lat.boxplot(
            data,
            orientation="horizontal",
            showfliers=False,
            patch_artist=True,
            widths=0.6,
            medianprops={"color": "black", "linewidth": 1.5},
        )
        for patch, color in zip(boxes["boxes"], colors):
            patch.set_facecolor(color)
        ax_lat.set_yticks(range(1, len(labels) + 1), labels)
        ax_lat.invert_yaxis()
    if data and max(max(d) for d in data) > 10 * min(min(d) for d in data):
        ax_lat.set_xscale("log")  # models or runtimes far apart: a linear axis flattens the fast ones
        ax_lat.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax_lat.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax_lat.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax_lat.set_xlabel("latency per inference (ms), whiskers 1.5 IQR")
    ax_lat.set_title("latency on each device")
    names = [device for device, *_ in measured]
    speedups = [speedup for *_, speedup in measured]
    ratios = [s.ratio for s in speedups]
    lows = [s.ratio - s.ci_low for s in speedups]
    highs = [s.ci_high - s.ratio for s in speedups]
    ax_speed.errorbar(ratios, range(len(names)), xerr=[lows, highs], fmt="o", color="#333333", capsize=4)
    ax_speed.axvline(1.0, color="#c44e52", linestyle="--", linewidth=1)
    ax_speed.set_xscale("log")  # ratios: 2x faster and 2x slower lie equally far from 1
    if ratios:
        low, high = (
            min([s.ci_low for s in speedups] + [1.0]),
            max([s.ci_high for s in speedups] + [1.0]),
        )
        ax_speed.set_xlim(low / 1.5, high * 1.5)
        ax_speed.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}x"))
        ax_speed.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax_speed.set_yticks(range(len(names)), names)
    ax_speed.invert_yaxis()
    ax_speed.set_xlabel("p50 ratio float32 / int8, 95 % CI")
    ax_speed.set_title("int8 speedup (right of 1x: faster)")
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=110)
    plt.close(fig)


def write_bench_reports(report: BenchReport, prefix: Path) -> dict[str, Path]:
    """Write PREFIX.json, .csv, .md and .png atomically; return them by kind."""
    from .files import atomic_write_bytes, atomic_writer

    paths = {kind: prefix.with_name(prefix.name + "." + kind) for kind in ("json", "csv", "md", "png")}
    atomic_write_bytes(paths["json"], (to_json(report) + "\n").encode())
    atomic_write_bytes(paths["csv"], bench_csv(report).encode())
    atomic_write_bytes(paths["md"], bench_markdown(report, figure=paths["png"].name).encode())
    with atomic_writer(paths["png"]) as handle:
        bench_figure(report, handle)
    return paths


def probe_table(rows: list[dict[str, Any]]) -> list[RenderableType]:
    """One row per measured device from ``edgeq probe``; failed devices are listed below with their reason."""
    table = Table(title="edgeq probe: latency measured on each device", title_justify="left")
    for col, justify in (
        ("device", "left"),
        ("runtime", "left"),
        ("threads", "right"),
        ("XNNPACK", "left"),
        ("runs", "right"),
        ("p50 / p90 / p99 ms", "right"),
        ("mean ± std ms", "right"),
        ("load / first ms", "right"),
        ("peak MB", "right"),
    ):
        table.add_column(col, justify=_justify(justify), overflow="fold")
    notes: list[RenderableType] = []
    for row in rows:
        r = row["result"]
        if r is None:
            table.add_row(row["device"], Text(row["status"], style="red"), *[""] * 7)
            notes.append(Text(f"{row['device']}: {row['status']}: {row['reason']}", style="red"))
            continue
        lat = r.latency
        table.add_row(
            row["device"],
            f"{r.runtime} {r.runtime_version or ''}".strip(),
            str(r.threads),
            "yes" if r.xnnpack else "no",
            str(lat.count),
            f"{_ms(lat.p50_ms)} / {_ms(lat.p90_ms)} / {_ms(lat.p99_ms)}",
            f"{_ms(lat.mean_ms)} ± {_ms(lat.std_ms)}",
            f"{r.load_ms:.1f} / {r.first_inference_ms:.2f}",
            f"{r.peak_rss_mb:.0f}",
        )
        if r.throttled:
            notes.append(Text(f"{row['device']}: THROTTLED: {r.throttle_reason}", style="yellow"))
        if row.get("parity") is not None:
            notes.append(
                Text(
                    f"{row['device']}: parity: {_parity_words(row['parity'])}",
                    style="green" if row["parity"].bit_exact else "yellow",
                )
            )
    return [table, *notes]


def _parity_words(parity: Parity) -> str:
    if parity.bit_exact:
        return "bit-exact with the host"
    worst = max(v["max_abs_diff"] for v in parity.outputs.values())
    share = max(v["mismatched"] for v in parity.outputs.values())
    return f"differs from the host on {share * 100:.1f} % of values (max {worst:g})"


def bench_tables(report: BenchReport) -> list[RenderableType]:
    """The per-device comparison and the verdicts of ``edgeq bench``."""
    table = Table(title=f"edgeq bench: {report.model}", title_justify="left")
    for col, justify in (
        ("device", "left"),
        ("runtime", "left"),
        ("threads", "right"),
        ("float32 p50 ms", "right"),
        ("int8 p50 ms", "right"),
        ("speedup [95 % CI]", "right"),
        ("parity", "left"),
    ):
        table.add_column(col, justify=_justify(justify), overflow="fold")
    verdicts: list[RenderableType] = []
    for d in report.devices:
        if d.status != "ok":
            table.add_row(d.device, Text(d.status, style="red"), "", "", "", "", "")
            verdicts.append(Text(f"{d.device}: {d.status}: {d.reason}", style="red"))
            continue
        float32, int8, speedup = _measured(d)
        runtime = f"{int8.runtime} {int8.runtime_version or ''}".strip() + (" +XNNPACK" if int8.xnnpack else "")
        table.add_row(
            d.device,
            runtime,
            str(int8.threads),
            _ms(float32.latency.p50_ms),
            _ms(int8.latency.p50_ms),
            _speedup_text(speedup),
            _parity_text(d),
        )
        style = "green" if speedup.ci_low > 1.0 else "yellow"
        line = f"{d.device}: {d.verdict}"
        if float32.throttled or int8.throttled:
            line += f" (THROTTLED: {(float32.throttle_reason or int8.throttle_reason)})"
        verdicts.append(Text(line, style=style))
        for label, point in d.recommended.items():
            verdicts.append(
                Text(
                    f"  fastest for {label}: {point.runtime} {point.runtime_version or ''} with {point.threads} thread(s), p50 {_ms(point.p50_ms)} ms"
                )
            )
    sizes = Text(
        f"sizes: float32 {report.float_size_bytes} B, int8 {report.int8_size_bytes} B "
        f"({report.int8_size_bytes / report.float_size_bytes:.3f} of float)"
    )
    parts: list[RenderableType] = [table, sizes, *verdicts]
    acc = (report.conversion or {}).get("accuracy")
    if acc:
        parts.append(
            Text(
                f"accuracy: float {acc['float_accuracy'] * 100:.2f} %, int8 {acc['quantized_accuracy'] * 100:.2f} % (drop {acc['drop_points']:.2f} points)"
            )
        )
    fleet = report.fleet
    if fleet.devices > 1 and fleet.measured:
        parts.append(
            Text(
                f"fleet: speedup min {fleet.speedup_min:.2f}x, median {fleet.speedup_median:.2f}x, max {fleet.speedup_max:.2f}x over {fleet.measured} devices"
            )
        )
        if fleet.outliers:
            parts.append(Text(f"outlier devices: {', '.join(fleet.outliers)}", style="yellow"))
    return parts


# --------------------------------------------------------------------------- tune


def _score_text(score: Score | None, kind: str) -> str:
    if score is None:
        return "-"
    if kind == "accuracy" and score.accuracy is not None and score.drop_points is not None:
        return f"{score.accuracy * 100:.2f} % (drop {score.drop_points:.2f})"
    if kind == "agreement" and score.agreement_pct is not None:
        return f"{score.agreement_pct:.2f} % agree"
    return _db(score.sqnr_db) if score.sqnr_db is not None else "-"


def _latency_cell(report: TuneReport, candidate: str) -> str:
    cells = []
    for d in report.devices:
        for lat in d.latencies:
            if lat.candidate == candidate:
                cells.append(
                    f"{_ms(lat.p50_ms)} [{_ms(lat.ci_low_ms)}, {_ms(lat.ci_high_ms)}]"
                    + (f" {d.device}" if len(report.devices) > 1 else "")
                )
    return "; ".join(cells) or ("not measured" if not report.latency_measured else "-")


def _tune_verdict(report: TuneReport, c: Candidate) -> str:
    if c.error:
        return "refused: " + c.error
    chosen = report.chosen or {}
    names = {chosen.get("candidate")} | {v["candidate"] for v in chosen.get("per_device", {}).values()}
    if c.name in names:
        return "CHOSEN"
    return "within budget" if c.meets_budget else "over budget"


def tune_rows(report: TuneReport) -> list[dict[str, Any]]:
    rows = []
    for c in report.candidates:
        rows.append(
            {
                "candidate": c.name,
                "step": c.step,
                "precision": c.precision_summary(),
                "size_bytes": c.size_bytes,
                "search_score": _score_text(c.score, report.budget_kind),
                "latency_p50_ms": _latency_cell(report, c.name),
                "verdict": _tune_verdict(report, c),
            }
        )
    return rows


def tune_tables(report: TuneReport) -> list[RenderableType]:
    table = Table(title=f"edgeq tune: {report.model} (budget: {report.budget})", title_justify="left")
    for col, justify in (
        ("candidate", "left"),
        ("how", "left"),
        ("size", "right"),
        ("search split", "right"),
        ("p50 ms [95 % CI]", "right"),
        ("verdict", "left"),
    ):
        table.add_column(col, justify=_justify(justify), overflow="fold")
    for row in tune_rows(report):
        style = "bold green" if row["verdict"] == "CHOSEN" else ("dim" if row["verdict"].startswith("refused") else "")
        table.add_row(
            row["candidate"],
            row["step"],
            format_bytes(row["size_bytes"]),
            row["search_score"],
            row["latency_p50_ms"],
            Text(row["verdict"], style=style),
        )
    parts: list[RenderableType] = [table]
    s = report.samples
    parts.append(
        Text(
            f"data: {s['calibration']} calibrate, {s['search']} guide the search, {s['report']} give the figures below (seen by neither)"
        )
    )
    for name, score in report.report_split.items():
        parts.append(Text(f"report split, {name}: {_score_text(score, report.budget_kind)}"))
    for d in report.devices:
        if d.status != "ok":
            parts.append(Text(f"{d.device}: {d.status}: {d.reason}", style="red"))
        elif d.chosen:
            lat = next(x for x in d.latencies if x.candidate == d.chosen)
            energy = (
                f", ~{lat.energy_mj:.3g} mJ per inference (ESTIMATE: p50 x {d.power_w:g} W typical power)"
                if lat.energy_mj is not None
                else ""
            )
            parts.append(
                Text(
                    f"{d.device}: fastest within budget: {d.chosen} ({_ms(lat.p50_ms)} ms p50 on {lat.runtime} {lat.runtime_version or ''}){energy}"
                )
            )
    for note in report.notes:
        parts.append(Text(f"note: {note}", style="yellow"))
    if report.chosen:
        if "path" in report.chosen:
            parts.append(
                Text(
                    f"chosen: {report.chosen['candidate']} -> {report.chosen['path']} (recipe {report.chosen['recipe']})",
                    style="bold",
                )
            )
        for device, files in report.chosen.get("per_device", {}).items():
            if "path" not in report.chosen:
                parts.append(Text(f"chosen for {device}: {files['candidate']} -> {files['path']}", style="bold"))
    elif report.best_found:
        parts.append(Text(f"nothing within the budget; the closest: {report.best_found}", style="red"))
    return parts


def tune_markdown(report: TuneReport, figure: str | None = None) -> str:
    lines = [
        f"# edgeq tune: {report.model}",
        "",
        f"Budget: {report.budget}. Candidates evaluated: {report.evaluations}.",
        "",
    ]
    s = report.samples
    lines.append(
        f"Data: {s['calibration']} samples calibrate, {s['search']} guide the search, {s['report']} (seen by neither) give the reported figures."
    )
    lines += [
        "",
        "| candidate | how | precision | size | search split | p50 ms [95 % CI] | verdict |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for row in tune_rows(report):
        lines.append(
            f"| {row['candidate']} | {row['step']} | {row['precision']} | {row['size_bytes']} | {row['search_score']} | {row['latency_p50_ms']} | {row['verdict']} |"
        )
    lines += ["", "## On the report split", ""]
    for name, score in report.report_split.items():
        lines.append(f"- {name}: {_score_text(score, report.budget_kind)}")
    if report.devices:
        lines += ["", "## Devices", ""]
        for d in report.devices:
            if d.status != "ok":
                lines.append(f"- {d.device}: {d.status}: {d.reason}")
                continue
            lines.append(f"- {d.device}: chosen {d.chosen or 'nothing'}")
            for lat in d.latencies:
                energy = f", ~{lat.energy_mj:.3g} mJ/inference (estimate)" if lat.energy_mj is not None else ""
                lines.append(
                    f"  - {lat.candidate}: p50 {_ms(lat.p50_ms)} ms [{_ms(lat.ci_low_ms)}, {_ms(lat.ci_high_ms)}] on {lat.runtime} {lat.runtime_version or ''}, {lat.threads} thread(s){energy}"
                )
    if report.ranking:
        lines += ["", "## Layers by int8 error (RMSE / scale, worst first)", ""]
        for e in report.ranking[:10]:
            value = "undefined" if e.undefined else f"{e.rmse_over_scale:.3g}"
            lines.append(f"- #{e.index} {e.op} `{e.layer}`: {value}")
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    if figure:
        lines += ["", f"![accuracy against latency]({figure})"]
    return "\n".join(lines) + "\n"


def tune_figure(report: TuneReport, target: Path | BinaryIO) -> None:
    """Accuracy loss against latency (or size, without a device): one marker per candidate, the budget as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kind = report.budget_kind
    fig, ax = plt.subplots(figsize=(8, 5))
    latency: dict[str, float] = {}
    for d in report.devices:
        for lat in d.latencies:
            latency.setdefault(lat.candidate, lat.p50_ms)  # the first device's, when several
    use_latency = bool(latency)
    xs, ys, names = [], [], []
    for c in report.candidates:
        if not c.ran or c.score is None:
            continue
        x = latency.get(c.name) if use_latency else c.size_bytes / 1024
        y = c.score.loss(kind) if kind != "sqnr" else c.score.sqnr_db
        if x is None or y is None:  # not measured on the device, or no SQNR to place it by
            continue
        xs.append(x)
        ys.append(y)
        names.append(c.name)
    chosen = set()
    if report.chosen:
        chosen = {report.chosen.get("candidate")} | {
            v["candidate"] for v in report.chosen.get("per_device", {}).values()
        }
    for x, y, name in zip(xs, ys, names):
        ax.scatter([x], [y], color="#2ca02c" if name in chosen else "#4c72b0", s=60 if name in chosen else 30, zorder=3)
        ax.annotate(name, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    limit = {"accuracy": "max_drop", "agreement": "min_agreement", "sqnr": "min_sqnr"}[kind]
    budget_value = (
        float(report.budget.split()[-2])
        if report.budget.split()[-2].replace(".", "", 1).lstrip("-").isdigit()
        else None
    )
    if budget_value is not None:
        line = budget_value if kind in ("accuracy", "sqnr") else 100.0 - budget_value
        ax.axhline(line, color="#c44e52", linestyle="--", linewidth=1, label=f"budget ({limit})")
        ax.legend(loc="best")
    ax.set_xlabel("p50 latency (ms), first device" if use_latency else "size (KiB); latency not measured")
    ax.set_ylabel(
        {"accuracy": "accuracy drop (points)", "agreement": "100 - top-1 agreement (%)", "sqnr": "SQNR (dB)"}[kind]
    )
    ax.set_title(f"edgeq tune: {Path(report.model).name}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=110)
    plt.close(fig)


def write_tune_reports(report: TuneReport, prefix: Path) -> dict[str, Path]:
    """Write PREFIX.json, .md and .png atomically (the folder is made here); return them by kind."""
    from .files import atomic_write_bytes, atomic_writer

    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = {kind: prefix.with_name(prefix.name + "." + kind) for kind in ("json", "md", "png")}
    atomic_write_bytes(paths["json"], (to_json(report) + "\n").encode())
    atomic_write_bytes(paths["md"], tune_markdown(report, figure=paths["png"].name).encode())
    with atomic_writer(paths["png"]) as handle:
        tune_figure(report, handle)
    return paths
