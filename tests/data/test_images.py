"""Tests of maskpre_tf.data.images: decoding image bytes, and finding unreadable files up front."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from image_files import H, W, write_image_files  # noqa: E402

from maskpre_tf.data.images import decode_image, image_file_problem, validate_images  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small real image files of each supported kind plus broken ones."""
    return write_image_files(tmp_path_factory.mktemp("images"))


def _read(path):
    return tf.constant(open(path, "rb").read())


# --- decode / normalise ---------------------------------------------------------------------


def test_decode_jpeg_and_png_shapes_and_range(files):
    for key in ("jpeg", "png"):
        image = decode_image(_read(files[key]), 2 * H, 2 * W).numpy()
        assert image.shape == (2 * H, 2 * W, 3) and image.dtype == np.float32
        assert image.min() >= 0.0 and image.max() <= 255.0
    same_size = decode_image(_read(files["png"]), H, W).numpy()
    np.testing.assert_allclose(same_size, files["rgb_array"].astype(np.float32), atol=1e-3)


def test_decode_promotes_grayscale_and_drops_alpha(files):
    gray = decode_image(_read(files["gray_png"]), H, W).numpy()
    assert gray.shape == (H, W, 3)
    for channel in range(3):
        np.testing.assert_allclose(gray[..., channel], files["gray_array"], atol=1e-3)
    rgba = decode_image(_read(files["rgba_png"]), H, W).numpy()
    np.testing.assert_allclose(rgba, files["rgb_array"].astype(np.float32), atol=1e-3)


def test_decode_is_graph_safe_and_rejects_corrupt_bytes(files):
    decode = tf.function(
        lambda data: decode_image(data, H, W),
        input_signature=[tf.TensorSpec([], tf.string)],
    )
    assert decode(_read(files["jpeg"])).shape == (H, W, 3)
    with pytest.raises(tf.errors.InvalidArgumentError):
        decode(_read(files["truncated_jpeg"]))


# --- validate_images ------------------------------------------------------------------------


def test_validate_images_finds_bad_files(files):
    good = [files[k] for k in ("jpeg", "png", "gray_png", "rgba_png")]
    bad = [files[k] for k in ("truncated_jpeg", "truncated_png", "empty", "text", "missing")]
    mixed = [good[0], bad[0], good[1], bad[1], bad[2], good[2], bad[3], good[3], bad[4]]
    assert validate_images(mixed) == bad
    assert validate_images(good) == []
    assert image_file_problem(files["truncated_png"]) == "truncated PNG (no IEND chunk)"
    assert image_file_problem(files["missing"]) == "missing"
