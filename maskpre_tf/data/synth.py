"""Generated pedestrians written in the Market-1501 layout: the demo data set and test fixtures.

A deterministic procedural generator draws cartoon pedestrians (head, hair, torso with a clothing
pattern, arms, legs, shoes, carried bags) over per-camera backgrounds and saves 128x64 RGB JPEGs
in the folder layout and file naming of Market-1501 (Zheng et al., ICCV 2015)::

    <out>/bounding_box_train/0002_c1s1_000451_03.jpg   pid 0002, camera 1 (1-based), sequence 1,
    <out>/bounding_box_test/...                        frame 000451, detection box 03
    <out>/query/...

As in Market-1501, training and test identities are disjoint; the query set holds one image per
test identity per camera it appears in, the gallery holds its other images plus distractors
(pid ``0000``, badly framed people) and junk (pid ``-1``, crops with hardly any person).

What makes the demo meaningful:

* identities differ by body shape, clothing colours from a small palette (so many people share a
  colour pair), clothing pattern (plain, stripes, checks, a chest print, an open jacket), sleeve
  and leg wear, hair, hats and carried objects (backpack, handbag, shoulder bag on one side);
* cameras differ by illumination (brightness, gamma), colour cast (per-channel gain), background
  clutter, blur, person scale and mostly-seen viewpoint (front/back or side), so a chest print or
  a backpack is visible in some cameras only; each image adds jitter in position, scale, walking
  phase, brightness and sensor noise.

A global colour histogram is therefore a weak descriptor here, while the spatial layout of the
body still identifies a person. Same seed gives byte-identical files (per-image random streams
are keyed by ``(seed, pid, camera, index)``; JPEG quality is fixed).

Command line (defaults give the demo set: 200 identities, 6 cameras, about 1,600 training
images)::

    python -m maskpre_tf.data.synth --out data/demo --identities 200 --cameras 6 --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from maskpre_tf.errors import UserError, run_main

# ----------------------------------------------------------------------------- constants

#: Output image size (height, width) in pixels, as Market-1501 crops.
IMAGE_HEIGHT, IMAGE_WIDTH = 128, 64
#: Drawing happens at this multiple of the output size, then is box-filtered down (anti-aliasing).
SUPERSAMPLE = 2
#: JPEG quality of every written file (fixed so that the bytes are reproducible).
JPEG_QUALITY = 90
#: Split folders, as in Market-1501.
TRAIN_DIR, GALLERY_DIR, QUERY_DIR = "bounding_box_train", "bounding_box_test", "query"
#: Written last by :func:`generate`; its presence means the folder is complete.
COMPLETE_MARKER = ".synth_complete.json"
#: Written first by :func:`generate` and removed at the end; marks the folder as ours.
PARTIAL_MARKER = ".synth_incomplete"
#: Bumped whenever the drawing changes, so that :func:`ensure_demo_data` regenerates old sets.
GENERATOR_VERSION = 2

#: Defaults of the demo set.
DEMO_IDENTITIES, DEMO_CAMERAS, DEMO_IMAGES_PER_CAMERA, DEMO_SEED = 200, 6, 4.0, 0

# Clothing palette (RGB, uint8). Deliberately small so that many identities share colours.
CLOTHING = np.array(
    [
        (28, 28, 32),  # black
        (222, 222, 215),  # white
        (120, 120, 124),  # grey
        (34, 44, 92),  # navy
        (72, 102, 150),  # denim blue
        (165, 36, 40),  # red
        (48, 98, 58),  # green
        (188, 168, 128),  # beige
        (98, 64, 40),  # brown
        (205, 120, 150),  # pink
    ],
    dtype=np.uint8,
)
# Dark colours are somewhat more common in street clothing.
CLOTHING_P = np.array([0.14, 0.11, 0.11, 0.11, 0.11, 0.09, 0.09, 0.09, 0.08, 0.07])
SKIN = np.array([(234, 192, 160), (205, 155, 120), (160, 110, 80), (105, 70, 50)], np.uint8)
HAIR = np.array(
    [(22, 18, 16), (70, 45, 28), (150, 110, 60), (200, 170, 110), (140, 140, 140)], np.uint8
)
HAIR_P = np.array([0.45, 0.25, 0.12, 0.1, 0.08])
SHOES = np.array([(20, 20, 22), (230, 230, 228), (90, 60, 40), (110, 110, 115)], np.uint8)

PATTERNS = ("plain", "hstripes", "vstripes", "checks", "logo", "jacket")
PATTERN_P = (0.3, 0.15, 0.12, 0.12, 0.16, 0.15)
CARRY = ("none", "backpack", "handbag", "shoulder_bag")
CARRY_P = (0.4, 0.25, 0.15, 0.2)
VIEWS = ("front", "back", "left", "right")

RGB = tuple[int, int, int]

# Background tuning: texture contrast, colour spread of clutter (8-bit units), clutter items per
# 100 px of panorama width (range). More varied clutter makes same-camera crops less alike.
_TEXTURE = 0.4
_CLUTTER_TINT = 20.0
_CLUTTER = (3, 8)
#: Brightness range (8-bit) of facade segments and of clutter items.
_FACADE = (85.0, 175.0)
_CLUTTER_LEVEL = (60.0, 180.0)


# ----------------------------------------------------------------------------- attributes


@dataclass(frozen=True)
class Identity:
    """Appearance of one person; lengths are fractions of the drawn body height.

    Colours are RGB tuples of ints in [0, 255]. ``carry_side`` is +1 for the person's left side,
    -1 for the right.
    """

    height: float
    width: float
    head: float
    legs: float
    skin: RGB
    hair: RGB
    hair_style: str
    hat: RGB | None
    upper: RGB
    upper2: RGB
    sleeves: str
    pattern: str
    pattern_period: float
    logo_shape: str
    lower: RGB
    lower_style: str
    shoes: RGB
    carry: str
    carry_colour: RGB
    carry_side: int


@dataclass(frozen=True)
class Camera:
    """Imaging conditions of one camera.

    gain: per-channel RGB gain (colour cast), shape (3,), float.
    brightness: overall gain; gamma: exponent applied to [0, 1] intensities.
    blur: Gaussian blur radius in output pixels. noise: sensor noise std in 8-bit units.
    scale: drawn body height as a fraction of the image height (before identity/jitter factors).
    views: probabilities of ``VIEWS``, shape (4,).
    background: RGB uint8 array (H, W, 3) at supersampled resolution with a margin for jitter.
    """

    gain: np.ndarray
    brightness: float
    gamma: float
    blur: float
    noise: float
    scale: float
    views: np.ndarray
    pole: RGB
    background: np.ndarray


def _colour(rng: np.random.Generator, table: np.ndarray, p: np.ndarray | None = None) -> RGB:
    """One colour drawn from ``table`` (rows of uint8 RGB) with probabilities ``p``."""
    row = table[rng.choice(len(table), p=p)]
    return (int(row[0]), int(row[1]), int(row[2]))


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw the appearance of one person from ``rng``."""
    upper_i = rng.choice(len(CLOTHING), p=CLOTHING_P)
    # Secondary upper colour (stripes, print, shirt under jacket) must contrast with the main one.
    others = [i for i in range(len(CLOTHING)) if i != upper_i]
    p2 = CLOTHING_P[others] / CLOTHING_P[others].sum()
    upper2_i = others[rng.choice(len(others), p=p2)]
    hair_style = str(rng.choice(["short", "long", "short", "bun"]))
    return Identity(
        height=float(rng.uniform(0.88, 1.0)),
        width=float(rng.uniform(0.8, 1.25)),
        head=float(rng.uniform(0.88, 1.12)),
        legs=float(rng.uniform(0.44, 0.52)),
        skin=_colour(rng, SKIN),
        hair=_colour(rng, HAIR, HAIR_P),
        hair_style=hair_style,
        hat=_colour(rng, CLOTHING, CLOTHING_P) if rng.random() < 0.15 else None,
        upper=tuple(int(v) for v in CLOTHING[upper_i]),
        upper2=tuple(int(v) for v in CLOTHING[upper2_i]),
        sleeves=str(rng.choice(["long", "short"], p=[0.6, 0.4])),
        pattern=str(rng.choice(PATTERNS, p=PATTERN_P)),
        pattern_period=float(rng.uniform(0.035, 0.06)),
        logo_shape=str(rng.choice(["circle", "square", "triangle", "bar"])),
        lower=_colour(rng, CLOTHING, CLOTHING_P),
        lower_style=str(rng.choice(["trousers", "shorts", "skirt"], p=[0.65, 0.2, 0.15])),
        shoes=_colour(rng, SHOES),
        carry=str(rng.choice(CARRY, p=CARRY_P)),
        carry_colour=_colour(rng, CLOTHING, CLOTHING_P),
        carry_side=int(rng.choice([-1, 1])),
    )


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


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A street-like panorama (facades, pavement, clutter), RGB uint8 of shape (h, w, 3).

    Colours are muted (a grey level plus a modest tint). Facades and paving change along the
    panorama, so crops taken at different positions have different backgrounds; the camera's own
    character is a shared tint, the pavement tone and the street furniture.
    """
    tint = 1.0 + rng.normal(0.0, 0.03, 3)
    floor = rng.uniform(100, 130)
    horizon = int(h * rng.uniform(0.55, 0.8))
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
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
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
    return np.asarray(pil)


def sample_camera(rng: np.random.Generator, index: int) -> Camera:
    """Draw the imaging conditions of camera ``index`` (0-based) from ``rng``.

    Even cameras look along the walkway (people seen from the front or back), odd cameras across
    it (people seen from the side), each with a random mix.
    """
    along = np.array([0.45, 0.45, 0.05, 0.05])
    across = np.array([0.06, 0.06, 0.44, 0.44])
    base = along if index % 2 == 0 else across
    views = base * rng.uniform(0.5, 1.5, 4)
    views /= views.sum()
    # a panorama several crops wide: the background changes with the person's position
    margin = 12 * SUPERSAMPLE
    bg = _background(rng, IMAGE_HEIGHT * SUPERSAMPLE + 2 * margin, 16 * IMAGE_WIDTH * SUPERSAMPLE)
    gain = np.exp(rng.normal(0.0, 0.03, 3))
    return Camera(
        gain=(gain / gain.mean()).astype(np.float32),
        brightness=float(np.exp(rng.uniform(math.log(0.92), math.log(1.1)))),
        gamma=float(rng.uniform(0.94, 1.06)),
        blur=float(rng.uniform(0.0, 0.9)),
        noise=float(rng.uniform(2.0, 7.0)),
        scale=float(rng.uniform(0.9, 1.0)),
        views=views,
        pole=tuple(int(v) for v in rng.uniform(30, 200, 3)),
        background=bg,
    )


# ----------------------------------------------------------------------------- drawing


def _shade(c: RGB, f: float) -> tuple[int, int, int, int]:
    """RGBA fill of colour ``c`` scaled by ``f`` (for limbs further from the camera)."""
    return (min(255, int(c[0] * f)), min(255, int(c[1] * f)), min(255, int(c[2] * f)), 255)


def _limb(
    draw: ImageDraw.ImageDraw,
    p0: tuple[float, float],
    p1: tuple[float, float],
    w0: float,
    w1: float,
    fill: tuple[int, int, int, int],
) -> None:
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


def _paste_torso(
    layer: Image.Image,
    poly: list[tuple[float, float]],
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
    pattern = ident.pattern
    if pattern == "hstripes":
        sel = (np.floor(yy / period) % 2 == 1) & np.ones((1, w), bool)
    elif pattern == "vstripes" and view in ("front", "back"):
        sel = (np.floor(xx / (0.8 * period)) % 2 == 1) & np.ones((h, 1), bool)
    elif pattern == "vstripes":  # seen from the side the vertical stripes are narrower
        sel = (np.floor(xx / (0.5 * period)) % 2 == 1) & np.ones((h, 1), bool)
    elif pattern == "checks":
        sel = (np.floor(yy / period) + np.floor(xx / period)) % 2 == 1
    elif pattern == "jacket" and view == "front":  # open jacket shows the shirt underneath
        sel = (np.abs(xx) < 0.045 * body_h) & np.ones((h, 1), bool)
    elif pattern == "jacket" and view in ("left", "right"):  # shirt edge visible at the front
        sel = (xx < -0.035 * body_h) & np.ones((h, 1), bool)
    else:
        sel = np.zeros((h, w), bool)
    rgba = np.where(sel[:, :, None], second, main).astype(np.uint8)
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in poly], fill=255)
    layer.paste(Image.fromarray(rgba, "RGBA"), (x0, y0), mask)


def _draw_logo(
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


def _draw_head(
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
        hat = ident.hat + (255,)
        draw.chord(
            (cx - hw * 0.55, top - hh * 0.05, cx + hw * 0.55, top + hh * 0.7), 180, 360, fill=hat
        )
        if view == "front":
            draw.rectangle(
                (cx - hw * 0.5, top + hh * 0.28, cx + hw * 0.5, top + hh * 0.36), fill=hat
            )
        elif view in ("left", "right"):
            draw.rectangle((cx - hw * 0.9, top + hh * 0.28, cx, top + hh * 0.36), fill=hat)


def _draw_bag(
    draw: ImageDraw.ImageDraw,
    kind: str,
    colour: RGB,
    x: float,
    y: float,
    body_h: float,
    shade: float = 1.0,
) -> None:
    """Draw a handbag (hanging at ``y``) or shoulder bag (top edge at ``y``) centred at ``x``."""
    fill = _shade(colour, shade)
    if kind == "handbag":
        w, h = 0.09 * body_h, 0.08 * body_h
        draw.polygon(
            [(x - w * 0.4, y), (x + w * 0.4, y), (x + w / 2, y + h), (x - w / 2, y + h)], fill=fill
        )
    else:
        w, h = 0.11 * body_h, 0.09 * body_h
        draw.rectangle((x - w / 2, y, x + w / 2, y + h), fill=fill)


def draw_person(
    layer: Image.Image,
    ident: Identity,
    view: str,
    cx: float,
    feet_y: float,
    body_h: float,
    phase: float,
) -> None:
    """Draw a pedestrian on the transparent RGBA ``layer``.

    Args:
      layer: RGBA image to draw on (any size; the figure may extend past its borders).
      ident: the person's appearance.
      view: "front", "back" or "left" (side view facing left; mirror the layer for "right").
      cx: horizontal centre of the body, pixels.
      feet_y: row of the soles, pixels.
      body_h: body height from the top of the head to the soles, pixels.
      phase: walking phase in radians (leg and arm swing).
    """
    draw = ImageDraw.Draw(layer)
    H = body_h
    top = feet_y - H
    hh = 0.13 * H * ident.head
    hw = 0.75 * hh
    shoulder_y = top + hh + 0.025 * H
    hip_y = feet_y - ident.legs * H
    shoe_h = 0.035 * H
    ankle_y = feet_y - shoe_h
    skin = ident.skin + (255,)
    lower = ident.lower + (255,)
    shoes = ident.shoes + (255,)
    side = view not in ("front", "back")
    lw = 0.075 * H * math.sqrt(ident.width)  # leg width at the hip
    aw = 0.06 * H * math.sqrt(ident.width)  # arm width at the shoulder
    sleeve_end = 0.45 if ident.sleeves == "short" else 0.92
    leg_cover = {"trousers": 1.0, "shorts": 0.45, "skirt": 0.0}[ident.lower_style]
    carry = ident.carry
    bag_colour = ident.carry_colour

    def leg(hx: float, fx: float, fy: float, shade: float) -> None:
        """One leg from the hip point (hx, hip) to the ankle (fx, fy), with shoe and clothing."""
        p0 = (hx, hip_y)
        p1 = (fx, fy)
        _limb(draw, p0, p1, lw, lw * 0.7, _shade(ident.skin, shade))
        if leg_cover > 0:
            pm = (hx + (fx - hx) * leg_cover, hip_y + (fy - hip_y) * leg_cover)
            _limb(
                draw,
                p0,
                pm,
                lw * 1.05,
                lw * (1.0 - 0.3 * leg_cover) * 1.05,
                _shade(ident.lower, shade),
            )
        if side:
            draw.ellipse(
                (fx - lw * 1.1, fy - shoe_h * 0.3, fx + lw * 0.6, fy + shoe_h),
                fill=_shade(ident.shoes, shade),
            )
        else:
            draw.ellipse((fx - lw * 0.6, fy - shoe_h * 0.3, fx + lw * 0.6, fy + shoe_h), fill=shoes)

    def arm(sx: float, hx: float, hy: float, shade: float) -> None:
        """One arm from the shoulder (sx, shoulder) to the hand (hx, hy), sleeve over the top."""
        p0 = (sx, shoulder_y + aw * 0.4)
        p1 = (hx, hy)
        _limb(draw, p0, p1, aw, aw * 0.75, _shade(ident.skin, shade))
        pm = (sx + (hx - sx) * sleeve_end, p0[1] + (hy - p0[1]) * sleeve_end)
        _limb(draw, p0, pm, aw * 1.1, aw * 0.95, _shade(ident.upper, shade))
        r = aw * 0.45
        draw.ellipse((hx - r, hy - r, hx + r, hy + r), fill=_shade(ident.skin, shade))

    swing = math.sin(phase)
    if not side:
        sw = 0.16 * H * ident.width  # half shoulder width
        hipw = 0.115 * H * ident.width
        # image-x sign of the person's left side: front view mirrors it
        left = 1.0 if view == "front" else -1.0
        bag_x = cx + ident.carry_side * left * (sw + aw * 0.6)
        if ident.hair_style == "long" and view == "front":
            draw.rectangle(
                (cx - hw * 0.6, top + hh * 0.3, cx + hw * 0.6, shoulder_y + 0.06 * H),
                fill=ident.hair + (255,),
            )
        lift = 0.015 * H * swing
        leg(cx - hipw * 0.5, cx - hipw * 0.55, ankle_y - max(lift, 0), 1.0)
        leg(cx + hipw * 0.5, cx + hipw * 0.55, ankle_y - max(-lift, 0), 1.0)
        if ident.lower_style == "skirt":
            ky = hip_y + 0.45 * (ankle_y - hip_y)
            draw.polygon(
                [
                    (cx - hipw, hip_y - 0.01 * H),
                    (cx + hipw, hip_y - 0.01 * H),
                    (cx + hipw * 1.45, ky),
                    (cx - hipw * 1.45, ky),
                ],
                fill=lower,
            )
        else:
            draw.rectangle(
                (cx - hipw - lw * 0.1, hip_y - 0.02 * H, cx + hipw + lw * 0.1, hip_y + 0.05 * H),
                fill=lower,
            )
        neck_w = hw * 0.35
        draw.rectangle((cx - neck_w, top + hh * 0.8, cx + neck_w, shoulder_y + 0.01 * H), fill=skin)
        hand_y = hip_y + 0.05 * H
        for s in (-1.0, 1.0):
            arm(cx + s * (sw - aw * 0.35), cx + s * (sw + aw * 0.25), hand_y, 1.0)
        torso = [
            (cx - sw, shoulder_y + 0.03 * H),
            (cx - sw * 0.8, shoulder_y),
            (cx + sw * 0.8, shoulder_y),
            (cx + sw, shoulder_y + 0.03 * H),
            (cx + hipw * 1.02, hip_y + 0.02 * H),
            (cx - hipw * 1.02, hip_y + 0.02 * H),
        ]
        _paste_torso(layer, torso, ident, view, H, shoulder_y, cx)
        if ident.pattern == "logo" and view == "front":
            _draw_logo(draw, ident, cx, shoulder_y + 0.09 * H, 0.075 * H)
        if ident.hair_style == "long" and view == "back":
            draw.rectangle(
                (cx - hw * 0.55, top + hh * 0.5, cx + hw * 0.55, shoulder_y + 0.09 * H),
                fill=ident.hair + (255,),
            )
        _draw_head(draw, ident, view, cx, top, hw, hh)
        strap = _shade(bag_colour, 0.85)
        if carry == "backpack" and view == "back":
            bw, bh = sw * 1.5, 0.25 * H
            draw.rounded_rectangle(
                (cx - bw / 2, shoulder_y + 0.02 * H, cx + bw / 2, shoulder_y + 0.02 * H + bh),
                radius=bw * 0.15,
                fill=bag_colour + (255,),
            )
            draw.rectangle(
                (cx - bw * 0.35, shoulder_y + 0.13 * H, cx + bw * 0.35, shoulder_y + 0.2 * H),
                fill=strap,
            )
        elif carry == "backpack":  # straps over the shoulders seen from the front
            for s in (-1.0, 1.0):
                _limb(
                    draw,
                    (cx + s * sw * 0.55, shoulder_y),
                    (cx + s * sw * 0.6, shoulder_y + 0.16 * H),
                    aw * 0.35,
                    aw * 0.35,
                    strap,
                )
        elif carry == "shoulder_bag":
            sx = cx - (bag_x - cx) * 0.7
            _limb(
                draw,
                (sx, shoulder_y + 0.005 * H),
                (bag_x, hip_y - 0.01 * H),
                aw * 0.3,
                aw * 0.3,
                strap,
            )
            _draw_bag(draw, "shoulder_bag", bag_colour, bag_x, hip_y - 0.02 * H, H)
        elif carry == "handbag":
            _draw_bag(draw, "handbag", bag_colour, bag_x, hand_y, H)
        return

    # side view, facing left (-x is the front); the near side is the person's left
    near = ident.carry_side == 1
    sd = 0.11 * H * ident.width  # half depth of the torso
    lean = 0.01 * H
    leg_len = ankle_y - hip_y
    a = 0.38 * swing
    b = -0.45 * swing
    arm_len = 0.34 * H
    pivot_x = cx + 0.2 * sd
    if carry == "backpack":  # behind the back, drawn first so the body overlaps its edge
        draw.rounded_rectangle(
            (cx + sd * 0.6, shoulder_y + 0.02 * H, cx + sd + 0.075 * H, shoulder_y + 0.27 * H),
            radius=0.02 * H,
            fill=bag_colour + (255,),
        )
    if carry in ("shoulder_bag", "handbag") and not near:
        y = hip_y - 0.02 * H if carry == "shoulder_bag" else hip_y + 0.05 * H
        _draw_bag(draw, carry, bag_colour, cx + 0.6 * sd, y, H, shade=0.8)
    # far limbs, darker
    leg(pivot_x, pivot_x + leg_len * math.sin(-a), hip_y + leg_len * math.cos(a), 0.8)
    arm(cx, cx + arm_len * math.sin(-b), shoulder_y + arm_len * math.cos(b), 0.8)
    leg(pivot_x, pivot_x + leg_len * math.sin(a), hip_y + leg_len * math.cos(a), 1.0)
    if ident.lower_style == "skirt":
        ky = hip_y + 0.45 * leg_len
        draw.polygon(
            [
                (cx - sd * 1.1, hip_y - 0.01 * H),
                (cx + sd * 1.1, hip_y - 0.01 * H),
                (cx + sd * 1.5, ky),
                (cx - sd * 1.5, ky),
            ],
            fill=lower,
        )
    else:
        draw.rectangle((cx - sd, hip_y - 0.02 * H, cx + sd * 1.05, hip_y + 0.05 * H), fill=lower)
    draw.rectangle(
        (cx - hw * 0.25, top + hh * 0.8, cx + hw * 0.3, shoulder_y + 0.01 * H), fill=skin
    )
    torso = [
        (cx - sd - lean, shoulder_y + 0.01 * H),
        (cx + sd * 0.9 - lean, shoulder_y),
        (cx + sd * 1.05, hip_y + 0.02 * H),
        (cx - sd, hip_y + 0.02 * H),
    ]
    _paste_torso(layer, torso, ident, view, H, shoulder_y, cx)
    if ident.hair_style == "long":
        draw.rectangle(
            (cx, top + hh * 0.45, cx + hw * 0.55, shoulder_y + 0.07 * H), fill=ident.hair + (255,)
        )
    _draw_head(draw, ident, "left", cx - lean, top, hw, hh)
    hand = (cx + arm_len * math.sin(b), shoulder_y + arm_len * math.cos(b))
    arm(cx, hand[0], hand[1], 1.0)
    strap = _shade(bag_colour, 0.85)
    if carry == "backpack":
        _limb(
            draw,
            (cx + sd * 0.3, shoulder_y),
            (cx + sd * 0.1, shoulder_y + 0.15 * H),
            aw * 0.35,
            aw * 0.35,
            strap,
        )
    elif carry == "shoulder_bag" and near:
        _limb(
            draw,
            (cx + sd * 0.2, shoulder_y),
            (cx - sd * 0.3, hip_y - 0.01 * H),
            aw * 0.3,
            aw * 0.3,
            strap,
        )
        _draw_bag(draw, "shoulder_bag", bag_colour, cx - sd * 0.2, hip_y - 0.02 * H, H)
    elif carry == "handbag" and near:
        _draw_bag(draw, "handbag", bag_colour, hand[0], hand[1], H)


def render(
    ident: Identity | None,
    camera: Camera,
    rng: np.random.Generator,
    view: str | None = None,
    framing: str = "normal",
) -> Image.Image:
    """One 128x64 RGB image of ``ident`` seen by ``camera``, with per-image jitter from ``rng``.

    Args:
      ident: the person, or None for a background-only crop.
      camera: imaging conditions.
      rng: per-image random stream (position, scale, phase, brightness, noise).
      view: one of ``VIEWS``; drawn from the camera's view mix when None.
      framing: "normal"; "close" (upper body, legs cut off), "offset" (half out of the frame),
        "small" (far away) for distractors; "sliver" (only an edge of a person) for junk.

    Returns:
      An RGB PIL image, IMAGE_HEIGHT x IMAGE_WIDTH.
    """
    S = SUPERSAMPLE
    h, w = IMAGE_HEIGHT * S, IMAGE_WIDTH * S
    bg = camera.background
    my, mx = bg.shape[0] - h, bg.shape[1] - w
    oy, ox = int(rng.integers(0, my + 1)), int(rng.integers(0, mx + 1))
    canvas = Image.fromarray(bg[oy : oy + h, ox : ox + w])
    if view is None:
        view = VIEWS[int(rng.choice(4, p=camera.views))]
    phase = float(rng.uniform(0, 2 * math.pi))
    body_h = camera.scale * h * float(rng.uniform(0.94, 1.06))
    cx = w / 2 + float(rng.normal(0, 0.035 * w))
    feet_y = h * (0.985 - float(rng.uniform(0, 0.04)))
    if ident is not None:
        body_h *= ident.height
        if framing == "close":
            body_h *= float(rng.uniform(1.5, 1.9))
            feet_y = h * 0.98 + body_h * float(rng.uniform(0.3, 0.45))
        elif framing == "offset":
            cx += float(rng.choice([-1, 1])) * w * float(rng.uniform(0.35, 0.5))
        elif framing == "small":
            body_h *= float(rng.uniform(0.45, 0.6))
            feet_y -= h * float(rng.uniform(0.0, 0.3))
        elif framing == "sliver":
            cx += float(rng.choice([-1, 1])) * w * float(rng.uniform(0.6, 0.72))
        layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        draw_view = "left" if view == "right" else view
        lx = w - cx if view == "right" else cx
        draw_person(layer, ident, draw_view, lx, feet_y, body_h, phase)
        if view == "right":
            layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        canvas.paste(layer, (0, 0), layer)
    if rng.random() < 0.12:  # a pole in front of the person
        px = float(rng.uniform(0, w))
        ImageDraw.Draw(canvas).rectangle(
            (px, 0, px + float(rng.uniform(3, 8)), h), fill=camera.pole
        )
    img = canvas.reduce(S)
    blur = camera.blur * float(rng.uniform(0.8, 1.2))
    if blur > 0.15:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    x = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
    gain = camera.gain * (camera.brightness * float(rng.uniform(0.88, 1.12)))
    gain = gain * rng.uniform(0.97, 1.03, 3).astype(np.float32)
    x = np.clip(x * gain, 0.0, 1.0) ** camera.gamma
    x = x * 255.0 + rng.normal(0.0, camera.noise, x.shape).astype(np.float32)
    return Image.fromarray(np.clip(x + 0.5, 0, 255).astype(np.uint8))


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Item:
    """One image to write: where, what and with which random stream."""

    split: str
    name: str
    pid: int
    cam: int
    key: tuple[int, ...]
    framing: str = "normal"


def _track_names(
    rng: np.random.Generator, pid_text: str, cam: int, count: int, used: set[str]
) -> list[str]:
    """``count`` unique Market-style names ``{pid}_c{cam}s{seq}_{frame:06d}_{bbox:02d}.jpg``.

    ``cam`` is 1-based. Frames of one track increase; ``used`` guards against collisions.
    """
    names = []
    seq = int(rng.integers(1, 7))
    frame = int(rng.integers(0, 150000))
    while len(names) < count:
        frame += int(rng.integers(5, 80))
        name = f"{pid_text}_c{cam}s{seq}_{frame % 1000000:06d}_{int(rng.integers(1, 9)):02d}.jpg"
        if name not in used:
            used.add(name)
            names.append(name)
    return names


def _plan(identities: int, cameras: int, images_per_camera: float, seed: int) -> list[_Item]:
    """Every image of the set: split, file name, pid, camera (0-based) and random-stream key."""
    rng = np.random.default_rng([seed, 0])
    pids = np.arange(1, identities + 1)
    is_train = np.zeros(identities, bool)
    is_train[rng.permutation(identities)[: identities // 2]] = True
    used: set[str] = set()
    items: list[_Item] = []
    max_cams = min(cameras, 6)
    gallery_true = 0
    for pid, train in zip(pids.tolist(), is_train.tolist(), strict=True):
        n_cams = int(rng.integers(2, max_cams + 1))
        cams = sorted(rng.choice(cameras, n_cams, replace=False).tolist())
        for cam in cams:
            count = 1 + int(rng.poisson(max(images_per_camera - 1.0, 0.0)))
            if not train:
                count = max(2, count)
            names = _track_names(rng, f"{pid:04d}", cam + 1, count, used)
            query_k = -1 if train else int(rng.integers(count))
            for k, name in enumerate(names):
                split = TRAIN_DIR if train else (QUERY_DIR if k == query_k else GALLERY_DIR)
                gallery_true += split == GALLERY_DIR
                items.append(_Item(split, name, pid, cam, (seed, 3, pid, cam, k)))
    n_distractors = max(2, round(0.06 * gallery_true))
    n_junk = max(1, round(0.02 * gallery_true))
    for i in range(n_distractors + n_junk):
        distractor = i < n_distractors
        cam = int(rng.integers(cameras))
        pid_text = "0000" if distractor else "-1"
        name = _track_names(rng, pid_text, cam + 1, 1, used)[0]
        framing = (
            str(rng.choice(["close", "offset", "small"]))
            if distractor
            else str(rng.choice(["sliver", "empty"]))
        )
        items.append(_Item(GALLERY_DIR, name, 0 if distractor else -1, cam, (seed, 4, i), framing))
    return items


def _check_args(identities: int, cameras: int, images_per_camera: float, seed: int) -> None:
    """Raise :class:`UserError` for settings the generator cannot honour."""
    if not 2 <= identities <= 9999:
        raise UserError(
            f"--identities={identities}: need 2 to 9999 (half train, half test; Market names "
            "hold a 4-digit person id); e.g. 200"
        )
    if not 2 <= cameras <= 9:
        raise UserError(
            f"--cameras={cameras}: need 2 to 9 cameras (every identity appears in at "
            "least 2; Market names hold a 1-digit camera number); e.g. 6"
        )
    if not 1.0 <= images_per_camera <= 100.0:
        raise UserError(
            f"--images_per_camera={images_per_camera}: expected a mean between 1 and "
            "100 images per identity per camera; e.g. 4"
        )
    if seed < 0:
        raise UserError(f"--seed={seed}: expected a non-negative integer; e.g. 0")


def _owned(out_dir: str) -> bool:
    """True if ``out_dir`` holds no split folders, or holds ones written by this generator."""
    if any(os.path.exists(os.path.join(out_dir, m)) for m in (COMPLETE_MARKER, PARTIAL_MARKER)):
        return True
    return not any(
        os.path.isdir(os.path.join(out_dir, d)) and os.listdir(os.path.join(out_dir, d))
        for d in (TRAIN_DIR, GALLERY_DIR, QUERY_DIR)
    )


def generate(
    out_dir: str,
    identities: int = DEMO_IDENTITIES,
    cameras: int = DEMO_CAMERAS,
    seed: int = DEMO_SEED,
    images_per_camera: float = DEMO_IMAGES_PER_CAMERA,
    verbose: bool = True,
) -> dict[str, int]:
    """Write a generated data set in Market-1501 layout to ``out_dir``.

    Existing output of this generator in ``out_dir`` is replaced; a folder holding other
    Market-style data is refused (:class:`UserError`) rather than overwritten. The completion
    marker is written last.

    Args:
      out_dir: destination folder (created if missing).
      identities: number of people; ``identities // 2`` train, the rest test.
      cameras: number of cameras (2-9); each identity appears in 2 to ``min(cameras, 6)``.
      seed: random seed; the same seed gives byte-identical files.
      images_per_camera: mean images per identity per camera it appears in (>= 1).
      verbose: print a one-line summary.

    Returns:
      Image counts: ``train``, ``query``, ``gallery`` (with distractors and junk),
      ``distractors``, ``junk``, and identity counts ``train_ids``, ``test_ids``.
    """
    _check_args(identities, cameras, images_per_camera, seed)
    start = time.perf_counter()
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"--out={out_dir} is a file, expected a folder; pass a folder path")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"--out={out_dir}: cannot create the folder ({err.strerror}); pass a writable path"
        ) from err
    if not _owned(out_dir):
        raise UserError(
            f"{out_dir} already holds Market-style image folders that were not "
            "generated here; pass an empty or new --out folder"
        )
    complete = os.path.join(out_dir, COMPLETE_MARKER)
    partial = os.path.join(out_dir, PARTIAL_MARKER)
    with open(partial, "w") as f:
        f.write("generation in progress or interrupted; rerun to regenerate\n")
    if os.path.exists(complete):
        os.remove(complete)
    for d in (TRAIN_DIR, GALLERY_DIR, QUERY_DIR):
        shutil.rmtree(os.path.join(out_dir, d), ignore_errors=True)
        os.makedirs(os.path.join(out_dir, d))

    cams = [sample_camera(np.random.default_rng([seed, 2, c]), c) for c in range(cameras)]
    people: dict[int, Identity] = {}
    items = _plan(identities, cameras, images_per_camera, seed)
    counts = {"train": 0, "query": 0, "gallery": 0, "distractors": 0, "junk": 0}
    for item in items:
        rng = np.random.default_rng(list(item.key))
        if item.pid > 0:
            if item.pid not in people:
                people[item.pid] = sample_identity(np.random.default_rng([seed, 1, item.pid]))
            img = render(people[item.pid], cams[item.cam], rng)
        elif item.framing == "empty":
            img = render(None, cams[item.cam], rng)
        else:  # somebody outside the data set, badly framed
            img = render(sample_identity(rng), cams[item.cam], rng, framing=item.framing)
        img.save(os.path.join(out_dir, item.split, item.name), "JPEG", quality=JPEG_QUALITY)
        key = {TRAIN_DIR: "train", QUERY_DIR: "query", GALLERY_DIR: "gallery"}[item.split]
        counts[key] += 1
        counts["distractors"] += item.pid == 0
        counts["junk"] += item.pid == -1
    counts["train_ids"] = len({i.pid for i in items if i.split == TRAIN_DIR})
    counts["test_ids"] = len({i.pid for i in items if i.split == QUERY_DIR})
    params = _params(identities, cameras, seed, images_per_camera)
    with open(complete, "w") as f:
        json.dump({"params": params, "counts": counts}, f, indent=1, sort_keys=True)
    os.remove(partial)
    if verbose:
        print(
            f"generated {identities} identities x {cameras} cameras in "
            f"{time.perf_counter() - start:.1f}s -> {out_dir}: train {counts['train']} images "
            f"({counts['train_ids']} ids), query {counts['query']}, gallery {counts['gallery']}"
            f" ({counts['test_ids']} ids + {counts['distractors']} distractors + "
            f"{counts['junk']} junk)",
            flush=True,
        )
    return counts


def _params(identities: int, cameras: int, seed: int, images_per_camera: float) -> dict[str, Any]:
    """What the completion marker records (a set is reused only if all of these match)."""
    return {
        "identities": identities,
        "cameras": cameras,
        "seed": seed,
        "images_per_camera": float(images_per_camera),
        "version": GENERATOR_VERSION,
    }


def is_complete(
    out_dir: str,
    identities: int = DEMO_IDENTITIES,
    cameras: int = DEMO_CAMERAS,
    seed: int = DEMO_SEED,
    images_per_camera: float = DEMO_IMAGES_PER_CAMERA,
) -> bool:
    """True if ``out_dir`` holds a finished set generated with exactly these settings."""
    path = os.path.join(out_dir, COMPLETE_MARKER)
    if not os.path.isfile(path) or os.path.exists(os.path.join(out_dir, PARTIAL_MARKER)):
        return False
    try:
        with open(path) as f:
            params = json.load(f)["params"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return params == _params(identities, cameras, seed, images_per_camera)


def ensure_demo_data(
    out_dir: str,
    identities: int = DEMO_IDENTITIES,
    cameras: int = DEMO_CAMERAS,
    seed: int = DEMO_SEED,
    images_per_camera: float = DEMO_IMAGES_PER_CAMERA,
    verbose: bool = True,
) -> str:
    """Generate the demo set in ``out_dir`` unless a complete copy is already there.

    The defaults give the demo set. A folder whose completion marker is missing (an interrupted
    generation), unreadable, or records other settings or an older generator version is
    regenerated from scratch, never half-used.

    Returns:
      ``out_dir``, ready to read with the Market-1501 reader.
    """
    if not is_complete(out_dir, identities, cameras, seed, images_per_camera):
        generate(
            out_dir,
            identities=identities,
            cameras=cameras,
            seed=seed,
            images_per_camera=images_per_camera,
            verbose=verbose,
        )
    return out_dir


# ----------------------------------------------------------------------------- command line


def _parse(argv: list[str]) -> argparse.Namespace:
    """Parse the command line (``argv`` without the program name)."""
    p = argparse.ArgumentParser(
        prog="python -m maskpre_tf.data.synth",
        description="Write a generated pedestrian data set in Market-1501 layout.",
    )
    p.add_argument("--out", required=True, help="destination folder")
    p.add_argument(
        "--identities",
        type=int,
        default=DEMO_IDENTITIES,
        help="number of people, half train and half test (default %(default)s)",
    )
    p.add_argument(
        "--cameras",
        type=int,
        default=DEMO_CAMERAS,
        help="number of cameras, 2-9 (default %(default)s)",
    )
    p.add_argument(
        "--images_per_camera",
        type=float,
        default=DEMO_IMAGES_PER_CAMERA,
        help="mean images per identity per camera it appears in (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=DEMO_SEED, help="random seed (default %(default)s)")
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    """Command-line entry point: ``argv[0]`` is the program name."""
    args = _parse(argv[1:])
    generate(
        args.out,
        identities=args.identities,
        cameras=args.cameras,
        seed=args.seed,
        images_per_camera=args.images_per_camera,
    )


if __name__ == "__main__":
    run_main(main, sys.argv, debug=False)
