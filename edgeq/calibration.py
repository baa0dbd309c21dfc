"""Loading calibration and evaluation data and checking it against a model's signature.

Sources: a ``.npy`` file (one input), a ``.npz`` file (keys are input names, or
``x`` for a single input; ``y`` holds labels for evaluation), or a folder of
PNG/JPEG images for a model with one image input (N, H, W, C).
Every problem is one :class:`CalibrationDataError` naming the file and what
was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .errors import CalibrationDataError
from .types import TensorSpec

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageOptions",
    "Split",
    "load_labelled",
    "load_samples",
    "split_samples",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABEL_KEYS = ("y",)


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """How decoded pixels (0..255) become model input values.

    ``pixel_range`` maps 0..255 linearly onto (low, high); ``mean``/``std``, when
    given, are then applied per channel: ``(v - mean) / std``.
    """

    pixel_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Split:
    """Calibration samples and the held-out samples never used for calibration."""

    calibration: dict[str, np.ndarray]
    holdout: dict[str, np.ndarray]
    calibration_indices: np.ndarray
    holdout_indices: np.ndarray


def _fail(path: Path | str, message: str, hint: str | None = None) -> CalibrationDataError:
    return CalibrationDataError(f"{path}: {message}", hint=hint)


def _describe_shape(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("N" if i == 0 else ("?" if d is None else str(d)) for i, d in enumerate(shape)) + ")"


# --------------------------------------------------------------------------- loading


def load_samples(
    path: str | Path,
    specs: Sequence[TensorSpec],
    image_options: ImageOptions | None = None,
) -> dict[str, np.ndarray]:
    """Load every sample in ``path``, checked against ``specs``; keyed by input name."""
    arrays, _ = _load(Path(path), specs, image_options or ImageOptions(), want_labels=False)
    return arrays


def load_labelled(path: str | Path, specs: Sequence[TensorSpec]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Load labelled evaluation data: a .npz with the inputs (``x`` or input names) and ``y``."""
    path = Path(path)
    if path.suffix != ".npz" or path.is_dir():
        if not path.exists():
            raise _fail(path, "no such file")
        raise _fail(path, "labelled data must be a .npz file with 'x' (or the input names) and 'y'")
    arrays, labels = _load(path, specs, ImageOptions(), want_labels=True)
    assert labels is not None
    return arrays, labels


def _load(
    path: Path, specs: Sequence[TensorSpec], options: ImageOptions, want_labels: bool
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    if not specs:
        raise CalibrationDataError("the model has no inputs to calibrate")
    if not path.exists():
        raise _fail(path, "no such file or directory")
    labels = None
    if path.is_dir():
        arrays = _load_image_folder(path, specs, options)
    elif path.suffix == ".npy":
        arrays = _load_npy(path, specs)
    elif path.suffix == ".npz":
        arrays, labels = _load_npz(path, specs, want_labels)
    else:
        raise _fail(
            path,
            f"unsupported calibration data '{path.suffix or path.name}'",
            hint="use a .npy file, a .npz file keyed by input name, or a folder of PNG/JPEG images",
        )
    checked = {spec.name: _check_array(path, spec, arrays[spec.name]) for spec in specs}
    counts = {name: len(a) for name, a in checked.items()}
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"'{k}': {v}" for k, v in counts.items())
        raise _fail(path, f"inputs have different numbers of samples ({listing})")
    if labels is not None:
        labels = _check_labels(path, labels, next(iter(counts.values())))
    return checked, labels


def _open_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise _fail(path, f"not a readable .npz file ({exc})") from exc


def _load_npy(path: Path, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    if len(specs) > 1:
        names = ", ".join(s.name for s in specs)
        raise _fail(
            path,
            f"the model has {len(specs)} inputs ({names}) but a .npy file holds one array",
            hint="save a .npz keyed by input name: np.savez(path, " + ", ".join(f"{s.name}=..." for s in specs) + ")",
        )
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise _fail(path, f"not a readable .npy file ({exc})") from exc
    return {specs[0].name: array}


def _load_npz(
    path: Path, specs: Sequence[TensorSpec], want_labels: bool
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    data = _open_npz(path)
    names = [s.name for s in specs]
    arrays: dict[str, np.ndarray] = {}
    if len(specs) == 1 and names[0] not in data and "x" in data:
        arrays[names[0]] = data["x"]
        used = {"x"}
    else:
        missing = [n for n in names if n not in data]
        if missing:
            hint = None
            if len(specs) == 1:
                hint = f"name the array 'x' or '{names[0]}'"
            else:
                guesses = [
                    f"'{k}' -> '{m[0]}'"
                    for k in data
                    if (m := difflib.get_close_matches(k, missing, n=1)) and k not in names
                ]
                hint = (
                    "did you mean " + ", ".join(guesses) + "?"
                    if guesses
                    else f"keys must be the input names: {', '.join(names)}"
                )
            raise _fail(
                path,
                f"no array for input(s) {', '.join(repr(m) for m in missing)}; the file has {', '.join(repr(k) for k in data) or 'no arrays'}",
                hint=hint,
            )
        arrays = {n: data[n] for n in names}
        used = set(names)
    extra = [k for k in data if k not in used and k not in LABEL_KEYS]
    if extra:
        raise _fail(
            path,
            f"unexpected array(s) {', '.join(repr(k) for k in extra)}; expected {', '.join(repr(n) for n in names)}"
            + (" and 'y'" if want_labels else ""),
        )
    labels = None
    if want_labels:
        if "y" not in data:
            raise _fail(path, "no labels: labelled data needs a 'y' array")
        labels = data["y"]
    return arrays, labels


def _image_spec(path: Path, specs: Sequence[TensorSpec]) -> TensorSpec:
    if len(specs) != 1:
        raise _fail(path, f"an image folder can feed a model with one input; this model has {len(specs)}")
    spec = specs[0]
    if len(spec.shape) != 4 or spec.shape[3] not in (1, 3) or None in spec.shape[1:3]:
        raise _fail(
            path,
            f"an image folder needs an image input of shape (N, H, W, 1 or 3); input '{spec.name}' is {_describe_shape(spec.shape)}",
        )
    return spec


def _load_image_folder(path: Path, specs: Sequence[TensorSpec], options: ImageOptions) -> dict[str, np.ndarray]:
    from PIL import Image, UnidentifiedImageError  # imported here: only image folders need Pillow

    spec = _image_spec(path, specs)
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise _fail(path, "no PNG or JPEG images in this folder")
    _, h, w, c = spec.shape
    assert h is not None and w is not None and c is not None  # _image_spec checked them
    height, width, channels = int(h), int(w), int(c)
    mode = "L" if channels == 1 else "RGB"
    pixels = np.empty((len(files), height, width, channels), dtype=np.float32)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as opened:
                img = opened.convert(mode)
                if img.size != (width, height):
                    img = img.resize((width, height), Image.Resampling.BILINEAR)
                array = np.asarray(img, dtype=np.float32)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise _fail(file, f"unreadable image ({exc.__class__.__name__}: {exc})") from exc
        pixels[i] = array.reshape(height, width, channels)
    low, high = options.pixel_range
    values = low + pixels * ((high - low) / 255.0)
    for name, stat in (("mean", options.mean), ("std", options.std)):
        if stat is not None and len(stat) not in (1, channels):
            raise CalibrationDataError(f"--{name} needs 1 or {channels} values, got {len(stat)}")
    if options.mean is not None:
        values = values - np.asarray(options.mean, dtype=np.float32)
    if options.std is not None:
        std = np.asarray(options.std, dtype=np.float32)
        if np.any(std == 0):
            raise CalibrationDataError("--std values must not be zero")
        values = values / std
    return {spec.name: values.astype(np.float32)}


# --------------------------------------------------------------------------- checks


def _check_array(path: Path, spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    where = f"input '{spec.name}'"
    expected = _describe_shape(spec.shape)
    if array.dtype.kind not in "biuf":
        raise _fail(path, f"{where}: values of type {array.dtype} are not numbers")
    if array.ndim != len(spec.shape):
        hint = None
        if array.ndim == len(spec.shape) - 1:
            hint = "the first axis counts samples: add one with x[None] for a single sample"
        raise _fail(
            path,
            f"{where} expects rank {len(spec.shape)} {expected}; the data has rank {array.ndim} {tuple(array.shape)}",
            hint=hint,
        )
    if len(array) == 0:
        raise _fail(path, f"{where}: no samples")
    for axis, (want, got) in enumerate(zip(spec.shape[1:], array.shape[1:]), start=1):
        if want is not None and want != got:
            raise _fail(
                path,
                f"{where} expects shape {expected}; the data has {tuple(array.shape)} (axis {axis}: {got} != {want})",
            )
    want_kind = np.dtype(spec.dtype).kind
    if want_kind == "f":
        if array.dtype.kind != "f":
            lo, hi = (array.min(), array.max())
            raise _fail(
                path,
                f"{where} expects {spec.dtype} values; the data is {array.dtype} ({lo}..{hi})",
                hint="convert and scale the data to the model's input range first (for 8-bit pixels often x / 255)",
            )
        bad = ~np.isfinite(array)
        if bad.any():
            sample = int(np.argwhere(bad)[0][0])
            kinds = "NaN" if np.isnan(array).any() else "Inf"
            raise _fail(path, f"{where}: {int(bad.sum())} {kinds} value(s), first in sample {sample}")
    elif want_kind in "iu" and array.dtype.kind not in "iub":
        raise _fail(path, f"{where} expects integer ({spec.dtype}) values; the data is {array.dtype}")
    if array.size > 1 and float(array.min()) == float(array.max()):
        raise _fail(
            path,
            f"{where}: every value is {array.flat[0]}; constant data gives no range to calibrate",
        )
    return array.astype(spec.dtype, copy=False)


def _check_labels(path: Path, labels: np.ndarray, samples: int) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] > 1:
        labels = labels.argmax(axis=1)  # one-hot
    labels = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise _fail(
            path, f"'y' must hold integer class labels (N,) or one-hot (N, C); got {labels.dtype} {tuple(labels.shape)}"
        )
    if len(labels) != samples:
        raise _fail(path, f"'y' has {len(labels)} labels for {samples} samples")
    return labels.astype(np.int64)


# --------------------------------------------------------------------------- split


def split_samples(samples: Mapping[str, np.ndarray], calibration_count: int, seed: int = 0) -> Split:
    """Shuffle with a fixed seed; hold out at least a fifth (at least one sample), calibrate on the rest.

    At most ``calibration_count`` samples calibrate; the held-out samples are
    disjoint from them and number at most 1000.
    """
    if calibration_count < 1:
        raise CalibrationDataError("--calib-samples must be at least 1")
    n = len(next(iter(samples.values())))
    if n < 2:
        raise CalibrationDataError(
            f"only {n} calibration sample; at least 2 are needed (one to calibrate, one held out to measure fidelity)"
        )
    order = np.random.default_rng(seed).permutation(n)
    min_holdout = max(1, n // 5)
    n_calib = min(calibration_count, n - min_holdout)
    n_hold = min(n - n_calib, 1000)
    calib_idx = np.sort(order[:n_calib])
    hold_idx = np.sort(order[n_calib : n_calib + n_hold])
    return Split(
        calibration={k: v[calib_idx] for k, v in samples.items()},
        holdout={k: v[hold_idx] for k, v in samples.items()},
        calibration_indices=calib_idx,
        holdout_indices=hold_idx,
    )
