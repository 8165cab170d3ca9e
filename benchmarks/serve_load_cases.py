"""The requests of the serving load test: good and bad inputs for each serving path.

* :func:`byte_cases`: what the SavedModel's ``serving_default`` signature receives, a batch of
  encoded files (``np.ndarray`` of ``bytes``, dtype object, shape [n]). Good: JPEG and PNG
  crops in every colour layout a camera pipeline may produce (RGB, grayscale, CMYK, RGBA,
  palette, progressive, 16-bit) and a mixed batch of all of them; bad: empty, truncated or
  non-image files, decompression bombs, an empty or oversize batch, a wrong dtype or rank.
* :func:`pixel_cases`: what the ONNX model receives, decoded pixels (float32 [n, H, W, 3], RGB
  0-255): the same good crops decoded as the SavedModel decodes them; bad: a wrong rank, size,
  channel count or dtype, NaN or Inf pixels, an empty or oversize batch.

A :class:`Case` is one distinct request; the load test sends each many times, from many threads.
Good crops are smooth random images of Market-1501's size (128x64), seeded, so every run sends
the same bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import measure  # noqa: F401  (puts the repository and tests/ on sys.path)
import numpy as np
import tensorflow as tf
from image_files import jpeg_bomb, png_bomb
from PIL import Image

from maskpre_tf.data.images import decode_image
from maskpre_tf.export.warmup import warmup_images

CROP_HEIGHT, CROP_WIDTH = 128, 64  # a Market-1501 crop, pixels


@dataclass(frozen=True)
class Case:
    """One distinct request.

    Attributes:
      name: what it is, for the report.
      payload: the request's input: object array of ``bytes`` [n] (the bytes path) or a numeric
        array (pixels, or a wrong dtype); sent as it is.
      good: True when the service must answer it (with the reference embedding), False when it
        must refuse it.
      parts: for a good batch, the names of the good single-image cases it stacks, in order
        (its reference rows must equal theirs); empty otherwise.
    """

    name: str
    payload: np.ndarray
    good: bool
    parts: tuple[str, ...] = ()


def _files(*items: bytes) -> np.ndarray:
    """A batch of encoded files: object array of ``bytes`` [n]."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    """``image`` encoded by Pillow as ``fmt`` (JPEG or PNG) with the writer ``options``."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def good_files(seed: int = 0) -> dict[str, bytes]:
    """Valid crops, one per decoder path: name → encoded file (128x64 unless named)."""
    crops = warmup_images(CROP_HEIGHT, CROP_WIDTH, 3, seed=seed)
    rgb = Image.fromarray(crops[0])
    other = Image.fromarray(crops[1])
    wide16 = crops[2].astype(np.uint16) * 257  # 16-bit RGB: Pillow cannot write it, TF can
    return {
        "jpeg": _save(rgb, "JPEG", quality=90),
        "png": _save(other, "PNG"),
        "jpeg progressive": _save(other, "JPEG", quality=85, progressive=True),
        "jpeg grayscale": _save(rgb.convert("L"), "JPEG", quality=90),
        "png grayscale": _save(other.convert("L"), "PNG"),
        "jpeg cmyk": _save(rgb.convert("CMYK"), "JPEG", quality=90),
        "png rgba": _save(other.convert("RGBA"), "PNG"),
        "png palette": _save(rgb.convert("P"), "PNG"),
        "png 16-bit rgb": tf.io.encode_png(tf.constant(wide16)).numpy(),
        "png 16-bit gray": _save(Image.fromarray(wide16[..., 0]), "PNG"),
        "jpeg 1x1": _save(Image.new("RGB", (1, 1), (90, 20, 200)), "JPEG"),
    }


def byte_cases(max_batch: int, seed: int = 0) -> list[Case]:
    """Every request of the bytes path (``serving_default``): the good ones first.

    Args:
      max_batch: the signature's largest batch (files); the oversize case sends one more.
      seed: seed of the good crops.
    """
    files = good_files(seed)
    jpeg, png = files["jpeg"], files["png"]
    cases = [Case(name, _files(data), True) for name, data in files.items()]
    cases.append(Case("mixed batch", _files(*files.values()), True, tuple(files)))
    bad = {
        "empty file": _files(b""),
        "not an image": _files(b"GIF89a, or a text file: " + b"x" * 200),
        "truncated jpeg": _files(jpeg[: len(jpeg) // 2]),
        "jpeg without end": _files(jpeg[:-2]),
        "truncated png": _files(png[: len(png) // 2]),
        "png header bomb": _files(png_bomb(30000, 30000)),
        "jpeg header bomb": _files(jpeg_bomb(40000, 20000)),
        "good + empty": _files(jpeg, png, b""),
        "empty batch": _files(),
        "oversize batch": _files(*[jpeg] * (max_batch + 1)),
        "wrong dtype": np.zeros(2, np.float32),
        "wrong rank": _files(jpeg, png).reshape(2, 1),
    }
    return cases + [Case(name, payload, False) for name, payload in bad.items()]


def pixel_cases(height: int, width: int, max_batch: int, seed: int = 0) -> list[Case]:
    """Every request of the pixel path (the ONNX model): the good ones first.

    The good crops are :func:`good_files` decoded and resized as the SavedModel does
    (:func:`maskpre_tf.data.images.decode_image`), float32 [1, height, width, 3].

    Args:
      height, width: the model's input size in pixels.
      max_batch: the largest batch the service accepts; the oversize case sends one more.
      seed: seed of the good crops.
    """
    files = good_files(seed)
    singles = {
        name: decode_image(tf.constant(data), height, width).numpy()[None]
        for name, data in files.items()
    }
    cases = [Case(name, pixels, True) for name, pixels in singles.items()]
    batch = np.concatenate(list(singles.values()))
    cases.append(Case("mixed batch", batch, True, tuple(singles)))
    nan, inf = batch[:3].copy(), batch[:2].copy()
    nan[2, height // 2, width // 2, 1] = np.nan
    inf[0, 0, 0, 0] = np.inf
    bad = {
        "one image, no batch axis": batch[0],
        "transposed size": np.ascontiguousarray(batch[:1].transpose(0, 2, 1, 3)),
        "one channel": batch[:1, :, :, :1].copy(),
        "float64": batch[:1].astype(np.float64),
        "uint8": batch[:1].astype(np.uint8),
        "nan pixel": nan,
        "inf pixel": inf,
        "empty batch": batch[:0].copy(),
        "oversize batch": np.repeat(batch[:1], max_batch + 1, axis=0),
    }
    return cases + [Case(name, payload, False) for name, payload in bad.items()]
