"""The encoder's input normalisation equals each weights family's own Keras preprocessing."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from maskpre_tf.models.normalization import INPUT_NORMS, describe, normalize_pixels  # noqa: E402

# The keras.applications preprocessing each backbone's ImageNet weights were trained with.
KERAS_PREPROCESS = {
    "caffe": keras.applications.resnet.preprocess_input,
    "tf": keras.applications.mobilenet_v2.preprocess_input,
    "torch": keras.applications.densenet.preprocess_input,  # mode="torch"
}


def _uint8_images(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3, 16, 8, 3), dtype=np.uint8)


@pytest.mark.parametrize("norm", INPUT_NORMS)
def test_normalisation_of_uint8_images_equals_keras_preprocess_input_exactly(norm):
    images = _uint8_images()
    expected = KERAS_PREPROCESS[norm](images.astype(np.float32))
    ours = normalize_pixels(tf.constant(images), norm).numpy()
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, expected)


def test_conventions_differ_in_scale_and_channel_order():
    red = np.zeros((1, 1, 1, 3), np.float32)
    red[..., 0] = 255.0
    caffe = normalize_pixels(red, "caffe").numpy().ravel()
    assert caffe[2] == pytest.approx(255.0 - 123.68) and caffe[0] == pytest.approx(-103.939)
    assert normalize_pixels(red, "tf").numpy().ravel().tolist() == [1.0, -1.0, -1.0]
    torch = normalize_pixels(red, "torch").numpy().ravel()
    assert torch[0] == pytest.approx((1 - 0.485) / 0.229, rel=1e-6)


def test_describe_reproduces_the_formula():
    pixels = _uint8_images(1).astype(np.float32)
    for norm in INPUT_NORMS:
        info = describe(norm)
        x = pixels[..., ::-1] if info["channel_order"] == "BGR" else pixels
        std = np.array(info["std"] if info["std"] is not None else [1.0] * 3, np.float32)
        manual = (x - np.array(info["mean"], np.float32)) / std
        np.testing.assert_allclose(normalize_pixels(pixels, norm).numpy(), manual, atol=1e-5)


def test_unknown_normalisation_is_refused():
    with pytest.raises(ValueError, match="caffe, tf, torch"):
        normalize_pixels(tf.zeros((1, 2, 2, 3)), "imagenet")
