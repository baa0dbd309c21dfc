"""Regenerate calibration_data/digits/ from scikit-learn's bundled copy of the UCI digits.

Needs scikit-learn (not a dependency of edgeq): ``pip install scikit-learn``.
The output is deterministic: a fixed seed splits the 1,797 samples into
train (1,100, with labels), calib (340, inputs only) and eval (357, with labels),
and the first 100 calibration samples are also written as 8x8 grayscale PNGs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parent.parent / "calibration_data" / "digits"


def main() -> None:
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]  # (N, 8, 8, 1) in [0, 1]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    train, calib, test = order[:1100], order[1100:1440], order[1440:]
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "train.npz", x=x[train], y=y[train])
    np.savez_compressed(OUT / "calib.npz", x=x[calib])
    np.savez_compressed(OUT / "eval.npz", x=x[test], y=y[test])
    images = OUT / "images"
    images.mkdir(exist_ok=True)
    for i, idx in enumerate(calib[:100]):
        pixels = np.round(digits.images[idx] / 16.0 * 255.0).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"digit_{i:03d}_label{y[idx]}.png")
    print(f"wrote {OUT}: train {len(train)}, calib {len(calib)}, eval {len(test)}, images 100")


if __name__ == "__main__":
    main()
