"""The one list of TFLite runtimes, and the device-side copies that must agree with it."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys

from edgeq.runtimes import RUNTIME_INFO, RUNTIMES


def _detect_sh_runtimes() -> list[tuple[str, str, tuple[str, ...], str | None]]:
    """The (key, module, distributions, module imported) rows of the Python program inside detect.sh."""
    from edgeq.remote import script_source

    text = script_source("detect.sh").decode()
    match = re.search(r"<<'PYTHON'[^\n]*\n(.*?)\nPYTHON\n", text, re.DOTALL)
    assert match, "detect.sh's Python program not found: update this test with the script"
    program = match.group(1)
    loops = [
        node
        for node in ast.walk(ast.parse(program))
        if isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple) and len(node.iter.elts) > 1
    ]
    assert len(loops) == 1, "detect.sh's runtime loop not found: update this test with the script"
    return list(ast.literal_eval(loops[0].iter))


def test_names_are_in_order_of_preference():
    assert RUNTIMES == ("ai-edge-litert", "tflite-runtime", "tensorflow")
    for name, rt in RUNTIME_INFO.items():
        assert rt.name == name == rt.distributions[0]
        assert rt.interpreter_module.startswith(rt.package + ".")


def test_probe_program_agrees():
    """edgeq/probe/device.py runs on devices without edgeq: its own copy must say the same."""
    from edgeq.probe import device

    expected = {rt.name: (rt.interpreter_module, rt.distributions[0]) for rt in RUNTIME_INFO.values()}
    assert expected == device.RUNTIMES  # (module holding Interpreter, distribution for the version)
    assert list(device.RUNTIMES) == list(RUNTIMES)
    assert device.parse_args(["--model", "m.tflite"]).prefer.split(",") == list(RUNTIMES)


def test_detect_script_agrees():
    """edgeq/remote/detect.sh's Python reports the runtimes by the same names, found the same way."""
    rows = [row for row in _detect_sh_runtimes() if row[0] != "numpy"]
    assert [key for key, *_ in rows] == list(RUNTIMES)
    for key, module, dists, load in rows:
        rt = RUNTIME_INFO[key]
        assert module == rt.package, key
        assert tuple(dists) == rt.distributions, key
        # imported for real where it is cheap (catches broken installs); TensorFlow is only looked up
        assert load in (rt.interpreter_module, None), key


def test_package_copies_are_the_one_list():
    from edgeq import kernels, probe, targets

    assert kernels.RUNTIME_FAMILIES is RUNTIMES
    assert targets.RUNTIMES is RUNTIMES
    assert probe.DEFAULT_RUNTIMES is RUNTIMES


def test_interpreter_class_is_a_listed_runtime():
    from edgeq.litert import interpreter_class

    cls, name = interpreter_class()
    assert name == RUNTIMES[0]  # ai-edge-litert is a dependency
    assert cls is importlib.import_module(RUNTIME_INFO[name].interpreter_module).Interpreter


def test_importing_costs_nothing():
    code = "import sys, edgeq.runtimes; print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'edgeq')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['edgeq', 'edgeq.runtimes']"
