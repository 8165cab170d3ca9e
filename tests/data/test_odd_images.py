"""Odd but real image files: each is decoded to the right RGB pixels or refused up front.

The cases (tests/odd_image_files.py): grayscale (+ alpha), CMYK, 16-bit, palette, GIF, BMP and
WebP variants, truncated files, 1×1 crops, file names with spaces and non-ASCII characters. The
validator (:func:`image_file_problem`) must accept exactly the files TensorFlow's decoder reads
right, so nothing it accepts can fail later, in the middle of an epoch.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from odd_image_files import H, W, encode, noise, png16, write_odd_files  # noqa: E402
from PIL import Image  # noqa: E402

from maskpre_tf.data.decoded import decode_images  # noqa: E402
from maskpre_tf.data.images import (  # noqa: E402
    decode_image,
    image_file_problem,
    load_image,
    validate_images,
)
from maskpre_tf.data.pipeline import make_eval_dataset  # noqa: E402


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    """Every odd case, written once."""
    return write_odd_files(tmp_path_factory.mktemp("odd"))


def _decode_native(path: str) -> np.ndarray:
    """uint8 [h, w, 3]: TensorFlow's decoding of ``path`` at its own size (no resizing)."""
    data = tf.io.read_file(path)
    return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()


def _readable(odd):
    return {name: case for name, case in odd.items() if case.problem is None}


def _refused(odd):
    return {name: case for name, case in odd.items() if case.problem is not None}


def test_readable_files_pass_the_check_and_decode_to_the_right_pixels(odd):
    for name, case in _readable(odd).items():
        assert image_file_problem(case.path) is None, name
        decoded = _decode_native(case.path)
        assert decoded.shape == case.expected.shape, name
        diff = np.abs(decoded.astype(int) - case.expected.astype(int)).max()
        assert diff <= case.atol, f"{name}: off by {diff}"
        height, width = case.expected.shape[:2]
        same_size = decode_image(tf.io.read_file(case.path), height, width).numpy()
        np.testing.assert_allclose(same_size, decoded.astype(np.float32), atol=1e-3)


def test_grey_files_decode_to_three_equal_channels(odd):
    for name in ("grey.jpg", "grey.png", "grey_alpha.png", "grey16.png", "grey8.bmp"):
        pixels = _decode_native(odd[name].path)
        assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_sixteen_bit_png_keeps_the_high_byte():
    values = np.array([[0, 255, 256, 32767, 32768, 65279, 65280, 65535]], np.uint16)
    decoded = tf.io.decode_image(png16(values[..., None]), channels=3).numpy()[0, :, 0]
    assert decoded.tolist() == [0, 0, 1, 127, 128, 254, 255, 255]
    # within one grey level of the exact x * 255 / 65535
    assert np.abs(decoded - values[0] * 255.0 / 65535).max() < 1


def test_cmyk_jpeg_gives_pillows_rgb(odd):
    """(255 - C)(255 - K) / 255: C 200, K 128 → red 27; C 0, K 128 → grey 127."""
    pixels = _decode_native(odd["cmyk.jpg"].path)
    assert pixels[0, 0].tolist() == [27, 127, 127] and pixels[-1, -1].tolist() == [127] * 3


def test_refused_files_are_named_with_their_reason(odd):
    for name, case in _refused(odd).items():
        problem = image_file_problem(case.path)
        assert problem is not None and problem.startswith(case.problem), (name, problem)
    mixed = [case.path for case in odd.values()]
    assert validate_images(mixed) == [case.path for case in _refused(odd).values()]


def test_refused_files_are_those_tensorflow_reads_wrong_or_not_at_all(odd):
    """The check's rules hold for this TensorFlow: each refused file fails or decodes wrong."""
    for name, case in _refused(odd).items():
        if not case.tf_reads:
            with pytest.raises(tf.errors.InvalidArgumentError):
                _decode_native(case.path)
            continue
        decoded = _decode_native(case.path)
        assert decoded.shape == case.expected.shape, name
        assert np.abs(decoded.astype(int) - case.expected).max() > 100, name


def test_every_accepted_file_goes_through_the_evaluation_pipeline_and_the_cache(odd):
    paths = [case.path for case in _readable(odd).values()]
    assert validate_images(paths) == []
    batches = list(make_eval_dataset(paths, 32, 16, batch_size=7))
    assert sum(len(b) for b in batches) == len(paths)
    cached = decode_images(paths, 32, 16, batch_size=7)
    assert cached.shape == (len(paths), 32, 16, 3)


def test_a_one_pixel_crop_is_resized_to_a_uniform_input(odd):
    colour = noise(0)[0, 0].astype(np.float32)
    image = load_image(tf.constant(odd["one_pixel.png"].path), 64, 32).numpy()
    assert image.shape == (64, 32, 3)
    np.testing.assert_allclose(image, np.broadcast_to(colour, image.shape), atol=1e-3)
    row = encode(Image.fromarray(noise(5)[:1]), "PNG")  # a 1-pixel-high strip
    strip = decode_image(tf.constant(row), 64, 32).numpy()
    assert strip.shape == (64, 32, 3) and np.isfinite(strip).all()
    assert np.allclose(strip[0], strip[-1])  # every row the same: it comes from one row


def test_names_with_spaces_and_non_ascii_characters_are_read(tmp_path):
    pixels = noise(6)
    names = ["0001_c1s1_000001_00 copy.jpg", "0002_c2_é.png", "0003_c3_人.png"]
    for name in names:
        Image.fromarray(pixels).save(tmp_path / name, quality=100)
    paths = [str(tmp_path / name) for name in names]
    assert validate_images(paths) == []
    for path in paths[1:]:
        decoded = load_image(tf.constant(path), H, W).numpy()
        np.testing.assert_allclose(decoded, pixels.astype(np.float32), atol=1e-3)


def test_a_name_that_is_not_utf8_is_refused_not_crashed_on(tmp_path):
    """Latin-1 bytes (e.g. from an old zip) come back from os.listdir as surrogates, which
    TensorFlow cannot take as a path string."""
    name = os.fsdecode(b"0002_c2_\xe9.jpg")
    Image.fromarray(noise(7)).save(os.path.join(str(tmp_path), name), format="JPEG")
    (path,) = (os.path.join(str(tmp_path), n) for n in os.listdir(tmp_path))
    assert image_file_problem(path).startswith("file name is not valid UTF-8")
    assert validate_images([path]) == [path]
