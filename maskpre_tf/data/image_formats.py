"""Which image files TensorFlow's ``tf.io.decode_image`` reads right, judged from their bytes.

``tf.io.decode_image`` (TensorFlow 2.21) reads JPEG, PNG, GIF, BMP and WebP, but not every
variant, and some it reads wrong without an error. Measured against Pillow's reading of the same
files (``tests/data/test_odd_images.py``):

* JPEG — grayscale and CMYK (Adobe) files decode to the same RGB as Pillow's; progressive too.
* PNG — grayscale, grayscale + alpha, palette (with or without tRNS), 1-bit and 16-bit ones
  all decode right; 16 bits become 8 by keeping the high byte (``x >> 8``).
* GIF — the first frame; pixels of the transparent colour read as black (Pillow: the colour
  stored under them).
* BMP — 24-bit, 32-bit (BI_RGB, or BI_BITFIELDS with the usual B, G, R masks) and 8-bit with a
  grey palette are right. An 8-bit file with a colour palette decodes wrong (palette indices read
  as grey levels), a 32-bit one with other masks in the wrong channel order, and 1-bit files
  fail. 4- and 16-bit, run-length-encoded and OS/2 files are refused too, unmeasured (Pillow
  does not write them).
* WebP — lossy and lossless files without alpha are right; files with alpha and animations
  fail (``decode_image`` with 3 channels refuses them).

:func:`format_problem` turns these findings into a reason to skip a file, from its first
:data:`HEAD_BYTES` and last bytes only.
"""

from __future__ import annotations

import struct

#: Bytes read from the start of a file: enough for a BMP's headers and 256-colour palette.
HEAD_BYTES = 2048

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_END = b"\xff\xd9"
_PNG_END = b"IEND"
_GIF_MAGICS = (b"GIF87a", b"GIF89a")
_GIF_END = b";"

_BMP_RGB, _BMP_BITFIELDS, _BMP_ALPHABITFIELDS = 0, 3, 6
_BMP_BGR_MASKS = (0x00FF0000, 0x0000FF00, 0x000000FF)  # red, green, blue
_WEBP_ALPHA_FLAG, _WEBP_ANIMATION_FLAG = 0x10, 0x02
_VP8L_ALPHA_BIT = 0x10  # bit 28 of the VP8L header word: byte 24, bit 4

UNKNOWN = "not a JPEG or PNG file"


def format_problem(head: bytes, size: int, tail: bytes) -> str | None:
    """Why ``decode_image`` cannot read a file right, from its start and end (no decoding).

    Args:
      head: the file's first bytes (up to :data:`HEAD_BYTES`).
      size: the file's size in bytes.
      tail: the file's last bytes (up to 1 KiB).

    Returns:
      None for a file decoded right, else a short reason: ``UNKNOWN`` (no JPEG, PNG, GIF, BMP
      or WebP signature), "truncated ..." (the end marker or declared length is missing), or
      "unsupported ..." (a variant read wrong or not at all; the reason says what to do).
    """
    if head.startswith(JPEG_MAGIC):
        return None if _JPEG_END in tail else "truncated JPEG (no end marker)"
    if head.startswith(PNG_MAGIC):
        return None if _PNG_END in tail else "truncated PNG (no IEND chunk)"
    if head.startswith(_GIF_MAGICS):
        return None if tail.rstrip(b"\0").endswith(_GIF_END) else "truncated GIF (no trailer)"
    if head.startswith(b"BM"):
        return bmp_problem(head, size)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return webp_problem(head, size)
    return UNKNOWN


def bmp_problem(head: bytes, size: int) -> str | None:
    """Why a BMP file (``head`` starts with "BM") is decoded wrong or not at all, or None.

    Layout: the 14-byte file header (pixel data offset: uint32 at byte 10), then the info header
    (its size: uint32 at 14; width, height: int32 at 18, 22; bits per pixel: uint16 at 28;
    compression: uint32 at 30; palette entries: uint32 at 46), the colour masks at 54-66, the
    palette (4 bytes an entry, B, G, R, 0) right after the info header. All little-endian.
    """
    if len(head) < 54:
        return "truncated BMP (header cut short)"
    (offset,) = struct.unpack_from("<I", head, 10)
    info_size, width, height, _, bits, compression = struct.unpack_from("<IiiHHI", head, 14)
    problem = _bmp_variant_problem(head, info_size, width, height, bits, compression)
    if problem is not None:
        return problem
    row_bytes = (bits * width + 31) // 32 * 4
    if size < offset + row_bytes * abs(height):
        return "truncated BMP (fewer pixel bytes than the header declares)"
    return None


def _bmp_variant_problem(
    head: bytes, info_size: int, width: int, height: int, bits: int, compression: int
) -> str | None:
    """Why ``decode_image`` reads this BMP variant wrong or not at all, or None (see
    :func:`bmp_problem` for the fields)."""
    if info_size < 40 or width <= 0 or height == 0:
        return "unsupported BMP (OS/2 header or no pixels); save it as PNG"
    if bits in (24, 32) and compression == _BMP_RGB:
        return None
    if bits == 32 and compression in (_BMP_BITFIELDS, _BMP_ALPHABITFIELDS):
        if len(head) >= 66 and struct.unpack_from("<III", head, 54) == _BMP_BGR_MASKS:
            return None
        return "unsupported BMP (32-bit with other colour masks); save it as PNG"
    if bits == 8 and compression == _BMP_RGB:
        (colours,) = struct.unpack_from("<I", head, 46)
        if _grey_palette(head, 14 + info_size, colours or 256):
            return None
        return "unsupported BMP (8-bit with a colour palette); save it as PNG"
    return f"unsupported BMP ({bits}-bit, compression {compression}); save it as PNG"


def _grey_palette(head: bytes, start: int, entries: int) -> bool:
    """Whether the BMP palette at ``head[start:]`` maps every index i to grey (i, i, i)."""
    palette = head[start : start + 4 * entries]
    if entries > 256 or len(palette) < 4 * entries:
        return False
    return all(palette[4 * i : 4 * i + 3] == bytes((i, i, i)) for i in range(entries))


def webp_problem(head: bytes, size: int) -> str | None:
    """Why a WebP file (RIFF container, form type "WEBP") is not decoded, or None.

    Layout: "RIFF", the container's length after byte 8 (uint32 LE at 4), "WEBP", then the
    first chunk's type at 12: "VP8 " (lossy, never alpha), "VP8L" (lossless; the alpha bit is
    bit 4 of byte 24) or "VP8X" (extended; flags at byte 20: 0x10 alpha, 0x02 animation).
    """
    if len(head) < 25:
        return "truncated WebP (header cut short)"
    (riff_size,) = struct.unpack_from("<I", head, 4)
    if size < 8 + riff_size:
        return "truncated WebP (shorter than its RIFF header declares)"
    chunk, flags = head[12:16], head[20]
    if chunk not in (b"VP8 ", b"VP8L", b"VP8X"):
        return "unsupported WebP (unknown first chunk); save it as PNG"
    if chunk == b"VP8X" and flags & _WEBP_ANIMATION_FLAG:
        return "unsupported WebP (animated); save one frame as PNG"
    alpha = head[24] & _VP8L_ALPHA_BIT if chunk == b"VP8L" else flags & _WEBP_ALPHA_FLAG
    if chunk != b"VP8 " and alpha:
        return "unsupported WebP (with alpha); save it as PNG"
    return None
