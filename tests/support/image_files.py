"""Small image files for the tests of maskpre_tf.data: good ones of each kind, broken ones, and
solid-colour training images whose colour encodes their index.

Not a test module: test_images.py and test_pipeline.py call :func:`write_image_files` from a
module-scoped fixture of their own; test_bad_input.py builds in-memory files (:func:`encoded`)
and decompression bombs (:func:`png_bomb`, :func:`jpeg_bomb`).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 32, 16
NUM_SOLID = 24


def _save(path: Path, array: np.ndarray, fmt: str) -> str:
    Image.fromarray(array).save(path, format=fmt)
    return str(path)


def _solid_colour(i: int) -> np.ndarray:
    """The uint8 RGB colour of solid image ``i``: channel 0 is ``10 i``."""
    return np.array([i * 10, 255 - i * 10, (i * 37) % 256], np.uint8)


def solid_index(images: np.ndarray) -> np.ndarray:
    """Recover the solid-colour file index from pixel batches (centre pixel, channel 0)."""
    centre = images[:, images.shape[1] // 2, images.shape[2] // 2, 0]
    return np.round(centre / 10).astype(int)


def write_image_files(root: Path) -> dict:
    """Write the files under ``root``; returns their paths (and the arrays of the good ones).

    Keys: ``jpeg``, ``png`` (the same random ``rgb_array``), ``gray_png`` (``gray_array``),
    ``rgba_png``; ``truncated_jpeg``, ``truncated_png``, ``empty``, ``text`` and ``missing`` (not
    written); ``solid``, the list of the ``NUM_SOLID`` solid-colour PNGs.
    """
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = {"rgb_array": rgb}
    out["jpeg"] = _save(root / "a.jpg", rgb, "JPEG")
    out["png"] = _save(root / "b.png", rgb, "PNG")
    gray = rng.integers(0, 256, (H, W), dtype=np.uint8)
    out["gray_array"] = gray
    out["gray_png"] = _save(root / "c.png", gray, "PNG")
    rgba = np.concatenate([rgb, np.full((H, W, 1), 77, np.uint8)], axis=-1)
    out["rgba_png"] = _save(root / "d.png", rgba, "PNG")
    data = Path(out["jpeg"]).read_bytes()
    out["truncated_jpeg"] = str(root / "e.jpg")
    Path(out["truncated_jpeg"]).write_bytes(data[: len(data) // 2])
    data = Path(out["png"]).read_bytes()
    out["truncated_png"] = str(root / "f.png")
    Path(out["truncated_png"]).write_bytes(data[: len(data) - 20])
    out["empty"] = str(root / "g.jpg")
    Path(out["empty"]).write_bytes(b"")
    out["text"] = str(root / "h.jpg")
    Path(out["text"]).write_text("not an image at all")
    out["missing"] = str(root / "nope.jpg")
    # Solid-colour training images: colour encodes the row index, so batches can be checked.
    out["solid"] = [
        _save(root / f"s{i:02d}.png", np.broadcast_to(_solid_colour(i), (H, W, 3)), "PNG")
        for i in range(NUM_SOLID)
    ]
    return out


def encoded(width: int, height: int, fmt: str) -> bytes:
    """The bytes of a solid-colour ``width`` x ``height`` RGB image in ``fmt`` (PNG or JPEG)."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 20, 200)).save(out, format=fmt)
    return out.getvalue()


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny valid PNG whose IHDR claims ``width`` x ``height`` (a decompression bomb).

    The IHDR chunk's width and height are patched (big-endian, bytes 16-24) and its CRC
    (bytes 29-33, over the chunk type and data, bytes 12-29) recomputed, so a decoder trusts it.
    """
    data = bytearray(encoded(2, 2, "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def jpeg_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny baseline JPEG whose SOF0 frame header claims ``width`` x ``height``.

    SOF0 is FF C0, a 2-byte length, 1 byte precision, then height and width (big-endian).
    """
    data = bytearray(encoded(8, 8, "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)
