#!/bin/sh
# What a device is, for `edgeq targets detect`: sections of facts, each after an "@@name" line.
#
#   sh detect.sh PYTHON
#
# PYTHON is the device's Python; it reports its version and the TFLite runtimes it can import
# (ai_edge_litert and tflite_runtime are imported for real, which catches broken installs such
# as a NumPy ABI mismatch; TensorFlow, whose import takes many seconds on a board, is only
# looked up). edgeq.detect.parse_facts reads the output.
py=${1:-python3}
s() { printf '@@%s\n' "$1"; }
s uname; uname -m; uname -r; getconf LONG_BIT 2>/dev/null || echo
s model; if [ -r /proc/device-tree/model ]; then tr -d '\000' < /proc/device-tree/model; echo; fi
s cpuinfo; cat /proc/cpuinfo 2>/dev/null
s nproc; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || grep -c '^processor' /proc/cpuinfo
s maxfreq; cat /sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq 2>/dev/null || true
s meminfo; head -n 5 /proc/meminfo 2>/dev/null
s os-release; cat /etc/os-release 2>/dev/null
s python
if command -v "$py" >/dev/null 2>&1; then
  command -v "$py"
  "$py" - 2>&1 <<'PYTHON' | tail -n 1
import importlib, json, platform, struct, sys
out = {"version": platform.python_version(), "executable": sys.executable, "bits": struct.calcsize("P") * 8, "runtimes": {}, "broken": {}}
try:
    from importlib import metadata
except ImportError:
    metadata = None
def version(*names):
    for name in names:
        try:
            return metadata.version(name) if metadata else None
        except Exception:
            pass
    return None
import importlib.util
for key, module, dists, load in (
    ("ai-edge-litert", "ai_edge_litert", ("ai-edge-litert", "ai_edge_litert"), "ai_edge_litert.interpreter"),
    ("tflite-runtime", "tflite_runtime", ("tflite-runtime", "tflite_runtime"), "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow", ("tensorflow", "tensorflow-cpu", "tensorflow-aarch64", "tf-nightly"), None),
    ("numpy", "numpy", ("numpy",), None),
):
    try:
        if importlib.util.find_spec(module) is None:
            continue
        if load:
            importlib.import_module(load)
    except Exception as exc:
        out["broken"][key] = (type(exc).__name__ + ": " + str(exc))[:300]
        continue
    out["runtimes"][key] = version(*dists) or "installed"
print(json.dumps(out))
PYTHON
else
  echo "-"
fi
s end
