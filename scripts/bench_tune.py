"""Benchmark: `edgeq tune` against plain int8 and the QuantizationDebugger tutorial rule, side by side in one run.

Usage: .venv/bin/python scripts/bench_tune.py [--rounds 3] [--work build/bench_tune]

Model: scripts/tune_example_model.py, trained in code on the bundled digits
data (an architecture that plain int8 post-training quantization really hurts).
All accuracy figures are on the SAME report split: the half of eval.npz that
tune's search never sees (tune's own split, seed 0); calibration uses
calib.npz (disjoint from eval.npz).

Printed, each against a baseline measured in the same run:
  1. plain int8 (TFLiteConverter, full integer): its accuracy drop;
  2. the QuantizationDebugger tutorial rule (layers with rmse/scale > 0.7 kept in float,
     `denylisted_nodes`): its drop and the layers it keeps;
  3. edgeq tune (--max-drop 0.5, no device): its drop, layers kept, size / full int8 size,
     and wall time / one plain conversion (processes alternated over --rounds);
  4. a float .tflite input, int8: `edgeq convert` wall time / litert-quantizer called directly.

Goals (issue 8): tune's drop <= 0.5 point on the report split with fewer layers kept than the
tutorial rule; size <= 1.3x full int8; wall time <= 5x one conversion; .tflite int8 <= 1.10x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
DIGITS = ROOT / "calibration_data" / "digits"
CALIB, EVAL = DIGITS / "calib.npz", DIGITS / "eval.npz"
sys.path.insert(0, str(ROOT))


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def alternate(commands: dict[str, list[str]], rounds: int) -> dict[str, float]:
    """Median wall time of each command, run as processes in alternating order."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for r in range(rounds):
        order = list(commands.items())
        if r % 2:
            order.reverse()
        for name, cmd in order:
            times[name].append(timed(cmd))
            print(f"  round {r + 1}: {name} {times[name][-1]:.2f} s", flush=True)
    return {name: statistics.median(v) for name, v in times.items()}


def report_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The report half of eval.npz exactly as edgeq tune splits it."""
    from edgeq.tune import Budget, TuneOptions, split_data
    from edgeq.types import TensorSpec

    data = split_data(
        str(CALIB),
        str(EVAL),
        (TensorSpec("x", (None, 8, 8, 1), "float32"),),
        TuneOptions(budget=Budget(max_drop_points=0.5), seed=seed),
    )
    return data.report["x"], data.report_labels


def accuracy_of(model: bytes, x: np.ndarray, y: np.ndarray) -> float:
    from edgeq.litert import ModelRunner, captured_native_output

    with captured_native_output():
        runner = ModelRunner(model)
        out = next(iter(runner.run({next(iter(runner.inputs)): x}).values()))
    return float(np.mean(out.argmax(1) == y)) * 100.0


def tutorial_rule(model_path: Path, threshold: float = 0.7) -> tuple[bytes, list[str]]:
    """TensorFlow's QuantizationDebugger tutorial: keep every layer with rmse/scale > threshold in float."""
    import keras
    import tensorflow as tf

    model = keras.models.load_model(model_path, compile=False)
    calib = np.load(CALIB)["x"]

    def representative():
        for i in range(200):
            yield [calib[i : i + 1]]

    def debug_dataset():
        for i in range(200, len(calib)):
            yield [calib[i : i + 1]]

    def converter():
        c = tf.lite.TFLiteConverter.from_keras_model(model)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = representative
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = tf.int8
        c.inference_output_type = tf.int8
        return c

    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter(), debug_dataset=debug_dataset)
    debugger.run()
    import csv
    import io

    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    suspected = []
    for row in csv.DictReader(io.StringIO(buf.getvalue())):
        scale = float(row["scale"])
        rmse = float(row["mean_squared_error"]) ** 0.5
        if scale == 0 or rmse / scale > threshold:
            suspected.append(row["tensor_name"])
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=suspected)
    selective = tf.lite.experimental.QuantizationDebugger(
        converter=converter(), debug_dataset=debug_dataset, debug_options=options
    )
    return bytes(selective.get_nondebug_quantized_model()), suspected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench_tune")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the example model's training.")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    model = work / f"tune_example_seed{args.seed}.keras"
    if not model.exists():
        print("training the example model", flush=True)
        subprocess.run(
            [PY, str(ROOT / "scripts/tune_example_model.py"), str(model), "--seed", str(args.seed)], check=True, env=ENV
        )
    x, y = report_split()

    # 1 + 3: plain int8 and edgeq tune, timed side by side as processes
    plain_out, tune_dir = work / "plain_int8.tflite", work / "tune"
    commands = {
        "plain int8 conversion": [
            PY,
            str(ROOT / "scripts/plain_tflite_convert.py"),
            str(model),
            str(CALIB),
            "200",
            str(plain_out),
        ],
        "edgeq tune": [
            PY,
            "-m",
            "edgeq",
            "tune",
            str(model),
            "--calib",
            str(CALIB),
            "--eval",
            str(EVAL),
            "--max-drop",
            "0.5",
            "-o",
            str(tune_dir),
            "--json",
        ],
    }
    print("timing (processes, alternating):", flush=True)
    wall = alternate(commands, args.rounds)
    report = json.loads((tune_dir / f"{model.stem}_tune.json").read_text())

    import tensorflow as tf

    float_bytes = tf.lite.TFLiteConverter.from_keras_model(
        __import__("keras").models.load_model(model, compile=False)
    ).convert()
    float_acc = accuracy_of(float_bytes, x, y)
    plain_bytes = plain_out.read_bytes()
    plain_drop = float_acc - accuracy_of(plain_bytes, x, y)
    print("QuantizationDebugger tutorial rule (rmse/scale > 0.7 kept in float)...", flush=True)
    tutorial_bytes, tutorial_layers = tutorial_rule(model)
    tutorial_drop = float_acc - accuracy_of(tutorial_bytes, x, y)

    chosen = report["chosen"]
    if chosen is None:
        tune_line = f"edgeq tune: NO candidate within the budget (closest {report['best_found']})"
        tune_drop, kept, size_ratio = None, None, None
    else:
        tuned = Path(chosen["path"]).read_bytes()
        tune_drop = float_acc - accuracy_of(tuned, x, y)
        candidate = next(c for c in report["candidates"] if c["name"] == chosen["candidate"])
        kept = len(candidate["kept"])
        int8_size = next(c["size_bytes"] for c in report["candidates"] if c["name"] == "int8")
        size_ratio = len(tuned) / int8_size
        tune_line = f"edgeq tune: chose '{chosen['candidate']}'"

    # 4: a float .tflite input, int8: edgeq convert against litert-quantizer called directly
    float_tflite = work / "float.tflite"
    float_tflite.write_bytes(float_bytes)
    commands = {
        "litert-quantizer directly": [
            PY,
            str(ROOT / "scripts/plain_litert_quantize.py"),
            str(float_tflite),
            str(CALIB),
            "200",
            str(work / "lq_int8.tflite"),
        ],
        "edgeq convert .tflite": [
            PY,
            "-m",
            "edgeq",
            "convert",
            str(float_tflite),
            "--calib",
            str(CALIB),
            "-o",
            str(work / "edgeq_lq_int8.tflite"),
        ],
    }
    print("timing .tflite input (processes, alternating):", flush=True)
    wall_tflite = alternate(commands, args.rounds)

    print()
    print(
        f"model: {model.name}; float accuracy {float_acc:.2f} % on the report split ({len(y)} samples never seen by calibration or search)"
    )
    print(f"plain int8 (TFLiteConverter):      drop {plain_drop:.2f} points  (size {len(plain_bytes)} B)")
    print(
        f"tutorial rule (rmse/scale > 0.7):  drop {tutorial_drop:.2f} points, {len(tutorial_layers)} layer(s) kept in float  (size {len(tutorial_bytes)} B)"
    )
    if chosen is not None:
        print(
            f"{tune_line}: drop {tune_drop:.2f} points, {kept} layer(s) kept in higher precision, size {size_ratio:.3f}x full int8 "
            f"(goals: <= 0.5 point, fewer layers than the rule, <= 1.3x)"
        )
    else:
        print(tune_line)
    print(
        f"tune wall time / one plain conversion: {wall['edgeq tune'] / wall['plain int8 conversion']:.2f}x "
        f"({wall['edgeq tune']:.2f} s / {wall['plain int8 conversion']:.2f} s, medians of {args.rounds}; goal <= 5x)"
    )
    print(
        f".tflite int8: edgeq convert / litert-quantizer directly: {wall_tflite['edgeq convert .tflite'] / wall_tflite['litert-quantizer directly']:.3f}x "
        f"({wall_tflite['edgeq convert .tflite']:.2f} s / {wall_tflite['litert-quantizer directly']:.2f} s; goal <= 1.10x)"
    )
    print(f"candidates evaluated by tune: {report['evaluations']}")


if __name__ == "__main__":
    main()
