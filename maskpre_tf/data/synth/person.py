"""A whole pedestrian: body measurements, legs and arms, and the figure seen from each side.

:func:`draw_person` draws front and back views facing the camera and side views facing left
(the caller mirrors the layer for "right"). Parts are drawn back to front, so the draw order
below is what decides what covers what.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageDraw

from maskpre_tf.data.synth.appearance import Identity
from maskpre_tf.data.synth.drawing import draw_bag, draw_head, draw_logo, limb, paste_torso, shade

#: How far down the leg the lower garment reaches (0 = not at all: a skirt is drawn apart).
_LEG_COVER = {"trousers": 1.0, "shorts": 0.45, "skirt": 0.0}


@dataclass(frozen=True)
class Body:
    """Where the parts of one drawn figure lie; rows and lengths in pixels.

    height: top of the head to the soles; top: row of the top of the head; head_h, head_w: head
    box; shoulder_y, hip_y, ankle_y, hand_y: rows (hands as they hang in front and back views);
    shoe_h: shoe height; leg_w, arm_w: limb widths at the hip and the shoulder.
    """

    height: float
    top: float
    head_h: float
    head_w: float
    shoulder_y: float
    hip_y: float
    ankle_y: float
    hand_y: float
    shoe_h: float
    leg_w: float
    arm_w: float


def measure(ident: Identity, feet_y: float, body_h: float) -> Body:
    """The :class:`Body` of ``ident`` standing with its soles on row ``feet_y``, ``body_h`` tall."""
    H = body_h
    top = feet_y - H
    hh = 0.13 * H * ident.head
    shoe_h = 0.035 * H
    hip_y = feet_y - ident.legs * H
    return Body(
        height=H,
        top=top,
        head_h=hh,
        head_w=0.75 * hh,
        shoulder_y=top + hh + 0.025 * H,
        hip_y=hip_y,
        ankle_y=feet_y - shoe_h,
        hand_y=hip_y + 0.05 * H,
        shoe_h=shoe_h,
        leg_w=0.075 * H * math.sqrt(ident.width),
        arm_w=0.06 * H * math.sqrt(ident.width),
    )


def _leg(
    draw: ImageDraw.ImageDraw,
    ident: Identity,
    body: Body,
    hx: float,
    foot: tuple[float, float],
    shading: float,
    side: bool = False,
) -> None:
    """One leg from the hip point (hx, hip) to the ankle ``foot``, with shoe and clothing.

    ``side``: a side view, whose shoe points forwards (to the left) and is shaded with the leg.
    """
    fx, fy = foot
    lw, shoe_h, hip_y = body.leg_w, body.shoe_h, body.hip_y
    p0 = (hx, hip_y)
    limb(draw, p0, foot, lw, lw * 0.7, shade(ident.skin, shading))
    cover = _LEG_COVER[ident.lower_style]
    if cover > 0:
        pm = (hx + (fx - hx) * cover, hip_y + (fy - hip_y) * cover)
        limb(draw, p0, pm, lw * 1.05, lw * (1.0 - 0.3 * cover) * 1.05, shade(ident.lower, shading))
    if side:
        draw.ellipse(
            (fx - lw * 1.1, fy - shoe_h * 0.3, fx + lw * 0.6, fy + shoe_h),
            fill=shade(ident.shoes, shading),
        )
    else:
        box = (fx - lw * 0.6, fy - shoe_h * 0.3, fx + lw * 0.6, fy + shoe_h)
        draw.ellipse(box, fill=ident.shoes + (255,))


def _arm(
    draw: ImageDraw.ImageDraw,
    ident: Identity,
    body: Body,
    sx: float,
    hand: tuple[float, float],
    shading: float,
) -> None:
    """One arm from the shoulder (sx, shoulder) to ``hand``, sleeve over the top."""
    hx, hy = hand
    aw = body.arm_w
    sleeve_end = 0.45 if ident.sleeves == "short" else 0.92
    p0 = (sx, body.shoulder_y + aw * 0.4)
    limb(draw, p0, hand, aw, aw * 0.75, shade(ident.skin, shading))
    pm = (sx + (hx - sx) * sleeve_end, p0[1] + (hy - p0[1]) * sleeve_end)
    limb(draw, p0, pm, aw * 1.1, aw * 0.95, shade(ident.upper, shading))
    r = aw * 0.45
    draw.ellipse((hx - r, hy - r, hx + r, hy + r), fill=shade(ident.skin, shading))


def _strap(
    draw: ImageDraw.ImageDraw,
    ident: Identity,
    start: tuple[float, float],
    end: tuple[float, float],
    width: float,
) -> None:
    """A bag strap ``width`` pixels wide from ``start`` to ``end``, a shade darker than the bag."""
    limb(draw, start, end, width, width, shade(ident.carry_colour, 0.85))


def _draw_facing(
    layer: Image.Image, ident: Identity, view: str, body: Body, cx: float, swing: float
) -> None:
    """The figure seen from the front or the back, centred at column ``cx``."""
    draw = ImageDraw.Draw(layer)
    H, top, hh, hw = body.height, body.top, body.head_h, body.head_w
    shoulder_y, hip_y, ankle_y, aw = body.shoulder_y, body.hip_y, body.ankle_y, body.arm_w
    lower = ident.lower + (255,)
    sw = 0.16 * H * ident.width  # half shoulder width
    hipw = 0.115 * H * ident.width
    if ident.hair_style == "long" and view == "front":
        draw.rectangle(
            (cx - hw * 0.6, top + hh * 0.3, cx + hw * 0.6, shoulder_y + 0.06 * H),
            fill=ident.hair + (255,),
        )
    lift = 0.015 * H * swing
    _leg(draw, ident, body, cx - hipw * 0.5, (cx - hipw * 0.55, ankle_y - max(lift, 0)), 1.0)
    _leg(draw, ident, body, cx + hipw * 0.5, (cx + hipw * 0.55, ankle_y - max(-lift, 0)), 1.0)
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
        lw = body.leg_w
        draw.rectangle(
            (cx - hipw - lw * 0.1, hip_y - 0.02 * H, cx + hipw + lw * 0.1, hip_y + 0.05 * H),
            fill=lower,
        )
    neck_w = hw * 0.35
    draw.rectangle(
        (cx - neck_w, top + hh * 0.8, cx + neck_w, shoulder_y + 0.01 * H), fill=ident.skin + (255,)
    )
    for s in (-1.0, 1.0):
        hand = (cx + s * (sw + aw * 0.25), body.hand_y)
        _arm(draw, ident, body, cx + s * (sw - aw * 0.35), hand, 1.0)
    torso = [
        (cx - sw, shoulder_y + 0.03 * H),
        (cx - sw * 0.8, shoulder_y),
        (cx + sw * 0.8, shoulder_y),
        (cx + sw, shoulder_y + 0.03 * H),
        (cx + hipw * 1.02, hip_y + 0.02 * H),
        (cx - hipw * 1.02, hip_y + 0.02 * H),
    ]
    paste_torso(layer, torso, ident, view, H, shoulder_y, cx)
    if ident.pattern == "logo" and view == "front":
        draw_logo(draw, ident, cx, shoulder_y + 0.09 * H, 0.075 * H)
    if ident.hair_style == "long" and view == "back":
        draw.rectangle(
            (cx - hw * 0.55, top + hh * 0.5, cx + hw * 0.55, shoulder_y + 0.09 * H),
            fill=ident.hair + (255,),
        )
    draw_head(draw, ident, view, cx, top, hw, hh)
    _carry_facing(draw, ident, view, body, cx, sw)


def _carry_facing(
    draw: ImageDraw.ImageDraw, ident: Identity, view: str, body: Body, cx: float, sw: float
) -> None:
    """The carried object over a front or back view; ``sw`` is the half shoulder width."""
    H, shoulder_y, hip_y, aw = body.height, body.shoulder_y, body.hip_y, body.arm_w
    colour = ident.carry_colour
    # image-x sign of the person's left side: front view mirrors it
    left = 1.0 if view == "front" else -1.0
    bag_x = cx + ident.carry_side * left * (sw + aw * 0.6)
    if ident.carry == "backpack" and view == "back":
        bw, bh = sw * 1.5, 0.25 * H
        draw.rounded_rectangle(
            (cx - bw / 2, shoulder_y + 0.02 * H, cx + bw / 2, shoulder_y + 0.02 * H + bh),
            radius=bw * 0.15,
            fill=colour + (255,),
        )
        draw.rectangle(
            (cx - bw * 0.35, shoulder_y + 0.13 * H, cx + bw * 0.35, shoulder_y + 0.2 * H),
            fill=shade(colour, 0.85),
        )
    elif ident.carry == "backpack":  # straps over the shoulders seen from the front
        for s in (-1.0, 1.0):
            over = (cx + s * sw * 0.55, shoulder_y)
            _strap(draw, ident, over, (cx + s * sw * 0.6, shoulder_y + 0.16 * H), aw * 0.35)
    elif ident.carry == "shoulder_bag":
        sx = cx - (bag_x - cx) * 0.7
        _strap(draw, ident, (sx, shoulder_y + 0.005 * H), (bag_x, hip_y - 0.01 * H), aw * 0.3)
        draw_bag(draw, "shoulder_bag", colour, bag_x, hip_y - 0.02 * H, H)
    elif ident.carry == "handbag":
        draw_bag(draw, "handbag", colour, bag_x, body.hand_y, H)


def _draw_side(
    layer: Image.Image, ident: Identity, view: str, body: Body, cx: float, swing: float
) -> None:
    """The figure seen from the side facing left (-x is the front); the near side is its left."""
    draw = ImageDraw.Draw(layer)
    H, top, hh, hw = body.height, body.top, body.head_h, body.head_w
    shoulder_y, hip_y = body.shoulder_y, body.hip_y
    near = ident.carry_side == 1
    sd = 0.11 * H * ident.width  # half depth of the torso
    lean = 0.01 * H
    leg_len = body.ankle_y - hip_y
    a = 0.38 * swing
    b = -0.45 * swing
    arm_len = 0.34 * H
    pivot_x = cx + 0.2 * sd
    far_foot = (pivot_x + leg_len * math.sin(-a), hip_y + leg_len * math.cos(a))
    near_foot = (pivot_x + leg_len * math.sin(a), hip_y + leg_len * math.cos(a))
    far_hand = (cx + arm_len * math.sin(-b), shoulder_y + arm_len * math.cos(b))
    _carry_side_behind(draw, ident, body, cx, sd, near)
    # far limbs, darker
    _leg(draw, ident, body, pivot_x, far_foot, 0.8, side=True)
    _arm(draw, ident, body, cx, far_hand, 0.8)
    _leg(draw, ident, body, pivot_x, near_foot, 1.0, side=True)
    lower = ident.lower + (255,)
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
        (cx - hw * 0.25, top + hh * 0.8, cx + hw * 0.3, shoulder_y + 0.01 * H),
        fill=ident.skin + (255,),
    )
    torso = [
        (cx - sd - lean, shoulder_y + 0.01 * H),
        (cx + sd * 0.9 - lean, shoulder_y),
        (cx + sd * 1.05, hip_y + 0.02 * H),
        (cx - sd, hip_y + 0.02 * H),
    ]
    paste_torso(layer, torso, ident, view, H, shoulder_y, cx)
    if ident.hair_style == "long":
        draw.rectangle(
            (cx, top + hh * 0.45, cx + hw * 0.55, shoulder_y + 0.07 * H), fill=ident.hair + (255,)
        )
    draw_head(draw, ident, "left", cx - lean, top, hw, hh)
    hand = (cx + arm_len * math.sin(b), shoulder_y + arm_len * math.cos(b))
    _arm(draw, ident, body, cx, hand, 1.0)
    _carry_side_front(draw, ident, body, cx, sd, near, hand)


def _carry_side_behind(
    draw: ImageDraw.ImageDraw, ident: Identity, body: Body, cx: float, sd: float, near: bool
) -> None:
    """What a side view carries behind the body: a backpack, or a bag on the far side.

    ``sd`` is the half depth of the torso; ``near`` whether the bag side faces the camera.
    """
    H, shoulder_y, hip_y = body.height, body.shoulder_y, body.hip_y
    carry, colour = ident.carry, ident.carry_colour
    if carry == "backpack":  # behind the back, drawn first so the body overlaps its edge
        draw.rounded_rectangle(
            (cx + sd * 0.6, shoulder_y + 0.02 * H, cx + sd + 0.075 * H, shoulder_y + 0.27 * H),
            radius=0.02 * H,
            fill=colour + (255,),
        )
    if carry in ("shoulder_bag", "handbag") and not near:
        y = hip_y - 0.02 * H if carry == "shoulder_bag" else hip_y + 0.05 * H
        draw_bag(draw, carry, colour, cx + 0.6 * sd, y, H, shading=0.8)


def _carry_side_front(
    draw: ImageDraw.ImageDraw,
    ident: Identity,
    body: Body,
    cx: float,
    sd: float,
    near: bool,
    hand: tuple[float, float],
) -> None:
    """What a side view shows over the body: backpack strap, near-side bag; ``hand`` is near."""
    H, shoulder_y, hip_y, aw = body.height, body.shoulder_y, body.hip_y, body.arm_w
    carry, colour = ident.carry, ident.carry_colour
    if carry == "backpack":
        _strap(
            draw,
            ident,
            (cx + sd * 0.3, shoulder_y),
            (cx + sd * 0.1, shoulder_y + 0.15 * H),
            aw * 0.35,
        )
    elif carry == "shoulder_bag" and near:
        _strap(
            draw, ident, (cx + sd * 0.2, shoulder_y), (cx - sd * 0.3, hip_y - 0.01 * H), aw * 0.3
        )
        draw_bag(draw, "shoulder_bag", colour, cx - sd * 0.2, hip_y - 0.02 * H, H)
    elif carry == "handbag" and near:
        draw_bag(draw, "handbag", colour, hand[0], hand[1], H)


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
    body = measure(ident, feet_y, body_h)
    swing = math.sin(phase)
    if view in ("front", "back"):
        _draw_facing(layer, ident, view, body, cx, swing)
    else:
        _draw_side(layer, ident, view, body, cx, swing)
