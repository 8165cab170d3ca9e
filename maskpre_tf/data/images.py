"""Image files: decoding to RGB pixels and a cheap validity check, shared by every reader.

Training, evaluation, gallery search and the exported serving signature all decode images with
:func:`decode_image`, so a model sees the same pixels everywhere; the encoder normalises them
itself (:mod:`maskpre_tf.models.normalization`).

* :func:`decode_image` — encoded JPEG/PNG bytes → float32 [H, W, 3] RGB in 0–255 (the training
  and evaluation readers also feed it the GIF, BMP and WebP variants it reads right, see
  :mod:`maskpre_tf.data.image_formats`; the serving graph takes JPEG and PNG only).
* :func:`load_image` — the same from a file path.
* :func:`resize_image` — the resize of :func:`decode_image`, for pixels already decoded.
* :func:`encoded_image_size` / :func:`image_size_checks` — a JPEG's or PNG's size from its
  header, and the checks that refuse (before decoding) an image larger than
  :data:`MAX_IMAGE_PIXELS`: the serving graph's guard against decompression bombs.
* :func:`image_file_problem` / :func:`validate_images` — header/trailer checks that find
  unreadable or unsupported files up front without decoding them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import tensorflow as tf

from maskpre_tf.data.image_formats import HEAD_BYTES, JPEG_MAGIC, UNKNOWN, format_problem

# How many trailing bytes are searched for the end marker: tolerates padding or metadata that
# some writers append after the JPEG EOI marker / the PNG IEND chunk.
_TRAILER_BYTES = 1024
_PNG_IHDR = b"IHDR"

#: The largest image (height x width, read from the file's header) the serving graph decodes:
#: 50 megapixels, above any camera's photo yet ~1500x a 256x128 model input. Decoding needs
#: 3 bytes a pixel and resizing 12 more (float32), so this bounds one image's memory to
#: ~750 MB; a file whose header claims more (a decompression bomb: a few bytes declaring
#: e.g. 30000x30000) is refused before any pixel is decoded. Crop or downscale such images.
MAX_IMAGE_PIXELS = 50_000_000


def decode_image(image_bytes: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Decode an encoded JPEG, PNG, GIF, BMP or WebP image and resize it bilinearly.

    Grayscale (+ alpha), palette, CMYK and RGBA images are converted to RGB (alpha dropped);
    16-bit PNGs keep their high byte (x >> 8); a GIF gives its first frame. Which variants decode
    right: :mod:`maskpre_tf.data.image_formats`. Any size from 1×1 up is resized to the output.
    Resizing is bilinear with antialiasing, which matches PIL's bilinear resize when shrinking
    and is plain bilinear interpolation when enlarging (e.g. Market-1501's 128×64 → 256×128).
    Graph-safe (usable inside tf.data, tf.function and a SavedModel signature).

    Args:
      image_bytes: scalar tf.string tensor holding the encoded file.
      height: output height in pixels.
      width: output width in pixels.

    Returns:
      float32 tensor [height, width, 3], RGB, values in 0–255.
    """
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    image = resize_image(image, height, width)
    image.set_shape((height, width, 3))
    return image


def resize_image(image: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """RGB pixels resized to the model's input as :func:`decode_image` resizes them.

    Bilinear with antialiasing, then clipped to 0–255. The one resize of every reader, the
    serving graph and :meth:`maskpre_tf.embedder.Embedder.embed_arrays` included.

    Args:
      image: RGB pixels [h, w, 3] or [b, h, w, 3] in 0–255, any real dtype (e.g. uint8).
      height, width: output size in pixels.

    Returns:
      float32 [height, width, 3] (or [b, height, width, 3]), values in 0–255.
    """
    image = tf.image.resize(
        tf.cast(image, tf.float32), (height, width), method="bilinear", antialias=True
    )
    return tf.clip_by_value(image, 0.0, 255.0)


def encoded_image_size(image_bytes: tf.Tensor) -> tf.Tensor:
    """(height, width) int64 [2] of an encoded JPEG or PNG image, from its header only.

    JPEG: :func:`tf.image.extract_jpeg_shape` (reads the frame header, decodes no pixel; an
    invalid header raises ``InvalidArgumentError``). PNG: the IHDR chunk's width and height,
    big-endian uint32 at bytes 16-24. A PNG too short to hold IHDR gives (0, 0). Graph-safe.

    Args:
      image_bytes: scalar tf.string that starts with the JPEG or PNG signature.
    """
    is_jpeg = tf.equal(tf.strings.substr(image_bytes, 0, len(JPEG_MAGIC)), JPEG_MAGIC)

    def jpeg_size() -> tf.Tensor:
        return tf.cast(tf.image.extract_jpeg_shape(image_bytes)[:2], tf.int64)

    def png_size() -> tf.Tensor:
        padded = tf.strings.join([image_bytes, b"\0" * 24])  # a short file reads as 0 x 0
        has_ihdr = tf.equal(tf.strings.substr(padded, 12, 4), _PNG_IHDR)
        digits = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, 16, 8), tf.uint8), tf.int64)
        weights = tf.constant([1 << 24, 1 << 16, 1 << 8, 1], tf.int64)
        width = tf.reduce_sum(digits[:4] * weights)
        height = tf.reduce_sum(digits[4:] * weights)
        return tf.where(has_ihdr, tf.stack([height, width]), tf.zeros([2], tf.int64))

    return tf.cond(is_jpeg, jpeg_size, png_size)


def image_size_checks(
    image_bytes: tf.Tensor, what: str, max_pixels: int = MAX_IMAGE_PIXELS
) -> list[tf.Operation]:
    """Assertions that every image of a batch declares 1 to ``max_pixels`` pixels.

    Reads only the headers (:func:`encoded_image_size`), so run these before decoding: a
    failing one raises ``tf.errors.InvalidArgumentError`` naming the refused elements and their
    declared sizes, and nothing is decoded.

    Args:
      image_bytes: tf.string [B] of encoded files that start with the JPEG or PNG signature.
      what: who checks, for the message (e.g. the signature name).
      max_pixels: the largest height x width accepted.
    """
    sizes = tf.map_fn(
        encoded_image_size, image_bytes, fn_output_signature=tf.TensorSpec([2], tf.int64)
    )
    pixels = sizes[:, 0] * sizes[:, 1]
    too_big = tf.reshape(tf.where(pixels > max_pixels), [-1])
    no_size = tf.reshape(tf.where(pixels < 1), [-1])
    return [
        tf.debugging.Assert(
            tf.equal(tf.size(too_big), 0),
            [
                f"{what}: refused element(s)",
                too_big,
                f"before decoding: the header declares more than {max_pixels} pixels "
                f"({max_pixels / 1e6:g} megapixels: a decompression bomb or an uncropped photo); "
                "declared height x width:",
                tf.gather(sizes, too_big),
                f"crop or downscale the image to at most {max_pixels} pixels",
            ],
            summarize=16,
        ),
        tf.debugging.Assert(
            tf.equal(tf.size(no_size), 0),
            [
                f"{what}: element(s)",
                no_size,
                "declare an empty image (0 pixels, or a PNG without its IHDR header); send "
                "complete JPEG or PNG files",
            ],
            summarize=16,
        ),
    ]


def load_image(path: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Read and decode one image file: :func:`decode_image` of the file's bytes.

    Args:
      path: scalar tf.string tensor, the file's path.
      height: output height in pixels.
      width: output width in pixels.

    Returns:
      float32 [height, width, 3] RGB in 0–255.
    """
    return decode_image(tf.io.read_file(path), height, width)


def image_file_problem(path: str) -> str | None:
    """Why an image file cannot be used, from its name, header and trailer only (no decoding).

    Checks: the name is valid UTF-8 (TensorFlow takes paths as UTF-8 strings); the file exists
    and is not empty; it is a JPEG, PNG, GIF, BMP or WebP file of a variant ``decode_image``
    reads right, with its end marker or declared length present (a truncated download or copy
    loses them); see :func:`maskpre_tf.data.image_formats.format_problem`.

    Args:
      path: file path.

    Returns:
      None for a usable file, else a short reason ("missing", "empty", "not a JPEG or PNG file",
      "truncated JPEG (no end marker)", "truncated PNG (no IEND chunk)", "unsupported WebP (with
      alpha); save it as PNG", ...).
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8 (TensorFlow cannot open it); rename the file"
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
            if not head:
                return "empty"
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _TRAILER_BYTES))
            tail = handle.read()
    except FileNotFoundError:
        return "missing"
    except IsADirectoryError:
        return UNKNOWN
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    return format_problem(head, size, tail)


def validate_images(paths: Sequence[str]) -> list[str]:
    """The paths that are missing, empty, unsupported or truncated (see image_file_problem).

    Reads at most 2 KiB + 1 KiB per file, so checking a Market-1501-sized set (13k files) is
    far faster than decoding it.

    Args:
      paths: image file paths.

    Returns:
      The bad paths, in input order (empty when all are usable).
    """
    return [path for path in paths if image_file_problem(path) is not None]
