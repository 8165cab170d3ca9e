"""One camera view of a person: background crop, placement, the drawn figure, camera effects.

Every random draw comes from the per-image stream ``rng`` in a fixed order (crop, view, pose,
framing, occluding pole, blur, gain, noise), so a stream always gives the same image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from maskpre_tf.data.synth.appearance import VIEWS, Camera, Identity
from maskpre_tf.data.synth.canvas import IMAGE_HEIGHT, IMAGE_WIDTH, SUPERSAMPLE
from maskpre_tf.data.synth.person import draw_person


@dataclass(frozen=True)
class _Placement:
    """Where the figure stands on the canvas (pixels) and its walking phase (radians)."""

    cx: float
    feet_y: float
    body_h: float
    phase: float


def _crop(background: np.ndarray, h: int, w: int, rng: np.random.Generator) -> Image.Image:
    """A random ``h`` x ``w`` window of the camera's panorama (uint8 RGB array, (H, W, 3))."""
    my, mx = background.shape[0] - h, background.shape[1] - w
    oy, ox = int(rng.integers(0, my + 1)), int(rng.integers(0, mx + 1))
    return Image.fromarray(background[oy : oy + h, ox : ox + w])


def _place(camera: Camera, h: int, w: int, rng: np.random.Generator) -> _Placement:
    """The jittered placement of a normally framed person on an ``h`` x ``w`` canvas."""
    phase = float(rng.uniform(0, 2 * math.pi))
    body_h = camera.scale * h * float(rng.uniform(0.94, 1.06))
    cx = w / 2 + float(rng.normal(0, 0.035 * w))
    feet_y = h * (0.985 - float(rng.uniform(0, 0.04)))
    return _Placement(cx, feet_y, body_h, phase)


def _frame(
    at: _Placement, ident: Identity, framing: str, h: int, w: int, rng: np.random.Generator
) -> _Placement:
    """``at`` scaled by the person's height and moved or scaled for ``framing`` (see render)."""
    cx, feet_y = at.cx, at.feet_y
    body_h = at.body_h * ident.height
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
    return _Placement(cx, feet_y, body_h, at.phase)


def _person_layer(ident: Identity, view: str, at: _Placement, h: int, w: int) -> Image.Image:
    """Transparent RGBA ``w`` x ``h`` layer with the person; "right" is a mirrored "left"."""
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw_view = "left" if view == "right" else view
    lx = w - at.cx if view == "right" else at.cx
    draw_person(layer, ident, draw_view, lx, at.feet_y, at.body_h, at.phase)
    if view == "right":
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return layer


def _image_sensor(canvas: Image.Image, camera: Camera, rng: np.random.Generator) -> Image.Image:
    """Downsample the supersampled ``canvas``, then the camera's blur, colour, gamma and noise."""
    img = canvas.reduce(SUPERSAMPLE)
    blur = camera.blur * float(rng.uniform(0.8, 1.2))
    if blur > 0.15:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    x = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
    gain = camera.gain * (camera.brightness * float(rng.uniform(0.88, 1.12)))
    gain = gain * rng.uniform(0.97, 1.03, 3).astype(np.float32)
    x = np.clip(x * gain, 0.0, 1.0) ** camera.gamma
    x = x * 255.0 + rng.normal(0.0, camera.noise, x.shape).astype(np.float32)
    return Image.fromarray(np.clip(x + 0.5, 0, 255).astype(np.uint8))


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
    h, w = IMAGE_HEIGHT * SUPERSAMPLE, IMAGE_WIDTH * SUPERSAMPLE
    canvas = _crop(camera.background, h, w, rng)
    if view is None:
        view = VIEWS[int(rng.choice(4, p=camera.views))]
    at = _place(camera, h, w, rng)
    if ident is not None:
        layer = _person_layer(ident, view, _frame(at, ident, framing, h, w, rng), h, w)
        canvas.paste(layer, (0, 0), layer)
    if rng.random() < 0.12:  # a pole in front of the person
        px = float(rng.uniform(0, w))
        ImageDraw.Draw(canvas).rectangle(
            (px, 0, px + float(rng.uniform(3, 8)), h), fill=camera.pole
        )
    return _image_sensor(canvas, camera, rng)
