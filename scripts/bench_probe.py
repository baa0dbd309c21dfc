"""Benchmark: is the probe's p50 the model's real latency, and what does a probe cost beyond its timed runs?

Usage: .venv/bin/python scripts/bench_probe.py [--rounds 5] [--threads 2]

Baseline: an independent in-process timing loop (ai-edge-litert Interpreter,
same model, same threads, same run count, perf_counter around invoke), run in
a fresh Python process as the probe is. Candidate: edgeq's probe on the `host` target through the same
code path a device uses (deploy into the host's remote_dir, probe program run
with the device Python through LocalConnection). The two alternate, round by
round. Models: the bundled digits example (int8, microseconds) and MobileNetV2
0.35 96x96 (int8, milliseconds), both converted by edgeq.

Goals (issue 5): probe p50 / in-process p50 within 5 %; probe overhead per
device beyond its timed runs <= 1.5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def build_models(work: Path) -> dict[str, Path]:
    work.mkdir(parents=True, exist_ok=True)
    example = ROOT / "build/example/digits.keras"
    if not example.exists():
        subprocess.run(
            [sys.executable, str(ROOT / "scripts/build_example.py"), str(example)],
            check=True,
            env=ENV,
            capture_output=True,
        )
    mnv2 = work / "mnv2_035_96.keras"
    if not mnv2.exists():
        code = (
            "import keras; keras.utils.set_random_seed(0);"
            f"keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3)).save({str(mnv2)!r})"
        )
        subprocess.run([sys.executable, "-c", code], check=True, env=ENV, capture_output=True)
    calib = work / "calib96.npy"
    if not calib.exists():
        from PIL import Image

        x = np.load(ROOT / "calibration_data/digits/calib.npz")["x"][:120, :, :, 0]
        up = [np.asarray(Image.fromarray((d * 255).astype(np.uint8)).convert("RGB").resize((96, 96))) for d in x]
        np.save(calib, np.stack(up).astype(np.float32) / 255.0)
    models = {}
    for name, (source, data) in {
        "digits": (example, ROOT / "calibration_data/digits/calib.npz"),
        "mobilenet_v2_035_96": (mnv2, calib),
    }.items():
        out = work / f"{name}_int8.tflite"
        if not out.exists():
            subprocess.run(
                [sys.executable, "-m", "edgeq", "convert", str(source), "--calib", str(data), "-o", str(out)],
                check=True,
                env=ENV,
                capture_output=True,
            )
        models[name] = out
    return models


BASELINE_LOOP = r"""
import sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter

model, threads, runs, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
interp = Interpreter(model_path=model, num_threads=threads)
interp.allocate_tensors()
rng = np.random.default_rng(0)
for d in interp.get_input_details():
    kind = np.dtype(d["dtype"]).kind
    if kind in "iu":
        info = np.iinfo(d["dtype"])
        value = rng.integers(info.min, info.max + 1, d["shape"]).astype(d["dtype"])
    else:
        value = rng.standard_normal(d["shape"]).astype(d["dtype"])
    interp.set_tensor(d["index"], value)
for _ in range(warmup):
    interp.invoke()
times = []
for _ in range(runs):
    t = time.perf_counter()
    interp.invoke()
    times.append((time.perf_counter() - t) * 1000.0)
print(float(np.median(times)))
"""


def in_process_p50(model: Path, threads: int, runs: int, warmup: int) -> float:
    """The baseline: a plain timing loop around invoke(), written independently of the probe.

    It runs in a fresh Python process, as the probe does, so that both start
    from the same conditions (a long-lived process with other libraries
    loaded times a microsecond model differently).
    """
    out = subprocess.run(
        [sys.executable, "-c", BASELINE_LOOP, str(model), str(threads), str(runs), str(warmup)],
        capture_output=True,
        text=True,
        check=True,
        env=ENV,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench_probe")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from edgeq.bench import probe_device
    from edgeq.connection import LocalConnection
    from edgeq.deploy import prepare_model
    from edgeq.devices import Device
    from edgeq.probe import ProbeOptions

    models = build_models(args.work)
    home = Path(tempfile.mkdtemp(prefix="edgeq-bench-probe-home-"))
    device = Device(
        name="host",
        address="localhost",
        user=os.environ.get("USER", "root"),
        python=sys.executable,
        remote_dir="edgeq",
        transport="local",
        target="host",
    )
    rows = []
    for name, path in models.items():
        options = ProbeOptions(runs=300, min_s=0.0, warmup_runs=30, warmup_min_s=0.0)
        model_file = prepare_model(path, name=f"bench-{name}")
        with LocalConnection(home=home, name="host") as conn:
            probe_device(
                conn, device, model_file, options, threads=args.threads
            )  # first upload and probe copy: not timed
            probe_p50, base_p50, overheads = [], [], []
            for r in range(args.rounds):
                order = ("probe", "loop") if r % 2 == 0 else ("loop", "probe")
                for which in order:
                    if which == "loop":
                        base_p50.append(in_process_p50(path, args.threads, options.runs, options.warmup_runs))
                    else:
                        start = time.perf_counter()
                        result, _ = probe_device(conn, device, model_file, options, threads=args.threads)
                        wall = time.perf_counter() - start
                        timed_s = sum(result.latencies_ms) / 1000.0
                        overheads.append(wall - timed_s)
                        probe_p50.append(result.latency.p50_ms)
        ratio = statistics.median(probe_p50) / statistics.median(base_p50)
        rows.append(
            (
                name,
                statistics.median(probe_p50),
                statistics.median(base_p50),
                ratio,
                statistics.median(overheads),
                result.runtime,
                result.runtime_version,
            )
        )
    runtimes = sorted({f"{row[5]} {row[6]}" for row in rows})
    print(f"{args.rounds} rounds, {args.threads} threads, 300 timed runs each, {', '.join(runtimes)} on this machine\n")
    print(
        f"{'model':<22} {'probe p50 ms':>13} {'in-process p50 ms':>18} {'ratio':>7}  {'goal':<14} {'overhead s':>11}  {'goal':<8}"
    )
    for name, p, b, ratio, over, _runtime, _version in rows:
        print(
            f"{name:<22} {p:>13.4f} {b:>18.4f} {ratio:>7.3f}  {'0.95..1.05 ' + ('met' if 0.95 <= ratio <= 1.05 else 'MISSED'):<14} {over:>11.3f}  {'<= 1.5 ' + ('met' if over <= 1.5 else 'MISSED')}"
        )
    print(
        "\noverhead = wall time of one probe_device call (check/upload, probe program, interpreter load, warm-up, parsing) minus the sum of its timed runs"
    )


if __name__ == "__main__":
    main()
