"""``edgeq convert`` and ``edgeq inspect``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import cli
from ._options import TargetName, calibration_options, image_options, targets_dir_option
from ._output import print_renderables, progress_reporter

if TYPE_CHECKING:
    from ..debugger import LayerError
    from ..recipe import Override

MODES = ("int8", "int16x8", "w4a8", "int4-weight", "dynamic", "float16", "float32")
PRECISIONS = ("float", "int16", "int8", "int4")
IO_TYPES = ("int8", "uint8", "int16", "float32")


class OverrideSpec(click.ParamType):
    """``PATTERN=PRECISION`` for --layer (a regex on layer names) and --op (an op type)."""

    name = "PATTERN=PRECISION"

    def __init__(self, kind: str):
        self.kind = kind

    def convert(self, value, param, ctx):
        from ..recipe import Override, Precision

        if isinstance(value, Override):
            return value
        what, sep, precision = str(value).rpartition("=")
        if not sep or not what:
            self.fail(
                f"expected {'OP' if self.kind == 'op' else 'PATTERN'}=PRECISION (e.g. {'HARD_SWISH=int16' if self.kind == 'op' else 'dense_2=float'}), got {value!r}",
                param,
                ctx,
            )
        if precision not in PRECISIONS:
            self.fail(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}", param, ctx)
        if self.kind == "layer":
            import re

            try:
                re.compile(what)
            except re.error as exc:
                self.fail(f"{what!r} is not a valid regular expression ({exc})", param, ctx)
            return Override(precision=Precision(precision), layer=what)
        return Override(precision=Precision(precision), op=what.upper())


_RECIPE_SETS = (
    "mode",
    "io_type",
    "calib_samples",
    "seed",
    "pixel_range",
    "mean",
    "std",
    "layer_overrides",
    "op_overrides",
)


@cli.command("convert")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--calib",
    "calib",
    type=click.Path(path_type=Path),
    help="Calibration data: .npy, .npz (keys = input names, or x) or a folder of PNG/JPEG images.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Where to write the .tflite model; the report goes to the same name with .json.",
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default=None,
    help="int8: full integer, int8 ops only, per-channel weights. int16x8: int16 activations, int8 weights. w4a8: int4 weights for CONV_2D/FULLY_CONNECTED, int8 activations. int4-weight: int4 weights, float compute. dynamic: dynamic-range. float16 / float32: float baselines. [default: int8, or the first mode --target allows]",
)
@click.option(
    "--layer",
    "layer_overrides",
    multiple=True,
    type=OverrideSpec("layer"),
    help="Per-layer precision: PATTERN=float|int16|int8|int4, PATTERN a regex searched in layer names (output tensor names; see `edgeq inspect --layers`). Repeatable; later ones win.",
)
@click.option(
    "--op",
    "op_overrides",
    multiple=True,
    type=OverrideSpec("op"),
    help="Per-op-type precision: OP=float|int16|int8|int4, e.g. HARD_SWISH=int16. Repeatable.",
)
@click.option(
    "--recipe",
    "recipe_file",
    type=click.Path(path_type=Path),
    help="Make the model a recipe describes (OUT.recipe.json, written beside every model): same mode, overrides, calibration split and seed, so the same bytes.",
)
@click.option(
    "--io-type",
    type=click.Choice(IO_TYPES),
    default=None,
    help="Type of the model's input/output tensors [default: --target's first I/O type that suits the mode; else int8 for int8, float32 otherwise].",
)
@click.option(
    "--target",
    "target_name",
    type=TargetName(),
    default=None,
    help="Edge target the model is for (see `edgeq targets list`): its quantization constraints fill the defaults and refuse what it cannot run.",
)
@targets_dir_option
@click.option(
    "--eval",
    "eval_data",
    type=click.Path(path_type=Path),
    help="Labelled data (.npz with x and y): report float and quantized accuracy.",
)
@calibration_options(
    held_out="to measure fidelity", seed="the fixed shuffle that picks calibration and held-out samples"
)
@click.option(
    "--allow-float-ops",
    is_flag=True,
    help="Accept ops left in float32 in int8/int16x8 mode (with a warning) instead of failing.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.pass_context
def convert_cmd(
    ctx: click.Context,
    model: Path,
    calib: Path | None,
    output: Path,
    mode: str | None,
    layer_overrides: tuple[Override, ...],
    op_overrides: tuple[Override, ...],
    recipe_file: Path | None,
    io_type: str | None,
    target_name: str | None,
    targets_dir: Path | None,
    eval_data: Path | None,
    calib_samples: int,
    seed: int,
    pixel_range: str,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    allow_float_ops: bool,
    as_json: bool,
) -> None:
    """Convert MODEL (SavedModel dir, .keras, .h5, or a float .tflite) to a quantized TFLite model.

    Calibration data is checked against the model's inputs before anything is
    written. Fidelity (top-1 agreement, SQNR, errors) is measured on held-out
    samples never used for calibration. The model, its JSON report and its
    recipe (OUT.recipe.json) are written atomically: a failed run leaves
    nothing behind.

    Keras/SavedModel models in int8, int16x8, dynamic, float16 and float32
    modes go through the TFLite converter; a float .tflite, the int4 modes
    and per-layer overrides go through litert-quantizer.

    \b
    Example:
      edgeq convert model.keras --calib calib.npz --eval test.npz -o model_int8.tflite
      edgeq convert model.keras --calib calib.npz --target coral-dev-board -o model_coral.tflite
      edgeq convert published_float.tflite --calib calib.npz -o model_int8.tflite
      edgeq convert model.keras --calib calib.npz --layer 'dense_2=float' --op HARD_SWISH=int16 -o mixed.tflite
      edgeq convert model.keras --calib calib.npz --recipe mixed.recipe.json -o again.tflite
    """
    from ..convert import ConvertOptions, convert_model, options_from_recipe
    from ..report import conversion_tables, to_json
    from ..types import IOType, QuantMode

    if targets_dir is not None and target_name is None:
        raise click.UsageError("--targets-dir needs --target")
    options = ConvertOptions(
        mode=QuantMode(mode or "int8"),
        io_type=IOType(io_type) if io_type else None,
        calibration_samples=calib_samples,
        seed=seed,
        image_options=image_options(pixel_range, mean, std),
        allow_float_ops=allow_float_ops,
        overrides=tuple(layer_overrides) + tuple(op_overrides),
    )
    if recipe_file is not None:
        from ..recipe import Recipe

        given = [
            name for name in _RECIPE_SETS if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            flags = ", ".join("--" + name.replace("_overrides", "").replace("_", "-") for name in given)
            raise click.UsageError(f"--recipe already sets {flags}: give either the recipe or the flags")
        options = options_from_recipe(Recipe.load(recipe_file), options)
    if target_name is not None:
        import dataclasses

        from ..convert import apply_target
        from ..targets import load_target

        target = load_target(target_name, targets_dir=targets_dir)
        options = apply_target(target, options, mode_given=mode is not None or recipe_file is not None)
        options = dataclasses.replace(options, target_spec=target)
    with progress_reporter() as say:
        result = convert_model(
            model, calib, output, options, eval_data=eval_data, progress=say, show_log=ctx.obj.get("debug", False)
        )
    if as_json:
        click.echo(to_json(result.report))
    else:
        print_renderables(conversion_tables(result.report))
        click.echo(f"wrote {output}, {output.with_suffix('.json')} and {output.with_suffix('.recipe.json')}")


@cli.command("inspect")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--layers",
    "list_layers",
    is_flag=True,
    help="List the model's layers (ops) by name and op type: the names that --layer patterns and recipes select.",
)
@click.option("--per-layer", is_flag=True, help="Rank layers by quantization error (needs --float-model and --calib).")
@click.option(
    "--float-model", type=click.Path(path_type=Path), help="With --per-layer: the float model MODEL was converted from."
)
@click.option("--calib", type=click.Path(path_type=Path), help="With --per-layer: data to run both models on.")
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="With --per-layer: how many layers to show.",
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
def inspect_cmd(
    model: Path,
    list_layers: bool,
    per_layer: bool,
    float_model: Path | None,
    calib: Path | None,
    top: int,
    as_json: bool,
) -> None:
    """Show what matters about a .tflite MODEL: I/O tensors and their quantization, op census, size."""
    from ..litert import describe_model
    from ..report import summary_tables, to_json

    if list_layers:
        from ..quantize import model_layers

        listed = model_layers(model)
        if as_json:
            click.echo(to_json({"layers": listed}))
        else:
            from ..report import layers_table

            print_renderables([layers_table(listed)])
        return

    if per_layer and (float_model is None or calib is None):
        raise click.UsageError("--per-layer needs --float-model and --calib")
    summary = describe_model(model)
    layers: tuple[LayerError, ...] | None = None
    if per_layer and float_model is not None and calib is not None:
        from ..debugger import layer_errors

        with progress_reporter() as say:
            layers = layer_errors(model, float_model, calib, top=top, progress=say)
    if as_json:
        payload: dict[str, object] = {"summary": summary}
        if layers is not None:
            payload["layers"] = layers
        click.echo(to_json(payload))
        return
    parts = summary_tables(summary)
    if layers is not None:
        from ..report import layer_table

        parts.append(layer_table(layers))
    print_renderables(parts)
