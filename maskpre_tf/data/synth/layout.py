"""The Market-1501 layout of a generated set: which image goes to which split, under which name.

As in Market-1501, training and test identities are disjoint; the query set holds one image per
test identity per camera it appears in, the gallery holds its other images plus distractors
(pid ``0000``, badly framed people) and junk (pid ``-1``, crops with hardly any person).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Split folders, as in Market-1501.
TRAIN_DIR, GALLERY_DIR, QUERY_DIR = "bounding_box_train", "bounding_box_test", "query"


@dataclass(frozen=True)
class PlannedImage:
    """One image to write: where, what and with which random stream.

    cam is 0-based; key seeds the image's random stream; framing is a :func:`render` framing, or
    "empty" for a junk crop without a person.
    """

    split: str
    name: str
    pid: int
    cam: int
    key: tuple[int, ...]
    framing: str = "normal"


def track_names(
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


def _identity_images(
    rng: np.random.Generator,
    pid: int,
    train: bool,
    cameras: int,
    images_per_camera: float,
    seed: int,
    used: set[str],
) -> list[PlannedImage]:
    """The images of person ``pid``: 2 to min(cameras, 6) cameras, one query per test camera."""
    items = []
    n_cams = int(rng.integers(2, min(cameras, 6) + 1))
    cams = sorted(rng.choice(cameras, n_cams, replace=False).tolist())
    for cam in cams:
        count = 1 + int(rng.poisson(max(images_per_camera - 1.0, 0.0)))
        if not train:
            count = max(2, count)
        names = track_names(rng, f"{pid:04d}", cam + 1, count, used)
        query_k = -1 if train else int(rng.integers(count))
        for k, name in enumerate(names):
            split = TRAIN_DIR if train else (QUERY_DIR if k == query_k else GALLERY_DIR)
            items.append(PlannedImage(split, name, pid, cam, (seed, 3, pid, cam, k)))
    return items


def _outsider_images(
    rng: np.random.Generator, gallery_true: int, cameras: int, seed: int, used: set[str]
) -> list[PlannedImage]:
    """Gallery distractors (pid 0, about 6 % of ``gallery_true``) and junk (pid -1, about 2 %)."""
    items = []
    n_distractors = max(2, round(0.06 * gallery_true))
    n_junk = max(1, round(0.02 * gallery_true))
    for i in range(n_distractors + n_junk):
        distractor = i < n_distractors
        cam = int(rng.integers(cameras))
        pid_text = "0000" if distractor else "-1"
        name = track_names(rng, pid_text, cam + 1, 1, used)[0]
        framing = (
            str(rng.choice(["close", "offset", "small"]))
            if distractor
            else str(rng.choice(["sliver", "empty"]))
        )
        pid = 0 if distractor else -1
        items.append(PlannedImage(GALLERY_DIR, name, pid, cam, (seed, 4, i), framing))
    return items


def plan_images(
    identities: int, cameras: int, images_per_camera: float, seed: int
) -> list[PlannedImage]:
    """Every image of the set: split, file name, pid, camera (0-based) and random-stream key.

    Half the identities (``identities // 2``) train, the rest test; the plan depends on the
    arguments only.
    """
    rng = np.random.default_rng([seed, 0])
    is_train = np.zeros(identities, bool)
    is_train[rng.permutation(identities)[: identities // 2]] = True
    used: set[str] = set()
    items: list[PlannedImage] = []
    for pid, train in zip(range(1, identities + 1), is_train.tolist(), strict=True):
        items += _identity_images(rng, pid, train, cameras, images_per_camera, seed, used)
    gallery_true = sum(item.split == GALLERY_DIR for item in items)
    return items + _outsider_images(rng, gallery_true, cameras, seed, used)
