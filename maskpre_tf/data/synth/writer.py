"""Writing a generated set to disk: argument checks, the images, the markers, reuse of a set.

:func:`generate` writes an in-progress marker first and a completion marker (settings and image
counts) last; :func:`is_complete` and :func:`ensure_demo_data` trust a folder only when the
completion marker is there and records the same settings and generator version.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

import numpy as np
from PIL import Image

from maskpre_tf.data.synth.appearance import Camera, Identity, sample_camera, sample_identity
from maskpre_tf.data.synth.layout import (
    GALLERY_DIR,
    QUERY_DIR,
    TRAIN_DIR,
    PlannedImage,
    plan_images,
)
from maskpre_tf.data.synth.render import render
from maskpre_tf.errors import UserError

#: JPEG quality of every written file (fixed so that the bytes are reproducible).
JPEG_QUALITY = 90
#: Written last by :func:`generate`; its presence means the folder is complete.
COMPLETE_MARKER = ".synth_complete.json"
#: Written first by :func:`generate` and removed at the end; marks the folder as ours.
PARTIAL_MARKER = ".synth_incomplete"
#: Bumped whenever the drawing changes, so that :func:`ensure_demo_data` regenerates old sets.
GENERATOR_VERSION = 2

#: Defaults of the demo set.
DEMO_IDENTITIES, DEMO_CAMERAS, DEMO_IMAGES_PER_CAMERA, DEMO_SEED = 200, 6, 4.0, 0

_SPLIT_COUNT = {TRAIN_DIR: "train", QUERY_DIR: "query", GALLERY_DIR: "gallery"}


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


def _start_folder(out_dir: str) -> None:
    """Create ``out_dir``, mark it in progress and empty its split folders.

    Raises:
      UserError: ``out_dir`` is a file, cannot be created, or holds Market-style folders that
        this generator did not write.
    """
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
    with open(os.path.join(out_dir, PARTIAL_MARKER), "w") as f:
        f.write("generation in progress or interrupted; rerun to regenerate\n")
    complete = os.path.join(out_dir, COMPLETE_MARKER)
    if os.path.exists(complete):
        os.remove(complete)
    for d in (TRAIN_DIR, GALLERY_DIR, QUERY_DIR):
        shutil.rmtree(os.path.join(out_dir, d), ignore_errors=True)
        os.makedirs(os.path.join(out_dir, d))


def _draw_item(
    item: PlannedImage, cams: list[Camera], people: dict[int, Identity], seed: int
) -> Image.Image:
    """The image of ``item``; ``people`` caches the identities sampled so far (pid -> Identity)."""
    rng = np.random.default_rng(list(item.key))
    if item.pid > 0:
        if item.pid not in people:
            people[item.pid] = sample_identity(np.random.default_rng([seed, 1, item.pid]))
        return render(people[item.pid], cams[item.cam], rng)
    if item.framing == "empty":
        return render(None, cams[item.cam], rng)
    # somebody outside the data set, badly framed
    return render(sample_identity(rng), cams[item.cam], rng, framing=item.framing)


def _write_images(
    out_dir: str, items: list[PlannedImage], cameras: int, seed: int
) -> dict[str, int]:
    """Render and save every planned image; returns the counts recorded in the marker."""
    cams = [sample_camera(np.random.default_rng([seed, 2, c]), c) for c in range(cameras)]
    people: dict[int, Identity] = {}
    counts = {"train": 0, "query": 0, "gallery": 0, "distractors": 0, "junk": 0}
    for item in items:
        img = _draw_item(item, cams, people, seed)
        img.save(os.path.join(out_dir, item.split, item.name), "JPEG", quality=JPEG_QUALITY)
        counts[_SPLIT_COUNT[item.split]] += 1
        counts["distractors"] += item.pid == 0
        counts["junk"] += item.pid == -1
    counts["train_ids"] = len({i.pid for i in items if i.split == TRAIN_DIR})
    counts["test_ids"] = len({i.pid for i in items if i.split == QUERY_DIR})
    return counts


def _summary(identities: int, cameras: int, seconds: float, out_dir: str, counts: dict) -> str:
    """The one-line report of a finished generation."""
    return (
        f"generated {identities} identities x {cameras} cameras in "
        f"{seconds:.1f}s -> {out_dir}: train {counts['train']} images "
        f"({counts['train_ids']} ids), query {counts['query']}, gallery {counts['gallery']}"
        f" ({counts['test_ids']} ids + {counts['distractors']} distractors + "
        f"{counts['junk']} junk)"
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
    _start_folder(out_dir)
    items = plan_images(identities, cameras, images_per_camera, seed)
    counts = _write_images(out_dir, items, cameras, seed)
    params = _params(identities, cameras, seed, images_per_camera)
    with open(os.path.join(out_dir, COMPLETE_MARKER), "w") as f:
        json.dump({"params": params, "counts": counts}, f, indent=1, sort_keys=True)
    os.remove(os.path.join(out_dir, PARTIAL_MARKER))
    if verbose:
        seconds = time.perf_counter() - start
        print(_summary(identities, cameras, seconds, out_dir, counts), flush=True)
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
