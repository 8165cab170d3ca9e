"""Odd but real image files, written with Pillow and numpy, and what reading each must give.

Not a test module: test_odd_images.py and test_datasets_odd_files.py call :func:`write_odd_files`
(every case under one folder) and the writers below. Each case is an :class:`OddFile`: the path,
and either the RGB pixels TensorFlow's decoder must give (``expected``, compared with ``atol``)
or the reason :func:`maskpre_tf.data.images.image_file_problem` must give (``problem``) with
``tf_reads`` telling whether TensorFlow decodes it at all (then wrongly) or refuses it.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 16, 12


@dataclass(frozen=True)
class OddFile:
    """One written case: its path and what reading it must give."""

    path: str
    expected: np.ndarray | None = None  # uint8 [H, W, 3] RGB when readable
    atol: float = 0.0  # per-pixel tolerance against ``expected`` (lossy formats)
    problem: str | None = None  # the start of image_file_problem's reason when refused
    tf_reads: bool = False  # refused, yet tf.io.decode_image returns (wrong) pixels


def noise(seed: int = 0, channels: int = 3) -> np.ndarray:
    """uint8 [H, W, channels] random pixels (exact formats)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (H, W, channels), dtype=np.uint8)


def smooth() -> np.ndarray:
    """uint8 [H, W, 3] gradients that JPEG keeps within a few grey levels."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([y * 12, x * 16, 200 - y * 6 - x * 4], -1).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    """The bytes of ``image`` saved by Pillow as ``fmt``."""
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def pillow_rgb(data: bytes) -> np.ndarray:
    """uint8 [h, w, 3]: Pillow's RGB reading of encoded ``data`` (first frame)."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def png16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG of uint16 [h, w, c] (c = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA).

    Written by hand: Pillow writes 16-bit grayscale only. Rows are filter type 0 (none), samples
    big-endian; each chunk is length, type, data, CRC-32 of type + data.
    """
    height, width, channels = pixels.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def bmp_bitfields(rgba: np.ndarray, masks: tuple[int, int, int]) -> bytes:
    """A 32-bit BI_BITFIELDS BMP of uint8 [h, w, 4]: Pillow's 32-bit BMP with compression 3 and
    the red, green, blue ``masks`` inserted after the 40-byte info header (pixels stay B, G, R,
    A)."""
    data = bytearray(encode(Image.fromarray(rgba), "BMP"))
    data[30:34] = struct.pack("<I", 3)
    data[54:54] = struct.pack("<III", *masks)
    data[10:14] = struct.pack("<I", 66)
    data[2:6] = struct.pack("<I", len(data))
    return bytes(data)


def cmyk_jpeg() -> tuple[bytes, np.ndarray]:
    """An Adobe CMYK JPEG and its RGB: K 128 everywhere, C 200 in the top half.

    RGB = (255 - C)(255 - K) / 255 per channel: the top half (27, 127, 127), the rest grey 127.
    """
    cmyk = np.zeros((H, W, 4), np.uint8)
    cmyk[..., 3] = 128
    cmyk[: H // 2, :, 0] = 200
    data = encode(Image.frombytes("CMYK", (W, H), cmyk.tobytes()), "JPEG", quality=100)
    rgb = np.full((H, W, 3), 127, np.uint8)
    rgb[: H // 2, :, 0] = 27
    return data, rgb


def _readable(root: Path, name: str, data: bytes, expected: np.ndarray, atol=0.0) -> OddFile:
    (root / name).write_bytes(data)
    return OddFile(str(root / name), expected=expected, atol=atol)


def _grey3(grey: np.ndarray) -> np.ndarray:
    """uint8 [h, w] → [h, w, 3] with three equal channels."""
    return np.repeat(grey[..., None], 3, axis=-1)


def _readable_cases(root: Path) -> dict[str, OddFile]:
    """Files TensorFlow decodes right, with the pixels it must give."""
    rgb, grey = noise(0), noise(1, 1)[..., 0]
    rgba = np.concatenate([rgb, np.full((H, W, 1), 90, np.uint8)], -1)
    palette = Image.fromarray(rgb).quantize(16)
    palette.info["transparency"] = 0
    deep = np.random.default_rng(2).integers(0, 65536, (H, W, 3), dtype=np.uint16)
    top_down = bytearray(encode(Image.fromarray(rgb), "BMP"))
    top_down[22:26] = struct.pack("<i", -H)
    cmyk, cmyk_rgb = cmyk_jpeg()
    exif = Image.Exif()
    exif[0x0112] = 1  # orientation: upright
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    gif_transparent = encode(palette, "GIF")
    indices = np.asarray(Image.open(io.BytesIO(gif_transparent)))
    out = {}
    for name, data, expected, atol in [
        # JPEG: TensorFlow's and Pillow's decoders (IDCT, upsampling) differ by a few levels
        ("grey.jpg", encode(Image.fromarray(smooth()[..., 0]), "JPEG", quality=95), None, 8),
        ("grey.png", encode(Image.fromarray(grey), "PNG"), _grey3(grey), 0),
        ("grey_alpha.png", encode(Image.fromarray(rgba[..., 2:]), "PNG"), _grey3(rgba[..., 2]), 0),
        ("cmyk.jpg", cmyk, cmyk_rgb, 1),
        ("rgb16.png", png16(deep), (deep >> 8).astype(np.uint8), 0),
        ("grey16.png", png16(deep[..., :1]), _grey3((deep[..., 0] >> 8).astype(np.uint8)), 0),
        ("palette.png", encode(palette, "PNG"), None, 0),
        ("progressive.jpg", encode(Image.fromarray(smooth()), "JPEG", progressive=True), None, 8),
        ("still.gif", encode(Image.fromarray(rgb).quantize(256), "GIF"), None, 0),
        (
            "animated.gif",
            encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
            None,
            0,
        ),
        (
            "transparent.gif",
            gif_transparent,
            np.where(indices[..., None] == 0, 0, pillow_rgb(gif_transparent)),
            0,
        ),
        ("rgb24.bmp", encode(Image.fromarray(rgb), "BMP"), rgb, 0),
        ("rgb32.bmp", encode(Image.fromarray(rgba), "BMP"), rgb, 0),
        ("bitfields.bmp", bmp_bitfields(rgba, (0xFF0000, 0xFF00, 0xFF)), rgb, 0),
        ("grey8.bmp", encode(Image.fromarray(grey), "BMP"), _grey3(grey), 0),
        ("top_down.bmp", bytes(top_down), rgb[::-1], 0),
        ("lossy.webp", encode(Image.fromarray(smooth()), "WEBP", quality=90), None, 2),
        ("lossless.webp", encode(Image.fromarray(rgb), "WEBP", lossless=True), rgb, 0),
        ("exif.webp", encode(frames[0], "WEBP", lossless=True, exif=exif.tobytes()), rgb, 0),
        ("one_pixel.png", encode(Image.fromarray(rgb[:1, :1]), "PNG"), rgb[:1, :1], 0),
    ]:
        expected = pillow_rgb(data) if expected is None else expected
        out[name] = _readable(root, name, data, expected, atol)
    return out


def _refused_cases(root: Path) -> dict[str, OddFile]:
    """Files TensorFlow decodes wrong or not at all, with the reason they are refused."""
    rgb = noise(3)
    rgba = np.concatenate([rgb, np.full((H, W, 1), 90, np.uint8)], -1)
    colour_palette = Image.fromarray(rgb).quantize(64)
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    big = Image.fromarray(np.random.default_rng(4).integers(0, 256, (64, 48, 3), np.uint8))
    palette_rgb = np.asarray(colour_palette.convert("RGB"))
    out = {}
    # (name, bytes, reason, the right pixels when TensorFlow decodes the file wrong, else None)
    for name, data, problem, correct in [
        (
            "palette8.bmp",
            encode(colour_palette, "BMP"),
            "unsupported BMP (8-bit with a colour",
            palette_rgb,
        ),
        (
            "mono.bmp",
            encode(Image.fromarray(rgb[..., 0]).convert("1"), "BMP"),
            "unsupported BMP (1-bit",
            None,
        ),
        (
            "rgba_masks.bmp",
            bmp_bitfields(rgba, (0xFF, 0xFF00, 0xFF0000)),
            "unsupported BMP (32-bit with other",
            rgb[..., ::-1],  # what the masks say: red in the byte that holds blue
        ),
        (
            "alpha.webp",
            encode(Image.fromarray(rgba), "WEBP", lossless=True),
            "unsupported WebP (with alpha",
            None,
        ),
        (
            "alpha_lossy.webp",
            encode(Image.fromarray(rgba), "WEBP", quality=80),
            "unsupported WebP (with alpha",
            None,
        ),
        (
            "animated.webp",
            encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
            "unsupported WebP (animated",
            None,
        ),
        ("cut.gif", encode(big, "GIF")[:1500], "truncated GIF", None),
        ("cut.bmp", encode(big, "BMP")[:-1], "truncated BMP", None),
        ("cut.webp", encode(big, "WEBP", lossless=True)[:-100], "truncated WebP", None),
        ("photo.tif", encode(Image.fromarray(rgb), "TIFF"), "not a JPEG or PNG file", None),
    ]:
        (root / name).write_bytes(data)
        out[name] = OddFile(str(root / name), correct, 0.0, problem, correct is not None)
    return out


def write_odd_files(root: Path) -> dict[str, OddFile]:
    """Write every case under ``root`` (created if needed); keyed by file name."""
    root.mkdir(parents=True, exist_ok=True)
    return {**_readable_cases(root), **_refused_cases(root)}
