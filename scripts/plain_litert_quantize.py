"""The baseline for scripts/bench_tune.py: litert-quantizer called directly on a float .tflite, full int8.

Usage: python scripts/plain_litert_quantize.py FLOAT.tflite CALIB.(npy|npz) SAMPLES OUT.tflite
What a user writes by hand following litert-quantizer's README: a static
int8 recipe, calibration over a signature, quantize, export.
"""

import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from litert_quantizer import quantizer, recipe

model_path, calib_path, samples, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
data = np.load(calib_path)
data = data["x"] if calib_path.endswith(".npz") else data
with open(model_path, "rb") as f:
    model = f.read()
signatures = Interpreter(model_content=model).get_signature_list()
key = next(iter(signatures))
name = signatures[key]["inputs"][0]
q = quantizer.Quantizer(bytearray(model), recipe.static_wi8_ai8())
statistics = q.calibrate({key: [{name: data[i : i + 1]} for i in range(min(samples, len(data)))]})
result = q.quantize(statistics, enable_progress_report=False)
with open(out, "wb") as f:
    f.write(bytes(result.quantized_model))
