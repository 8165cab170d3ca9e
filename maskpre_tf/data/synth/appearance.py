"""Who is seen and how: the :class:`Identity` of a person, the :class:`Camera`, and their sampling.

Identities differ by body shape, clothing colours from a small palette (so many people share a
colour pair), clothing pattern, sleeve and leg wear, hair, hats and carried objects. Cameras
differ by illumination, colour cast, background, blur, person scale and mostly-seen viewpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from maskpre_tf.data.synth.background import street_panorama
from maskpre_tf.data.synth.canvas import IMAGE_HEIGHT, IMAGE_WIDTH, SUPERSAMPLE

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
    bg = street_panorama(
        rng, IMAGE_HEIGHT * SUPERSAMPLE + 2 * margin, 16 * IMAGE_WIDTH * SUPERSAMPLE
    )
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
