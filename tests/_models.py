"""Small test models, built in code once per session (TensorFlow is imported only here).

Import the fixtures into a test module with ``from _models import *``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

DIGITS = Path(__file__).resolve().parent.parent / "calibration_data" / "digits"


def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(0)
    return keras


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def digits_classifier(model_dir) -> Path:
    """A small CNN trained briefly on the bundled digits data: a real classifier, (8, 8, 1) -> 10."""
    keras = _keras()
    train = np.load(DIGITS / "train.npz")
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss="sparse_categorical_crossentropy")
    model.fit(train["x"], train["y"], epochs=8, batch_size=64, verbose=0)
    path = model_dir / "digits.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def int8_model(digits_classifier, tmp_path_factory) -> Path:
    """``digits_classifier`` converted to int8 (int8 input and output), calibrated on the bundled digits."""
    from edgeq.convert import convert_model

    out = tmp_path_factory.mktemp("probe") / "digits_int8.tflite"
    convert_model(digits_classifier, DIGITS / "calib.npz", out)
    return out


@pytest.fixture(scope="session")
def digits_h5(model_dir, digits_classifier) -> Path:
    keras = _keras()
    path = model_dir / "digits.h5"
    keras.models.load_model(digits_classifier).save(path)
    return path


@pytest.fixture(scope="session")
def digits_saved_model(model_dir, digits_classifier) -> Path:
    keras = _keras()
    path = model_dir / "digits_savedmodel"
    keras.models.load_model(digits_classifier).export(str(path), format="tf_saved_model", verbose=False)
    return path


@pytest.fixture(scope="session")
def two_input_model(model_dir) -> Path:
    """Two named inputs: an image and a feature vector."""
    keras = _keras()
    img = keras.Input((8, 8, 1), name="img")
    meta = keras.Input((4,), name="meta")
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(img))
    x = keras.layers.Concatenate()([x, meta])
    out = keras.layers.Dense(3, activation="softmax")(x)
    path = model_dir / "two_inputs.keras"
    keras.Model([img, meta], out).save(path)
    return path


@pytest.fixture(scope="session")
def rgb_model(model_dir) -> Path:
    """A 16x16 RGB input, for image folders that must be resized and converted to RGB."""
    keras = _keras()
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3), name="rgb"),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(5),
        ]
    )
    path = model_dir / "rgb.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def sin_model_dir(model_dir) -> Path:
    """A SavedModel using SIN, an op with no int8 kernel (Lambda layers do not reload safely from .keras)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    class SinModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.random.default_rng(0).normal(size=(16, 8)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.math.sin(tf.matmul(x, self.w))}

    module = SinModel()
    path = model_dir / "sin_savedmodel"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


@pytest.fixture()
def vector_calib(tmp_path) -> Path:
    path = tmp_path / "vectors.npy"
    np.save(path, np.random.default_rng(1).normal(size=(60, 16)).astype("float32"))
    return path


@pytest.fixture(scope="session")
def ruined_layer_model(model_dir) -> Path:
    """A digits MLP with exactly one layer that int8 ruins: 'ruined' (the third op of the float .tflite's dense layers).

    A unit of 'hidden' is dead (zero weights, negative bias: its ReLU output is
    always 0), and its outgoing weights in 'ruined' are 500. Float multiplies
    them by 0 and does not notice; int8's per-channel weight scale of 'ruined'
    is then set by 500/127, and every real weight of that layer rounds to zero.
    Keeping 'ruined' alone in float recovers the accuracy; nothing else does.
    """
    keras = _keras()
    train = np.load(DIGITS / "train.npz")
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(32, activation="relu", name="ruined"),
            keras.layers.Dense(10, activation="softmax", name="probs"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss="sparse_categorical_crossentropy")
    model.fit(train["x"], train["y"], epochs=30, batch_size=64, verbose=0)
    w, b = model.get_layer("hidden").get_weights()
    w[:, 0], b[0] = 0.0, -1.0
    model.get_layer("hidden").set_weights([w, b])
    w, b = model.get_layer("ruined").get_weights()
    w[0, :] = 500.0
    model.get_layer("ruined").set_weights([w, b])
    path = model_dir / "ruined.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def float_tflite(model_dir, digits_classifier) -> Path:
    """``digits_classifier`` as a float32 .tflite with its signature."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    keras = _keras()
    model = keras.models.load_model(digits_classifier)
    path = model_dir / "digits_float.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


@pytest.fixture(scope="session")
def signatureless_tflite(model_dir, float_tflite) -> Path:
    """The same float model with its signature removed, as many published .tflite files are."""
    from ai_edge_litert.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(float_tflite.read_bytes()))
    obj.signatureDefs = []
    path = model_dir / "digits_nosig.tflite"
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(obj)))
    return path
