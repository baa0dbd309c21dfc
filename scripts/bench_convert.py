"""Benchmark: `edgeq convert` against a plain TFLiteConverter script, side by side in one run.

Usage: .venv/bin/python scripts/bench_convert.py [--rounds 3] [--work build/bench_convert]

Models: MobileNetV2 1.0 224 with untrained weights (keras.applications, no
download) and the bundled digits example. Calibration for MobileNetV2: 250
real digit images from calibration_data/digits, upscaled to 224x224 RGB.
Both tools calibrate on 200 samples. Each round runs the plain script and
edgeq one after the other as separate processes (the order alternates), so
machine noise hits both alike; figures are ratios of medians.

Goals (issue 2): wall time edgeq/plain <= 1.10; int8 size edgeq/plain within
1 %; int8/float size <= 0.29 on MobileNetV2; example accuracy drop <= 1 point.
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
EDGEQ = [PY, "-m", "edgeq"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def prepare(work: Path) -> tuple[Path, Path, Path]:
    work.mkdir(parents=True, exist_ok=True)
    mnv2 = work / "mobilenet_v2_untrained.keras"
    calib = work / "mnv2_calib.npy"
    if not mnv2.exists():
        code = (
            "import keras; keras.utils.set_random_seed(0);"
            f"keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3)).save({str(mnv2)!r})"
        )
        subprocess.run([PY, "-c", code], check=True, env=ENV, capture_output=True)
    if not calib.exists():
        from PIL import Image

        x = np.load(ROOT / "calibration_data/digits/calib.npz")["x"][:250, :, :, 0]
        up = np.stack(
            [
                np.asarray(
                    Image.fromarray((d * 255).astype(np.uint8))
                    .convert("RGB")
                    .resize((224, 224), Image.Resampling.BILINEAR)
                )
                for d in x
            ]
        )
        np.save(calib, (up.astype(np.float32) / 255.0))
    example = ROOT / "build/example/digits.keras"
    if not example.exists():
        subprocess.run(
            [PY, str(ROOT / "scripts/build_example.py"), str(example)], check=True, env=ENV, capture_output=True
        )
    return mnv2, calib, example


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench_convert")
    args = parser.parse_args()
    mnv2, calib, example = prepare(args.work)
    plain_out, edgeq_out = args.work / "plain_int8.tflite", args.work / "edgeq_int8.tflite"
    plain_cmd = [PY, str(ROOT / "scripts/plain_tflite_convert.py"), str(mnv2), str(calib), "200", str(plain_out)]
    edgeq_cmd = [*EDGEQ, "convert", str(mnv2), "--calib", str(calib), "--calib-samples", "200", "-o", str(edgeq_out)]
    plain_t, edgeq_t = [], []
    for r in range(args.rounds):
        order = [("plain", plain_cmd), ("edgeq", edgeq_cmd)]
        if r % 2:
            order.reverse()
        for name, cmd in order:
            t = timed(cmd)
            (plain_t if name == "plain" else edgeq_t).append(t)
            print(f"round {r + 1}: {name:5s} {t:6.1f} s", flush=True)
    report = json.loads(edgeq_out.with_suffix(".json").read_text())
    ex_out = args.work / "digits_int8.tflite"
    timed(
        [
            *EDGEQ,
            "convert",
            str(example),
            "--calib",
            str(ROOT / "calibration_data/digits/calib.npz"),
            "--eval",
            str(ROOT / "calibration_data/digits/eval.npz"),
            "-o",
            str(ex_out),
        ]
    )
    ex = json.loads(ex_out.with_suffix(".json").read_text())

    time_ratio = statistics.median(edgeq_t) / statistics.median(plain_t)
    size_ratio = edgeq_out.stat().st_size / plain_out.stat().st_size
    rows = [
        ("wall time edgeq / plain (MobileNetV2, median)", f"{time_ratio:.3f}", "<= 1.10", time_ratio <= 1.10),
        ("int8 size edgeq / plain (MobileNetV2)", f"{size_ratio:.4f}", "within 1 %", abs(size_ratio - 1) <= 0.01),
        ("int8 / float size (MobileNetV2)", f"{report['size_ratio']:.3f}", "<= 0.29", report["size_ratio"] <= 0.29),
        (
            "example accuracy drop (points)",
            f"{ex['accuracy']['drop_points']:.2f}",
            "<= 1.0",
            ex["accuracy"]["drop_points"] <= 1.0,
        ),
    ]
    print(
        f"\nplain median {statistics.median(plain_t):.1f} s, edgeq median {statistics.median(edgeq_t):.1f} s over {args.rounds} rounds"
    )
    out0 = report["fidelity"]["outputs"][0]
    top1 = "n/a" if out0["top1_agreement"] is None else f"{out0['top1_agreement'] * 100:.1f} %"
    print(
        f"edgeq also measured fidelity on {report['holdout_samples']} held-out samples "
        f"(top-1 agreement {top1}, SQNR {out0['sqnr_db']:.1f} dB)"
    )
    for warning in report["warnings"]:
        print(f"  edgeq warned: {warning}")
    print(
        f"example: float {ex['accuracy']['float_accuracy'] * 100:.2f} %, int8 {ex['accuracy']['quantized_accuracy'] * 100:.2f} % on {ex['accuracy']['samples']} labelled samples\n"
    )
    width = max(len(r[0]) for r in rows)
    for name, value, goal, ok in rows:
        print(f"{name:<{width}}  {value:>8}  goal {goal:<10}  {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
