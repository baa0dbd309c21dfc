"""Calibration and evaluation data: loading, checks against the signature, the held-out split."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgeq.calibration import ImageOptions, load_labelled, load_samples, split_samples
from edgeq.errors import CalibrationDataError
from edgeq.types import TensorSpec

IMAGE = (TensorSpec("image", (None, 8, 8, 1), "float32"),)
TWO = (TensorSpec("img", (None, 8, 8, 1), "float32"), TensorSpec("meta", (None, 4), "float32"))


def rand(*shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_npy_single_input(tmp_path):
    np.save(tmp_path / "c.npy", rand(10, 8, 8, 1))
    data = load_samples(tmp_path / "c.npy", IMAGE)
    assert list(data) == ["image"] and data["image"].shape == (10, 8, 8, 1)


def test_npz_x_key_and_input_names(tmp_path):
    np.savez(tmp_path / "x.npz", x=rand(5, 8, 8, 1))
    assert load_samples(tmp_path / "x.npz", IMAGE)["image"].shape == (5, 8, 8, 1)
    np.savez(tmp_path / "two.npz", img=rand(5, 8, 8, 1), meta=rand(5, 4))
    data = load_samples(tmp_path / "two.npz", TWO)
    assert set(data) == {"img", "meta"}


def test_npz_missing_key_suggests_the_input_name(tmp_path):
    np.savez(tmp_path / "two.npz", img=rand(5, 8, 8, 1), metta=rand(5, 4))
    with pytest.raises(CalibrationDataError) as err:
        load_samples(tmp_path / "two.npz", TWO)
    assert "'meta'" in err.value.message and str(tmp_path / "two.npz") in err.value.message
    assert "'metta' -> 'meta'" in err.value.hint


def test_npy_for_two_inputs_is_refused(tmp_path):
    np.save(tmp_path / "c.npy", rand(5, 8, 8, 1))
    with pytest.raises(CalibrationDataError, match="2 inputs"):
        load_samples(tmp_path / "c.npy", TWO)


@pytest.mark.parametrize(
    "array, fragment",
    [
        (rand(5, 8, 8, 3), "axis 3: 3 != 1"),
        (rand(5, 8, 8), "rank 4"),
        (np.zeros((0, 8, 8, 1), np.float32), "no samples"),
        ((rand(5, 8, 8, 1) * 255).astype(np.uint8), "expects float32 values; the data is uint8"),
        (np.full((5, 8, 8, 1), 0.5, np.float32), "constant data"),
        (np.array(["a"] * 5).reshape(5, 1, 1, 1), "not numbers"),
    ],
)
def test_bad_arrays_name_the_file_and_the_problem(tmp_path, array, fragment):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(CalibrationDataError) as err:
        load_samples(path, IMAGE)
    assert str(path) in err.value.message
    assert fragment in err.value.message


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "Inf")])
def test_nan_and_inf_are_found_with_their_sample(tmp_path, bad, word):
    array = rand(6, 8, 8, 1)
    array[4, 2, 2, 0] = bad
    np.save(tmp_path / "c.npy", array)
    with pytest.raises(CalibrationDataError, match=rf"1 {word} value\(s\), first in sample 4"):
        load_samples(tmp_path / "c.npy", IMAGE)


def test_missing_path_and_unsupported_suffix(tmp_path):
    with pytest.raises(CalibrationDataError, match="no such file"):
        load_samples(tmp_path / "none.npz", IMAGE)
    (tmp_path / "c.csv").write_text("1,2\n")
    with pytest.raises(CalibrationDataError, match="unsupported calibration data '.csv'"):
        load_samples(tmp_path / "c.csv", IMAGE)


def test_corrupt_npz_is_a_clear_error(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"not a zip at all")
    with pytest.raises(CalibrationDataError, match="not a readable .npz"):
        load_samples(tmp_path / "c.npz", IMAGE)


def test_inputs_with_different_sample_counts(tmp_path):
    np.savez(tmp_path / "two.npz", img=rand(5, 8, 8, 1), meta=rand(4, 4))
    with pytest.raises(CalibrationDataError, match="different numbers of samples"):
        load_samples(tmp_path / "two.npz", TWO)


def _write_images(folder, n, size=(8, 8), mode="L"):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        shape = size[::-1] + ((3,) if mode == "RGB" else ())
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i}.png")


def test_image_folder_decodes_and_maps_pixels(tmp_path):
    _write_images(tmp_path / "imgs", 4)
    expected = np.asarray(Image.open(sorted((tmp_path / "imgs").iterdir())[0]), dtype=np.float32) / 255.0
    data = load_samples(tmp_path / "imgs", IMAGE)["image"]
    assert data.shape == (4, 8, 8, 1) and data.dtype == np.float32
    np.testing.assert_allclose(data[0, ..., 0], expected, rtol=1e-6)
    sym = load_samples(tmp_path / "imgs", IMAGE, ImageOptions(pixel_range=(-1.0, 1.0)))["image"]
    np.testing.assert_allclose(sym, data * 2 - 1, atol=1e-6)
    norm = load_samples(tmp_path / "imgs", IMAGE, ImageOptions(mean=(0.5,), std=(0.25,)))["image"]
    np.testing.assert_allclose(norm, (data - 0.5) / 0.25, atol=1e-5)


def test_image_folder_resizes_and_converts_channels(tmp_path):
    _write_images(tmp_path / "imgs", 3, size=(20, 12), mode="L")
    rgb = (TensorSpec("rgb", (None, 16, 16, 3), "float32"),)
    data = load_samples(tmp_path / "imgs", rgb)["rgb"]
    assert data.shape == (3, 16, 16, 3)
    np.testing.assert_allclose(data[..., 0], data[..., 2])  # gray expanded to RGB


def test_empty_folder_and_unreadable_image(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationDataError, match="no PNG or JPEG images"):
        load_samples(tmp_path / "empty", IMAGE)
    _write_images(tmp_path / "imgs", 2)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(CalibrationDataError) as err:
        load_samples(tmp_path / "imgs", IMAGE)
    assert "broken.png" in err.value.message and "unreadable image" in err.value.message


def test_image_folder_needs_an_image_input(tmp_path):
    _write_images(tmp_path / "imgs", 2)
    with pytest.raises(CalibrationDataError, match="image input of shape"):
        load_samples(tmp_path / "imgs", (TensorSpec("v", (None, 16), "float32"),))


def test_labelled_data(tmp_path):
    np.savez(tmp_path / "e.npz", x=rand(6, 8, 8, 1), y=np.arange(6) % 3)
    inputs, labels = load_labelled(tmp_path / "e.npz", IMAGE)
    assert inputs["image"].shape == (6, 8, 8, 1) and labels.tolist() == [0, 1, 2, 0, 1, 2]
    onehot = np.eye(3)[np.arange(6) % 3]
    np.savez(tmp_path / "o.npz", x=rand(6, 8, 8, 1), y=onehot.astype(np.int64))
    assert load_labelled(tmp_path / "o.npz", IMAGE)[1].tolist() == labels.tolist()
    np.savez(tmp_path / "short.npz", x=rand(6, 8, 8, 1), y=np.arange(5))
    with pytest.raises(CalibrationDataError, match="5 labels for 6 samples"):
        load_labelled(tmp_path / "short.npz", IMAGE)
    np.savez(tmp_path / "nolabels.npz", x=rand(6, 8, 8, 1))
    with pytest.raises(CalibrationDataError, match="no labels"):
        load_labelled(tmp_path / "nolabels.npz", IMAGE)


def test_split_is_disjoint_seeded_and_bounded():
    samples = {"image": np.arange(340, dtype=np.float32).reshape(340, 1)}
    a = split_samples(samples, 200, seed=0)
    b = split_samples(samples, 200, seed=0)
    c = split_samples(samples, 200, seed=1)
    assert len(a.calibration_indices) == 200 and len(a.holdout_indices) == 140
    assert not set(a.calibration_indices) & set(a.holdout_indices)
    np.testing.assert_array_equal(a.calibration_indices, b.calibration_indices)
    assert not np.array_equal(a.calibration_indices, c.calibration_indices)
    # the arrays really are the rows named by the indices
    np.testing.assert_array_equal(a.holdout["image"][:, 0], a.holdout_indices.astype(np.float32))


def test_split_always_holds_out_a_fifth():
    samples = {"v": np.arange(50, dtype=np.float32)[:, None]}
    split = split_samples(samples, 200)
    assert len(split.holdout_indices) == 10 and len(split.calibration_indices) == 40
    with pytest.raises(CalibrationDataError, match="at least 2"):
        split_samples({"v": np.zeros((1, 1), np.float32)}, 200)
