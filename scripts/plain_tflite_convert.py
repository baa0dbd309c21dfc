"""The baseline for scripts/bench_convert.py: the plain TFLiteConverter recipe for full-integer int8.

Usage: python scripts/plain_tflite_convert.py MODEL.keras CALIB.(npy|npz) SAMPLES OUT.tflite
This is what a user writes by hand following the TFLite post-training
quantization guide: load, representative dataset, int8-only ops, int8 I/O.
"""

import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

model_path, calib_path, samples, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
data = np.load(calib_path)
data = data["x"] if calib_path.endswith(".npz") else data
model = tf.keras.models.load_model(model_path, compile=False)


def representative_dataset():
    for i in range(min(samples, len(data))):
        yield [data[i : i + 1]]


converter = tf.lite.TFLiteConverter.from_keras_model(model)
converter.optimizations = [tf.lite.Optimize.DEFAULT]
converter.representative_dataset = representative_dataset
converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
converter.inference_input_type = tf.int8
converter.inference_output_type = tf.int8
with open(out, "wb") as f:
    f.write(converter.convert())
