"""``edgeq convert`` and ``edgeq inspect``."""

from __future__ import annotations

from pathlib import Path

import click

from . import cli
from ._output import print_renderables, progress_reporter
from .targets import TargetName, targets_dir_option

MODES = ("int8", "int16x8", "dynamic", "float16", "float32")
IO_TYPES = ("int8", "uint8", "int16", "float32")
PIXEL_RANGES = {"0,1": (0.0, 1.0), "-1,1": (-1.0, 1.0), "0,255": (0.0, 255.0)}


class FloatList(click.ParamType):
    """Comma-separated numbers, e.g. ``0.485,0.456,0.406``."""

    name = "FLOATS"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(float(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"expected comma-separated numbers, got {value!r}", param, ctx)


@cli.command("convert")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--calib", "calib", type=click.Path(path_type=Path), help="Calibration data: .npy, .npz (keys = input names, or x) or a folder of PNG/JPEG images.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Where to write the .tflite model; the report goes to the same name with .json.")
@click.option("--mode", type=click.Choice(MODES), default=None, help="int8: full integer, int8 ops only, per-channel weights. int16x8: int16 activations. dynamic: dynamic-range. float16 / float32: float baselines. [default: int8, or the first mode --target allows]")
@click.option("--io-type", type=click.Choice(IO_TYPES), default=None, help="Type of the model's input/output tensors [default: --target's first I/O type that suits the mode; else int8 for int8, float32 otherwise].")
@click.option("--target", "target_name", type=TargetName(), default=None, help="Edge target the model is for (see `edgeq targets list`): its quantization constraints fill the defaults and refuse what it cannot run.")
@targets_dir_option
@click.option("--eval", "eval_data", type=click.Path(path_type=Path), help="Labelled data (.npz with x and y): report float and quantized accuracy.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=200, show_default=True, help="How many samples calibrate; the rest (at least a fifth) are held out to measure fidelity.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fixed shuffle that picks calibration and held-out samples.")
@click.option("--pixel-range", type=click.Choice(list(PIXEL_RANGES)), default="0,1", show_default=True, help="Image folders: range that pixel values 0..255 are mapped to.")
@click.option("--mean", type=FloatList(), default=None, help="Image folders: per-channel mean subtracted after --pixel-range (e.g. 0.485,0.456,0.406).")
@click.option("--std", type=FloatList(), default=None, help="Image folders: per-channel std divided by after --mean.")
@click.option("--allow-float-ops", is_flag=True, help="Accept ops left in float32 in int8/int16x8 mode (with a warning) instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.pass_context
def convert_cmd(ctx, model, calib, output, mode, io_type, target_name, targets_dir, eval_data, calib_samples, seed, pixel_range, mean, std, allow_float_ops, as_json):
    """Convert MODEL (SavedModel dir, .keras or .h5) to a quantized TFLite model.

    Calibration data is checked against the model's inputs before anything is
    written. Fidelity (top-1 agreement, SQNR, errors) is measured on held-out
    samples never used for calibration. The model and its JSON report are
    written atomically: a failed run leaves nothing behind.

    \b
    Example:
      edgeq convert model.keras --calib calib.npz --eval test.npz -o model_int8.tflite
      edgeq convert model.keras --calib calib.npz --target coral-dev-board -o model_coral.tflite
    """
    from ..calibration import ImageOptions
    from ..convert import ConvertOptions, convert_model
    from ..report import conversion_tables, to_json
    from ..types import IOType, QuantMode

    if targets_dir is not None and target_name is None:
        raise click.UsageError("--targets-dir needs --target")
    options = ConvertOptions(
        mode=QuantMode(mode or "int8"),
        io_type=IOType(io_type) if io_type else None,
        calibration_samples=calib_samples,
        seed=seed,
        image_options=ImageOptions(pixel_range=PIXEL_RANGES[pixel_range], mean=mean, std=std),
        allow_float_ops=allow_float_ops,
    )
    if target_name is not None:
        from ..targets import apply_target, load_target

        options = apply_target(load_target(target_name, targets_dir=targets_dir), options, mode_given=mode is not None)
    with progress_reporter() as say:
        result = convert_model(model, calib, output, options, eval_data=eval_data, progress=say, show_log=ctx.obj.get("debug", False))
    if as_json:
        click.echo(to_json(result.report))
    else:
        print_renderables(conversion_tables(result.report))
        click.echo(f"wrote {output} and {output.with_suffix('.json')}")


@cli.command("inspect")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--per-layer", is_flag=True, help="Rank layers by quantization error (needs --float-model and --calib).")
@click.option("--float-model", type=click.Path(path_type=Path), help="With --per-layer: the float model MODEL was converted from.")
@click.option("--calib", type=click.Path(path_type=Path), help="With --per-layer: data to run both models on.")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="With --per-layer: how many layers to show.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
def inspect_cmd(model, per_layer, float_model, calib, top, as_json):
    """Show what matters about a .tflite MODEL: I/O tensors and their quantization, op census, size."""
    from ..litert import describe_model
    from ..report import summary_tables, to_json

    if per_layer and (float_model is None or calib is None):
        raise click.UsageError("--per-layer needs --float-model and --calib")
    summary = describe_model(model)
    layers = None
    if per_layer:
        from ..debugger import layer_errors

        with progress_reporter() as say:
            layers = layer_errors(model, float_model, calib, top=top, progress=say)
    if as_json:
        payload = {"summary": summary}
        if layers is not None:
            payload["layers"] = layers
        click.echo(to_json(payload))
        return
    parts = summary_tables(summary)
    if layers is not None:
        from ..report import layer_table

        parts.append(layer_table(layers))
    print_renderables(parts)
