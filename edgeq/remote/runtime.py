#!/usr/bin/env python3
"""edgeq's runtime folder on a device: what `edgeq provision` reads and writes there. Standard library only.

    python3 runtime.py inspect ROOT
    python3 runtime.py install ROOT RUNTIME WHEEL...
    python3 runtime.py check ROOT RUNTIME

ROOT is EDGEQ_DIR/runtime; ENV, the folder for this Python and machine, is ROOT/py311-aarch64
(py<major><minor>-<machine>, as the probe's --env-root finds it): a plain folder
that the probe and the facts script put first on the import path (Debian's minimal images have
neither venv nor ensurepip, and the apt numpy 1.x already there is often the one a runtime needs).
`install` unpacks the wheels (zip files, pushed from the host: the device needs no pip and no
internet) into a new folder beside ENV, checks there that the runtime imports and runs a tiny
model, then swaps it in: ENV is the old folder or the new one, never half of either. The wheels
are deleted afterwards. Each command prints one JSON document on its last line.
"""

import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import zipfile

MANIFEST = ".edgeq-runtime.json"
MODULES = {"ai-edge-litert": "ai_edge_litert.interpreter", "tflite-runtime": "tflite_runtime.interpreter"}
# y = relu(2x + 1) on a float32[1,4]; the same bytes as detect.sh's TINY (tests/test_remote.py checks)
TINY = (
    "HAAAAFRGTDMUACAAHAAYABQAEAAMAAAACAAEABQAAAAcAAAAHAAAAHQAAABUAQAAZAEAAGADAAADAAAAAAAAAAIAAAA0AAAA"
    "BAAAANz///8HAAAABAAAABMAAABDT05WRVJTSU9OX01FVEFEQVRBAAgADAAIAAQACAAAAAYAAAAEAAAAEwAAAG1pbl9ydW50"
    "aW1lX3ZlcnNpb24ACAAAANwAAADUAAAAwAAAAKQAAACcAAAAlAAAAHQAAAAEAAAAXv///wQAAABgAAAAEAAAAAAAAAAIAA4A"
    "CAAEAAgAAAAQAAAAJAAAAAAABgAIAAQABgAAAAQAAAAAAAAADAAYABQAEAAMAAQADAAAADdlf7AXNt3tAwAAAAIAAAAEAAAA"
    "BgAAADIuMjEuMAAAyv///wQAAAAQAAAAMS41LjAAAAAAAAAAAAAAAKj9//+s/f//7v///wQAAAAEAAAAAAAAQAAABgAIAAQA"
    "BgAAAAQAAAAEAAAAAACAP9j9///c/f//DwAAAE1MSVIgQ29udmVydGVkLgABAAAAFAAAAAAADgAYABQAEAAMAAgABAAOAAAA"
    "FAAAABwAAACsAAAAsAAAALQAAAAEAAAAbWFpbgAAAAACAAAAZAAAABQAAAAAAA4AGgAUABAADAALAAQADgAAABwAAAAAAAAL"
    "HAAAACAAAAABAAAAAAAGAAgABwAGAAAAAAAAAQEAAAAEAAAAAgAAAAMAAAABAAAAAAAOABQAAAAQAAwACwAEAA4AAAAQAAAA"
    "AAAAFQwAAAAQAAAArP7//wEAAAADAAAAAgAAAAAAAAACAAAAAQAAAAQAAAABAAAAAAAAAAUAAADsAAAApAAAAHQAAABAAAAA"
    "BAAAAD7///8AAAABEAAAABAAAAAFAAAAGAAAAAT///8IAAAASWRlbnRpdHkAAAAAAgAAAAEAAAAEAAAAdv///wAAAAEQAAAA"
    "EAAAAAQAAAAQAAAAPP///wMAAABtdWwAAgAAAAEAAAAEAAAApv///wAAAAEQAAAAEAAAAAMAAAAUAAAAbP///wUAAABtdWwv"
    "eQAAAAAAAADS////AAAAARAAAAAQAAAAAgAAABQAAACY////BQAAAGFkZC95AAAAAAAAAAAAFgAYABQAAAAQAAwACAAAAAAA"
    "AAAHABYAAAAAAAABEAAAABAAAAABAAAAEAAAANz///8BAAAAeAAAAAIAAAABAAAABAAAAAIAAAAcAAAACAAAAAQABAAEAAAA"
    "DAAMAAsAAAAAAAQADAAAABIAAAAAAAAS"
)

CHECK = r"""
import base64, json, sys
sys.path.insert(0, sys.argv[1])
got = {}
try:
    module = __import__(sys.argv[2], fromlist=["Interpreter"])
    import numpy
    got["numpy"] = numpy.__version__
    got["numpy_file"] = numpy.__file__
    interp = module.Interpreter(model_content=base64.b64decode(sys.argv[3]))
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.set_tensor(inp["index"], numpy.ones(inp["shape"], numpy.float32))
    interp.invoke()
    got["ok"] = bool((interp.get_tensor(outp["index"]) == 3.0).all())
    if not got["ok"]:
        got["error"] = "the runtime computed relu(2x+1) wrongly on a 4-value tiny model"
except Exception as exc:
    got["ok"] = False
    got["error"] = (type(exc).__name__ + ": " + str(exc))[:300]
print(json.dumps(got))
"""


def env_folder(root):
    """ROOT/py<major><minor>-<machine>: the folder of this Python on this machine."""
    tag = "py%d%d-%s" % (sys.version_info[0], sys.version_info[1], platform.machine())
    return os.path.join(os.path.abspath(os.path.expanduser(root)), tag)


def emit(document, status=0):
    print(json.dumps(document))
    return status


def read_manifest(env):
    try:
        with open(os.path.join(env, MANIFEST)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def system_numpy():
    """The numpy this Python imports WITHOUT edgeq's folder: (version, path) or (None, None)."""
    code = "import json, numpy; print(json.dumps([numpy.__version__, numpy.__file__]))"
    try:
        out = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
        version, path = json.loads(out.stdout.decode().strip().splitlines()[-1])
        return version, path
    except Exception:
        return None, None


def free_mb(path):
    while not os.path.isdir(path):
        path = os.path.dirname(path) or "."
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // (1024 * 1024)


def check(env, runtime):
    """Import ``runtime`` with ``env`` first on the path and run the tiny model (in a child process)."""
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, env, MODULES[runtime], TINY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=600,
    )
    lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["exit status %d" % proc.returncode]
        why = "crashed (signal %d)" % -proc.returncode if proc.returncode < 0 else tail[0]
        return {"ok": False, "error": why[:300]}


def inspect(env):
    version, path = system_numpy()
    return emit(
        {
            "python": platform.python_version(),
            "implementation": sys.implementation.name,
            "machine": platform.machine(),
            "bits": struct.calcsize("P") * 8,
            "libc": list(platform.libc_ver()),
            "numpy": version,
            "numpy_path": path,
            "env": os.path.abspath(env),
            "manifest": read_manifest(env),
            "free_mb": free_mb(os.path.dirname(os.path.abspath(env))),
        }
    )


def install(env, runtime, wheels):
    env = os.path.abspath(env)
    parent = os.path.dirname(env)
    if not os.path.isdir(parent):
        os.makedirs(parent)
    staging = "%s.new-%d" % (env, os.getpid())
    old = "%s.old-%d" % (env, os.getpid())
    shutil.rmtree(staging, ignore_errors=True)
    try:
        os.makedirs(staging)
        names = []
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.namelist():  # a wheel never writes outside its folder
                    if member.startswith("/") or ".." in member.split("/"):
                        raise ValueError("%s: unsafe path in the wheel: %s" % (os.path.basename(wheel), member))
                archive.extractall(staging)
            names.append(os.path.basename(wheel).split("-", 1)[1] if "-" in os.path.basename(wheel) else wheel)
        for root, _dirs, files in os.walk(staging):  # shared objects must be executable for some loaders
            for name in files:
                if ".so" in name:
                    os.chmod(os.path.join(root, name), 0o755)
        result = check(staging, runtime)
        if not result.get("ok"):
            shutil.rmtree(staging, ignore_errors=True)
            return emit({"ok": False, "changed": False, "error": result.get("error"), "check": result}, 4)
        with open(os.path.join(staging, MANIFEST), "w") as handle:
            json.dump({"runtime": runtime, "wheels": sorted(names)}, handle)
        if os.path.isdir(env):
            os.rename(env, old)
        os.rename(staging, env)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if os.path.isdir(old) and not os.path.isdir(env):
            os.rename(old, env)
        raise
    finally:
        for wheel in wheels:
            try:
                os.remove(wheel)
            except OSError:
                pass
    result = check(env, runtime)
    return emit({"ok": bool(result.get("ok")), "changed": True, "check": result, "manifest": read_manifest(env)})


def main(argv):
    if len(argv) >= 2 and argv[0] == "inspect":
        return inspect(env_folder(argv[1]))
    if len(argv) >= 3 and argv[0] == "check" and argv[2] in MODULES:
        env = env_folder(argv[1])
        result = check(env, argv[2])
        return emit({"ok": bool(result.get("ok")), "changed": False, "check": result, "manifest": read_manifest(env)})
    if len(argv) >= 4 and argv[0] == "install" and argv[2] in MODULES:
        return install(env_folder(argv[1]), argv[2], argv[3:])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
