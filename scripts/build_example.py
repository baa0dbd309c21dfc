"""Train the bundled example model: a small CNN on the real digits data in calibration_data/digits.

Usage: python scripts/build_example.py [OUT.keras]   (default build/example/digits.keras)
Deterministic (fixed seeds); takes a few seconds on a laptop CPU.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "calibration_data" / "digits"


def build(out: Path, epochs: int = 40) -> float:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(0)
    train = np.load(DATA / "train.npz")
    test = np.load(DATA / "eval.npz")
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax", name="probs"),
        ],
        name="digits_cnn",
    )
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train["x"], train["y"], epochs=epochs, batch_size=32, verbose=0)
    _, acc = model.evaluate(test["x"], test["y"], verbose=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    return float(acc)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build" / "example" / "digits.keras"
    accuracy = build(target)
    print(f"built {target} (float accuracy on eval.npz: {accuracy * 100:.2f} %)")
