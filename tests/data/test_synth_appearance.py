"""Tests of what the generator draws: identities, cameras, the rendered view, the drawn figure."""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from maskpre_tf.data import synth


def test_palette_is_shared_but_people_differ() -> None:
    """Many people share an (upper, lower) colour pair; the full appearance tells them apart."""
    people = [synth.sample_identity(np.random.default_rng([9, i])) for i in range(200)]
    colour_pairs = {(p.upper, p.lower) for p in people}
    assert len(colour_pairs) < 100  # a colour histogram cannot separate 200 people
    looks = {
        (
            p.upper,
            p.lower,
            p.pattern,
            p.carry,
            p.carry_colour,
            p.hair,
            p.lower_style,
            p.sleeves,
            p.hat,
        )
        for p in people
    }
    assert len(looks) > 190
    assert len({p.pattern for p in people}) == len(synth.PATTERNS)
    assert len({p.carry for p in people}) == len(synth.CARRY)


def test_cameras_differ_in_viewpoint_and_imaging() -> None:
    cams = [synth.sample_camera(np.random.default_rng([0, 2, c]), c) for c in range(4)]
    for i, cam in enumerate(cams):
        front_back = cam.views[0] + cam.views[1]
        assert (front_back > 0.5) == (i % 2 == 0)  # along the walkway vs across it
        assert cam.background.dtype == np.uint8 and cam.background.ndim == 3
    assert len({round(c.brightness, 4) for c in cams}) == len(cams)
    # the camera's colour cast and brightness reach the pixels (same person, scene and jitter)
    person = synth.sample_identity(np.random.default_rng(3))
    neutral = dataclasses.replace(cams[0], gain=np.ones(3, np.float32), brightness=1.0, noise=0.0)
    warm = dataclasses.replace(neutral, gain=np.array([1.15, 1.0, 0.85], np.float32))
    dark = dataclasses.replace(neutral, brightness=0.7)
    means = {}
    for name, cam in (("neutral", neutral), ("warm", warm), ("dark", dark)):
        img = synth.render(person, cam, np.random.default_rng(1), view="front")
        assert img.size == (64, 128) and img.mode == "RGB"
        means[name] = np.asarray(img, np.float64).reshape(-1, 3).mean(0)
    assert means["warm"][0] > means["neutral"][0] + 5 and means["warm"][2] < means["neutral"][2] - 5
    assert np.all(means["dark"] < means["neutral"] - 10)


def test_backpack_seen_from_behind_only() -> None:
    """A back view of a backpack wearer covers the back in the bag colour; a front view does not."""
    person = dataclasses.replace(
        synth.sample_identity(np.random.default_rng(0)),
        carry="backpack",
        carry_colour=(165, 36, 40),
        pattern="plain",
        upper=(28, 28, 32),
        lower=(34, 44, 92),
        hat=None,
    )
    red = np.array((165, 36, 40), np.int16)

    def red_pixels(view: str) -> int:
        layer = Image.new("RGBA", (128, 256), (0, 0, 0, 0))
        synth.draw_person(layer, person, view, 64.0, 250.0, 240.0, 0.0)
        rgba = np.asarray(layer).astype(np.int16)
        return int(((np.abs(rgba[..., :3] - red).sum(-1) < 10) & (rgba[..., 3] == 255)).sum())

    assert red_pixels("back") > 20 * max(red_pixels("front"), 1)
