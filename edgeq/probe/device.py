#!/usr/bin/env python3
"""edgeq latency probe: runs ON the device with only the standard library, numpy and one TFLite runtime.

This file is copied to the device as it is and run with the device's Python
(3.7 or newer, numpy 1.x or 2.x). It must not import edgeq. It prints exactly
one JSON document between two marker lines on stdout; anything else it or the
runtime prints is ignored by the host. Exit status 0 with a result, 3 with an
error document (the error is inside the JSON as well).

Method, after LiteRT's benchmark_model: model load and tensor allocation time,
first inference, warm-up (a run count AND a minimum time), timed runs (a run
count AND a minimum time, at most --max-runs / --max-s), every run's latency kept; peak memory of the
process; CPU temperature and clock before and after, where the device exposes
them, so throttled runs can be flagged.
"""

import argparse
import base64
import glob
import json
import os
import platform
import resource
import sys
import time
import traceback

BEGIN = "@@EDGEQ-PROBE-BEGIN@@"
END = "@@EDGEQ-PROBE-END@@"
PROBE_VERSION = 1

RUNTIMES = {
    # name: (module holding Interpreter, distribution name for the version)
    "ai-edge-litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "tflite-runtime": ("tflite_runtime.interpreter", "tflite-runtime"),
    "tensorflow": ("tensorflow.lite.python.interpreter", "tensorflow"),  # tf.lite.Interpreter; the package tensorflow.lite has none
}


class ProbeFailure(Exception):
    """A failure the probe reports as data; ``kind`` tells the host what happened without reading the message."""

    def __init__(self, message, kind="failed"):
        super().__init__(message)
        self.kind = kind


def _emit(document, stream=None):
    stream = stream or sys.stdout
    stream.write("\n" + BEGIN + "\n" + json.dumps(document) + "\n" + END + "\n")
    stream.flush()


def _read_first(paths):
    for path in paths:
        try:
            with open(path) as handle:
                return handle.read().strip()
        except (OSError, IOError):
            continue
    return None


def read_thermal():
    """CPU temperature (C), current clock (MHz) and firmware throttle bits, where exposed."""
    temp = None
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        kind = _read_first([zone + "/type"]) or ""
        raw = _read_first([zone + "/temp"])
        if raw and raw.lstrip("-").isdigit() and ("cpu" in kind.lower() or "soc" in kind.lower() or temp is None):
            temp = int(raw) / 1000.0
            if "cpu" in kind.lower():
                break
    clock = _read_first(["/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"])
    max_clock = _read_first(["/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"])
    throttled = _read_first(["/sys/devices/platform/soc/soc:firmware/get_throttled"])  # Raspberry Pi
    return {
        "temp_c": temp,
        "clock_mhz": int(clock) / 1000.0 if clock and clock.isdigit() else None,
        "max_clock_mhz": int(max_clock) / 1000.0 if max_clock and max_clock.isdigit() else None,
        "throttle_bits": int(throttled, 16) if throttled else None,
    }


def _version(module_name, dist):
    try:
        from importlib import metadata  # Python 3.8+

        return metadata.version(dist)
    except Exception:
        pass
    module = sys.modules.get(module_name.split(".")[0])
    return getattr(module, "__version__", None)


def load_runtime(order):
    """Import the first runtime of ``order`` that is installed; return (name, version, module)."""
    tried = []
    for name in order:
        if name not in RUNTIMES:
            raise ProbeFailure("unknown runtime %r (known: %s)" % (name, ", ".join(RUNTIMES)))
        module_name, dist = RUNTIMES[name]
        try:
            module = __import__(module_name, fromlist=["Interpreter"])
            module.Interpreter  # noqa: B018 - a module without it does not count as installed
        except Exception as exc:  # ImportError, or a broken install raising anything
            tried.append("%s (%s)" % (name, exc.__class__.__name__))
            continue
        return name, _version(module_name, dist), module
    raise ProbeFailure("no TFLite runtime could be imported; tried: " + ", ".join(tried), kind="no-runtime")


def _percentile(sorted_values, q):
    # numpy's default (linear) definition, written out so old numpy versions agree
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(latencies_ms):
    values = sorted(latencies_ms)
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {
        "count": n,
        "min_ms": values[0],
        "mean_ms": mean,
        "std_ms": var ** 0.5,
        "p50_ms": _percentile(values, 50),
        "p90_ms": _percentile(values, 90),
        "p99_ms": _percentile(values, 99),
        "max_ms": values[-1],
    }


def _inputs_for(interp, np, samples_path, seed):
    """One feed per sample: real samples from an .npz keyed by signature/tensor name, or random data."""
    details = interp.get_input_details()
    names = _signature_names(interp, "inputs")
    if samples_path:
        data = np.load(samples_path, allow_pickle=False)
        feeds = []
        count = None
        arrays = {}
        for d in details:
            name = names.get(int(d["index"]), d["name"])
            key = name if name in data.files else ("x" if len(details) == 1 and "x" in data.files else None)
            if key is None:
                raise ProbeFailure("samples file has no array for input %r" % name)
            arrays[int(d["index"])] = data[key]
            count = len(data[key]) if count is None else min(count, len(data[key]))
        for i in range(count):
            feeds.append(dict((idx, arr[i : i + 1].astype(d_dtype(details, idx))) for idx, arr in arrays.items()))
        return feeds, [names.get(int(d["index"]), d["name"]) for d in details]
    rng = np.random.RandomState(seed)
    feed = {}
    for d in details:
        dtype = np.dtype(d["dtype"])
        shape = [int(x) for x in d["shape"]]
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            feed[int(d["index"])] = rng.randint(info.min, int(info.max) + 1, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feed[int(d["index"])] = rng.randint(0, 2, size=shape).astype(dtype)
        else:
            feed[int(d["index"])] = rng.standard_normal(shape).astype(dtype)
    return [feed], [names.get(int(d["index"]), d["name"]) for d in details]


def d_dtype(details, index):
    for d in details:
        if int(d["index"]) == index:
            return d["dtype"]
    raise ProbeFailure("no input tensor %d" % index)


def _set_inputs(interp, feed):
    for index, value in feed.items():
        interp.set_tensor(index, value)


def _invoke(interp, feed):
    _set_inputs(interp, feed)
    interp.invoke()


def _signature_names(interp, which):
    """Tensor index -> name in the model's first signature (as the host's interpreter names them), for "inputs" or "outputs"."""
    try:
        signatures = interp.get_signature_list()
        if not signatures:
            return {}
        runner = interp.get_signature_runner(next(iter(signatures)))
        details = runner.get_input_details() if which == "inputs" else runner.get_output_details()
        return dict((int(d["index"]), name) for name, d in details.items())
    except Exception:  # old runtimes without signature runners: tensor names are used
        return {}


def probe(args):
    import numpy as np

    thermal_before = read_thermal()
    order = [args.runtime] if args.runtime else args.prefer.split(",")
    runtime, runtime_version, module = load_runtime(order)
    threads = args.threads if args.threads and args.threads > 0 else (os.cpu_count() or 1)

    start = time.perf_counter()
    interp = module.Interpreter(model_path=args.model, num_threads=threads)
    loaded = time.perf_counter()
    interp.allocate_tensors()
    allocated = time.perf_counter()
    ops = [op["op_name"] for op in interp._get_ops_details()]
    delegate_partitions = sum(1 for op in ops if op == "DELEGATE")

    feeds, input_names = _inputs_for(interp, np, args.samples, args.seed)

    t0 = time.perf_counter()
    _invoke(interp, feeds[0])
    first_ms = (time.perf_counter() - t0) * 1000.0

    warmup = 0
    warm_start = time.perf_counter()
    while warmup < args.warmup_runs or (time.perf_counter() - warm_start) < args.warmup_min_s:
        _invoke(interp, feeds[warmup % len(feeds)])
        warmup += 1

    # Each timed run is one invoke(), as in benchmark_model: inputs are copied in outside the
    # timed region (once for random data, before each run when real samples take turns).
    latencies = []
    _set_inputs(interp, feeds[0])
    timed_start = time.perf_counter()
    deadline = timed_start + args.max_s
    while (len(latencies) < args.runs or (time.perf_counter() - timed_start) < args.min_s) and len(latencies) < args.max_runs:
        if len(feeds) > 1:
            _set_inputs(interp, feeds[len(latencies) % len(feeds)])
        t = time.perf_counter()
        interp.invoke()
        latencies.append(round((time.perf_counter() - t) * 1000.0, 5))
        if time.perf_counter() > deadline and len(latencies) >= 2:
            break
    timed_s = time.perf_counter() - timed_start

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    outputs = None
    if args.samples and args.return_outputs:
        out_names = _signature_names(interp, "outputs")
        collected = {}
        for feed in feeds:
            _invoke(interp, feed)
            for d in interp.get_output_details():
                collected.setdefault(int(d["index"]), []).append(interp.get_tensor(d["index"]).copy())
        outputs = []
        for d in interp.get_output_details():
            stacked = np.concatenate(collected[int(d["index"])], axis=0)
            outputs.append(
                {
                    "name": out_names.get(int(d["index"]), d["name"]),
                    "dtype": np.dtype(stacked.dtype).name,
                    "shape": list(stacked.shape),
                    "data_b64": base64.b64encode(np.ascontiguousarray(stacked).tobytes()).decode("ascii"),
                }
            )
    thermal_after = read_thermal()

    return {
        "probe_version": PROBE_VERSION,
        "ok": True,
        "model": args.model,
        "runtime": runtime,
        "runtime_version": runtime_version,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "xnnpack": delegate_partitions > 0,
        "delegate_partitions": delegate_partitions,
        "ops": len(ops) - delegate_partitions,
        "inputs": input_names,
        "input_source": "samples" if args.samples else "random",
        "load_ms": (loaded - start) * 1000.0,
        "allocate_ms": (allocated - loaded) * 1000.0,
        "first_inference_ms": first_ms,
        "warmup_runs": warmup,
        "timed_s": timed_s,
        "latency": summarize(latencies),
        "latencies_ms": latencies,
        "peak_rss_mb": peak_kb / 1024.0,
        "thermal_before": thermal_before,
        "thermal_after": thermal_after,
        "outputs": outputs,
    }


def parse_args(argv):
    p = argparse.ArgumentParser(description="edgeq on-device latency probe")
    p.add_argument("--model", required=True)
    p.add_argument("--runtime", default=None, help="force one runtime: " + ", ".join(RUNTIMES))
    p.add_argument("--prefer", default="ai-edge-litert,tflite-runtime,tensorflow", help="runtimes in order of preference")
    p.add_argument("--threads", type=int, default=0, help="0: all cores")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--min-s", type=float, default=1.0)
    p.add_argument("--max-s", type=float, default=120.0, help="stop the timed loop here even if --runs is not reached")
    p.add_argument("--max-runs", type=int, default=10000, help="stop the timed loop after this many runs even before --min-s")
    p.add_argument("--warmup-runs", type=int, default=5)
    p.add_argument("--warmup-min-s", type=float, default=0.5)
    p.add_argument("--samples", default=None, help=".npz of real input samples")
    p.add_argument("--return-outputs", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--env-root",
        default=None,
        help="edgeq's runtime folders (edgeq provision): ENV_ROOT/py<major><minor>-<machine> goes first on the import path",
    )
    return p.parse_args(argv)


def use_runtime_env(env_root):
    """Put the runtime folder `edgeq provision` made for this Python and machine first on the import path."""
    if not env_root:
        return None
    folder = os.path.join(
        os.path.expanduser(env_root), "py%d%d-%s" % (sys.version_info[0], sys.version_info[1], platform.machine())
    )
    if os.path.isdir(folder):
        sys.path.insert(0, os.path.abspath(folder))
        return folder
    return None


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        use_runtime_env(args.env_root)
        document = probe(args)
    except ProbeFailure as exc:
        _emit({"probe_version": PROBE_VERSION, "ok": False, "error": str(exc), "error_kind": exc.kind})
        return 3
    except Exception as exc:  # report any crash as data; the host decides what it means
        _emit(
            {
                "probe_version": PROBE_VERSION,
                "ok": False,
                "error": "%s: %s" % (exc.__class__.__name__, exc),
                "traceback": traceback.format_exc()[-4000:],
            }
        )
        return 3
    _emit(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
