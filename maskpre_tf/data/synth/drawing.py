"""Drawing primitives and body parts: limbs, the patterned torso, the chest print, head, bags.

Every function draws onto an RGBA :mod:`PIL` image at supersampled resolution; coordinates and
sizes are in pixels of that image (rows grow downwards). Fills are RGBA tuples of ints.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from maskpre_tf.data.synth.appearance import RGB, Identity

RGBA = tuple[int, int, int, int]
Point = tuple[float, float]


def shade(c: RGB, f: float) -> RGBA:
    """RGBA fill of colour ``c`` scaled by ``f`` (for limbs further from the camera)."""
    return (min(255, int(c[0] * f)), min(255, int(c[1] * f)), min(255, int(c[2] * f)), 255)


def limb(draw: ImageDraw.ImageDraw, p0: Point, p1: Point, w0: float, w1: float, fill: RGBA) -> None:
    """Draw a tapered limb from ``p0`` (width ``w0``) to ``p1`` (width ``w1``), pixels."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    n = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / n, dx / n
    draw.polygon(
        [
            (p0[0] + nx * w0 / 2, p0[1] + ny * w0 / 2),
            (p1[0] + nx * w1 / 2, p1[1] + ny * w1 / 2),
            (p1[0] - nx * w1 / 2, p1[1] - ny * w1 / 2),
            (p0[0] - nx * w0 / 2, p0[1] - ny * w0 / 2),
        ],
        fill=fill,
    )
    draw.ellipse((p1[0] - w1 / 2, p1[1] - w1 / 2, p1[0] + w1 / 2, p1[1] + w1 / 2), fill=fill)


def pattern_mask(
    pattern: str, view: str, yy: np.ndarray, xx: np.ndarray, period: float, body_h: float
) -> np.ndarray:
    """Where a clothing pattern shows the secondary colour: bool array (h, w).

    Args:
      pattern: one of ``PATTERNS``; "plain" and "logo" give no secondary area here.
      view: "front", "back" or "left".
      yy: row offsets from the shoulders, float32 (h, 1), pixels.
      xx: column offsets from the body centre, float32 (1, w), pixels.
      period: stripe/check period, pixels.
      body_h: body height, pixels (sets the width of the shirt under an open jacket).
    """
    h, w = yy.shape[0], xx.shape[1]
    if pattern == "hstripes":
        return (np.floor(yy / period) % 2 == 1) & np.ones((1, w), bool)
    if pattern == "vstripes" and view in ("front", "back"):
        return (np.floor(xx / (0.8 * period)) % 2 == 1) & np.ones((h, 1), bool)
    if pattern == "vstripes":  # seen from the side the vertical stripes are narrower
        return (np.floor(xx / (0.5 * period)) % 2 == 1) & np.ones((h, 1), bool)
    if pattern == "checks":
        return (np.floor(yy / period) + np.floor(xx / period)) % 2 == 1
    if pattern == "jacket" and view == "front":  # open jacket shows the shirt underneath
        return (np.abs(xx) < 0.045 * body_h) & np.ones((h, 1), bool)
    if pattern == "jacket" and view in ("left", "right"):  # shirt edge visible at the front
        return (xx < -0.035 * body_h) & np.ones((h, 1), bool)
    return np.zeros((h, w), bool)


def paste_torso(
    layer: Image.Image,
    poly: list[Point],
    ident: Identity,
    view: str,
    body_h: float,
    top_y: float,
    cx: float,
) -> None:
    """Fill the torso polygon ``poly`` on ``layer`` with the identity's clothing pattern.

    Stripe/check periods scale with ``body_h`` (pixels) so a pattern looks the same at any
    camera distance; ``top_y`` anchors the stripes at the shoulders.
    """
    xs = [p[0] for p in poly]
    ys = [p[1] for p in poly]
    x0, y0 = max(0, int(min(xs))), max(0, int(min(ys)))
    x1, y1 = (
        min(layer.width, int(math.ceil(max(xs))) + 1),
        min(layer.height, int(math.ceil(max(ys))) + 1),
    )
    if x1 <= x0 or y1 <= y0:
        return
    h, w = y1 - y0, x1 - x0
    main = np.array(ident.upper + (255,), np.uint8)
    second = np.array(ident.upper2 + (255,), np.uint8)
    period = max(2.0, ident.pattern_period * body_h)
    yy = (np.arange(y0, y1, dtype=np.float32) - top_y)[:, None]
    xx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :]
    sel = pattern_mask(ident.pattern, view, yy, xx, period, body_h)
    rgba = np.where(sel[:, :, None], second, main).astype(np.uint8)
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in poly], fill=255)
    layer.paste(Image.fromarray(rgba, "RGBA"), (x0, y0), mask)


def draw_logo(
    draw: ImageDraw.ImageDraw, ident: Identity, cx: float, cy: float, size: float
) -> None:
    """Draw the chest print (front view only), centred at (cx, cy), ``size`` pixels across."""
    r = size / 2
    fill = ident.upper2 + (255,)
    if ident.logo_shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif ident.logo_shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif ident.logo_shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    else:  # a horizontal band of text-like print
        draw.rectangle((cx - 1.4 * r, cy - 0.45 * r, cx + 1.4 * r, cy + 0.45 * r), fill=fill)


def draw_head(
    draw: ImageDraw.ImageDraw,
    ident: Identity,
    view: str,
    cx: float,
    top: float,
    hw: float,
    hh: float,
) -> None:
    """Draw head, face, hair and hat; head box is centred at ``cx``, ``hw`` x ``hh`` pixels."""
    skin, hair = ident.skin + (255,), ident.hair + (255,)
    box = (cx - hw / 2, top, cx + hw / 2, top + hh)
    if view == "back":
        draw.ellipse(box, fill=hair)
        if ident.hair_style == "short":  # nape of the neck
            draw.rectangle((cx - hw * 0.25, top + hh * 0.8, cx + hw * 0.25, top + hh), fill=skin)
    elif view == "front":
        draw.ellipse(box, fill=hair)
        draw.ellipse((cx - hw * 0.42, top + hh * 0.22, cx + hw * 0.42, top + hh), fill=skin)
    else:  # drawn facing left: face at the front (left), hair on top and at the back
        draw.ellipse(box, fill=hair)
        draw.ellipse((cx - hw * 0.55, top + hh * 0.25, cx + hw * 0.2, top + hh), fill=skin)
    if ident.hair_style == "bun":
        r = hw * 0.22
        bx = cx + (hw * 0.45 if view in ("left", "right") else 0)
        draw.ellipse((bx - r, top - r * 0.9, bx + r, top + r * 1.1), fill=hair)
    if ident.hat is not None:
        _draw_hat(draw, ident.hat + (255,), view, cx, top, hw, hh)


def _draw_hat(
    draw: ImageDraw.ImageDraw, hat: RGBA, view: str, cx: float, top: float, hw: float, hh: float
) -> None:
    """Draw a cap over the head box of :func:`draw_head`, with its peak where the face is."""
    draw.chord(
        (cx - hw * 0.55, top - hh * 0.05, cx + hw * 0.55, top + hh * 0.7), 180, 360, fill=hat
    )
    if view == "front":
        draw.rectangle((cx - hw * 0.5, top + hh * 0.28, cx + hw * 0.5, top + hh * 0.36), fill=hat)
    elif view in ("left", "right"):
        draw.rectangle((cx - hw * 0.9, top + hh * 0.28, cx, top + hh * 0.36), fill=hat)


def draw_bag(
    draw: ImageDraw.ImageDraw,
    kind: str,
    colour: RGB,
    x: float,
    y: float,
    body_h: float,
    shading: float = 1.0,
) -> None:
    """Draw a handbag (hanging at ``y``) or shoulder bag (top edge at ``y``) centred at ``x``."""
    fill = shade(colour, shading)
    if kind == "handbag":
        w, h = 0.09 * body_h, 0.08 * body_h
        draw.polygon(
            [(x - w * 0.4, y), (x + w * 0.4, y), (x + w / 2, y + h), (x - w / 2, y + h)], fill=fill
        )
    else:
        w, h = 0.11 * body_h, 0.09 * body_h
        draw.rectangle((x - w / 2, y, x + w / 2, y + h), fill=fill)
