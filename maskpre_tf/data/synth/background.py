"""Camera backgrounds: a street-like panorama (facades, pavement, clutter) per camera."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# Background tuning: texture contrast, colour spread of clutter (8-bit units), clutter items per
# 100 px of panorama width (range). More varied clutter makes same-camera crops less alike.
_TEXTURE = 0.4
_CLUTTER_TINT = 20.0
_CLUTTER = (3, 8)
#: Brightness range (8-bit) of facade segments and of clutter items.
_FACADE = (85.0, 175.0)
_CLUTTER_LEVEL = (60.0, 180.0)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth random field in [0, 1], shape (h, w) float32: bilinear upsampling of a coarse grid."""
    gh, gw = h // cell + 2, w // cell + 2
    grid = rng.random((gh, gw)).astype(np.float32)
    ys = np.linspace(0, gh - 1.001, h, dtype=np.float32)
    xs = np.linspace(0, gw - 1.001, w, dtype=np.float32)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _street(
    rng: np.random.Generator, h: int, w: int, horizon: int, floor: float, tint: np.ndarray
) -> np.ndarray:
    """Facades above row ``horizon``, paving below, textured and tinted; float32 (h, w, 3).

    ``floor`` is the mean paving level (8-bit units), ``tint`` the per-channel gain, shape (3,).
    """
    img = np.empty((h, w, 3), np.float32)
    x = 0
    while x < w:  # facades of different buildings along the street
        seg = int(rng.uniform(30, 120))
        img[:horizon, x : x + seg] = rng.uniform(*_FACADE) + rng.uniform(-12, 12, 3)
        x += seg
    x = 0
    while x < w:  # paving slabs and patches
        seg = int(rng.uniform(60, 200))
        img[horizon:, x : x + seg] = floor + rng.uniform(-35, 35) + rng.uniform(-10, 10, 3)
        x += seg
    # pavement gets darker towards the camera; everything gets a soft texture and the tint
    img[horizon:] *= np.linspace(1.0, 0.8, h - horizon, dtype=np.float32)[:, None, None]
    tex = _smooth_noise(rng, h, w, int(rng.integers(6, 20)))
    img *= (1.0 - _TEXTURE / 2 + _TEXTURE * tex)[:, :, None] * tint.astype(np.float32)
    return img


def _street_furniture(rng: np.random.Generator, pil: Image.Image, horizon: int) -> None:
    """Draw windows, shop signs and doors, poles and a kerb onto the panorama ``pil``."""
    w = pil.width
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(*_CLUTTER) * w / 100)):  # windows, shop signs, doors
        x0 = rng.uniform(-10, w)
        y0 = rng.uniform(0, horizon * 0.9)
        bw, bh = rng.uniform(10, 50), rng.uniform(10, 60)
        fill = tuple(
            int(v) for v in rng.uniform(*_CLUTTER_LEVEL) + rng.uniform(-1, 1, 3) * _CLUTTER_TINT
        )
        draw.rectangle((x0, y0, x0 + bw, min(y0 + bh, horizon)), fill=fill)
    for _ in range(int(rng.integers(0, 4))):  # poles and pillars
        x0 = rng.uniform(0, w)
        fill = tuple(int(v) for v in rng.uniform(30, 200, 3))
        draw.rectangle((x0, 0, x0 + rng.uniform(3, 14), horizon + rng.uniform(0, 20)), fill=fill)
    kerb = tuple(int(v) for v in rng.uniform(80, 220) + rng.uniform(-15, 15, 3))
    y = horizon + rng.uniform(10, 40)
    draw.rectangle((0, y, w, y + rng.uniform(2, 6)), fill=kerb)


def street_panorama(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A street-like panorama (facades, pavement, clutter), RGB uint8 of shape (h, w, 3).

    Colours are muted (a grey level plus a modest tint). Facades and paving change along the
    panorama, so crops taken at different positions have different backgrounds; the camera's own
    character is a shared tint, the pavement tone and the street furniture.
    """
    tint = 1.0 + rng.normal(0.0, 0.03, 3)
    floor = rng.uniform(100, 130)
    horizon = int(h * rng.uniform(0.55, 0.8))
    img = _street(rng, h, w, horizon, floor, tint)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    _street_furniture(rng, pil, horizon)
    return np.asarray(pil)
