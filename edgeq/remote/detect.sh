#!/bin/sh
# What a device is, for `edgeq targets detect`, `edgeq doctor` and the checks before deploy and probe:
# sections of facts, each after an "@@name" line.
#
#   sh detect.sh PYTHON [EDGEQ_DIR]
#
# PYTHON is the device's Python; it reports its version, its C library and the TFLite runtimes it
# can import. ai_edge_litert and tflite_runtime are imported for real, each in a process of its
# own, which catches broken installs (a NumPy ABI mismatch, an illegal instruction, a missing
# shared library) without losing the other facts; the numpy each one imported with is reported.
# TensorFlow, whose import takes many seconds on a board, is only looked up. EDGEQ_DIR is edgeq's
# folder on the device: its free space is reported, and the runtime environment `edgeq provision`
# keeps there (EDGEQ_DIR/runtime/py<major><minor>-<machine>) goes first on the import path, as the
# probe puts it. edgeq.detect.parse_facts reads the output.
py=${1:-python3}
dir=${2:-edgeq}
s() { printf '@@%s\n' "$1"; }
s uname; uname -m; uname -r; getconf LONG_BIT 2>/dev/null || echo
s model
for f in /proc/device-tree/model /sys/firmware/devicetree/base/model; do
  if [ -r "$f" ]; then tr -d '\000' < "$f"; echo; break; fi
done
s cpuinfo; cat /proc/cpuinfo 2>/dev/null
s nproc; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || grep -c '^processor' /proc/cpuinfo
s maxfreq; cat /sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq 2>/dev/null || true
s meminfo; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo 2>/dev/null
s disk
# the free space where edgeq keeps models: its folder, or the nearest folder above it that exists
d=$dir
while [ ! -d "$d" ]; do
  case $d in */*) d=${d%/*}; [ -n "$d" ] || d=/ ;; *) d=. ;; esac
done
df -Pk "$d" 2>/dev/null | tail -n 1
s os-release; cat /etc/os-release 2>/dev/null
s python
if command -v "$py" >/dev/null 2>&1; then
  command -v "$py"
  "$py" - "$dir" 2>&1 <<'PYTHON' | tail -n 1
import importlib, json, os, platform, struct, subprocess, sys
machine = platform.machine()
env = os.path.join(sys.argv[1], "runtime", "py%d%d-%s" % (sys.version_info[0], sys.version_info[1], machine))
env = os.path.abspath(os.path.expanduser(env)) if os.path.isdir(os.path.expanduser(env)) else None
out = {"version": platform.python_version(), "executable": sys.executable, "bits": struct.calcsize("P") * 8,
       "machine": machine, "libc": "%s %s" % platform.libc_ver(), "env": env, "runtimes": {}, "broken": {}, "numpy_with": {}}
if env:
    sys.path.insert(0, env)
# one child per runtime: a crash (SIGSEGV, SIGILL) or a hang loses that runtime's facts only
CHILD = """
import json, sys
if sys.argv[1]:
    sys.path.insert(0, sys.argv[1])
try:
    from importlib import metadata
except ImportError:
    metadata = None
def version(names):
    for name in names:
        try:
            return metadata.version(name) if metadata else None
        except Exception:
            pass
    return None
got = {}
try:
    if sys.argv[3]:
        module = __import__(sys.argv[3], fromlist=["Interpreter"])
        if sys.argv[4]:  # run the tiny model: some breakages (NumPy's ABI) show only when tensors move
            import base64
            import numpy
            interp = module.Interpreter(model_content=base64.b64decode(sys.argv[4]))
            interp.allocate_tensors()
            inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
            interp.set_tensor(inp["index"], numpy.ones(inp["shape"], numpy.float32))
            interp.invoke()
            if not (interp.get_tensor(outp["index"]) == 3.0).all():
                raise RuntimeError("the runtime computed relu(2x+1) wrongly on a 4-value tiny model")
    got["version"] = version(sys.argv[5:]) or "installed"
finally:
    numpy = sys.modules.get("numpy")
    got["numpy"] = getattr(numpy, "__version__", None)
    print(json.dumps(got))
"""
# y = relu(2x + 1) on a float32[1,4]: 960 bytes written by the TFLite converter (min_runtime_version 1.5.0)
TINY = "HAAAAFRGTDMUACAAHAAYABQAEAAMAAAACAAEABQAAAAcAAAAHAAAAHQAAABUAQAAZAEAAGADAAADAAAAAAAAAAIAAAA0AAAABAAAANz///8HAAAABAAAABMAAABDT05WRVJTSU9OX01FVEFEQVRBAAgADAAIAAQACAAAAAYAAAAEAAAAEwAAAG1pbl9ydW50aW1lX3ZlcnNpb24ACAAAANwAAADUAAAAwAAAAKQAAACcAAAAlAAAAHQAAAAEAAAAXv///wQAAABgAAAAEAAAAAAAAAAIAA4ACAAEAAgAAAAQAAAAJAAAAAAABgAIAAQABgAAAAQAAAAAAAAADAAYABQAEAAMAAQADAAAADdlf7AXNt3tAwAAAAIAAAAEAAAABgAAADIuMjEuMAAAyv///wQAAAAQAAAAMS41LjAAAAAAAAAAAAAAAKj9//+s/f//7v///wQAAAAEAAAAAAAAQAAABgAIAAQABgAAAAQAAAAEAAAAAACAP9j9///c/f//DwAAAE1MSVIgQ29udmVydGVkLgABAAAAFAAAAAAADgAYABQAEAAMAAgABAAOAAAAFAAAABwAAACsAAAAsAAAALQAAAAEAAAAbWFpbgAAAAACAAAAZAAAABQAAAAAAA4AGgAUABAADAALAAQADgAAABwAAAAAAAALHAAAACAAAAABAAAAAAAGAAgABwAGAAAAAAAAAQEAAAAEAAAAAgAAAAMAAAABAAAAAAAOABQAAAAQAAwACwAEAA4AAAAQAAAAAAAAFQwAAAAQAAAArP7//wEAAAADAAAAAgAAAAAAAAACAAAAAQAAAAQAAAABAAAAAAAAAAUAAADsAAAApAAAAHQAAABAAAAABAAAAD7///8AAAABEAAAABAAAAAFAAAAGAAAAAT///8IAAAASWRlbnRpdHkAAAAAAgAAAAEAAAAEAAAAdv///wAAAAEQAAAAEAAAAAQAAAAQAAAAPP///wMAAABtdWwAAgAAAAEAAAAEAAAApv///wAAAAEQAAAAEAAAAAMAAAAUAAAAbP///wUAAABtdWwveQAAAAAAAADS////AAAAARAAAAAQAAAAAgAAABQAAACY////BQAAAGFkZC95AAAAAAAAAAAAFgAYABQAAAAQAAwACAAAAAAAAAAHABYAAAAAAAABEAAAABAAAAABAAAAEAAAANz///8BAAAAeAAAAAIAAAABAAAABAAAAAIAAAAcAAAACAAAAAQABAAEAAAADAAMAAsAAAAAAAQADAAAABIAAAAAAAAS"
import importlib.util
for key, module, dists, load in (
    ("ai-edge-litert", "ai_edge_litert", ("ai-edge-litert", "ai_edge_litert"), "ai_edge_litert.interpreter"),
    ("tflite-runtime", "tflite_runtime", ("tflite-runtime", "tflite_runtime"), "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow", ("tensorflow", "tensorflow-cpu", "tensorflow-aarch64", "tf-nightly"), None),
    ("numpy", "numpy", ("numpy",), "numpy"),
):
    try:
        if importlib.util.find_spec(module) is None:
            continue
    except Exception as exc:
        out["broken"][key] = (type(exc).__name__ + ": " + str(exc))[:300]
        continue
    proc = subprocess.Popen([sys.executable, "-c", CHILD, env or "", key, load or "", TINY if load and key != "numpy" else "", *dists],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        out["broken"][key] = "its import did not finish within 300 s"
        continue
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        got = json.loads(lines[-1])
    except (IndexError, ValueError):
        got = {}
    if "version" in got:
        out["runtimes"][key] = got["version"]
    else:
        errors = [l for l in stderr.decode("utf-8", "replace").strip().splitlines() if l.strip()]
        if proc.returncode < 0:
            why = "its import crashed (signal %d)" % -proc.returncode
        else:
            why = errors[-1] if errors else "its import failed (exit status %d)" % proc.returncode
        out["broken"][key] = why[:300]
        if any("NumPy 1.x cannot be run in" in l or "_ARRAY_API not found" in l for l in errors):
            out["broken"][key] = "compiled for NumPy 1.x, fails under NumPy %s (_ARRAY_API not found)" % got.get("numpy")
            out["numpy_abi"] = out.get("numpy_abi", []) + [key]
    if got.get("numpy") and key != "numpy":
        out["numpy_with"][key] = got["numpy"]
print(json.dumps(out))
PYTHON
else
  echo "-"
fi
s end
