"""The Market-1501 folder layout cluster-contrast reads, built out of symlinks.

Its ``Market1501`` class reads ``<data-dir>/market1501/Market-1501-v15.09.15/{split}``;
``build_data_root`` links a Market-1501 root (or a random subset of its identities) there.
"""

from __future__ import annotations

import os
import os.path as osp
import random
import re
import shutil

DATASET_NAME = "market1501"  # its -d name and the folder under its --data-dir
DATASET_FOLDER = "Market-1501-v15.09.15"
SPLITS = ("bounding_box_train", "bounding_box_test", "query")
# Its Market1501 parser applies this pattern to the *full* path, so the folder we build must not
# contain it (e.g. a temp name ending in "..._7_c3...").
PEER_PATTERN = re.compile(r"([-\d]+)_c(\d)")


def _pid(name):
    """Identity of a Market-1501 file name (-1 junk, 0 distractor), or None if none."""
    m = PEER_PATTERN.search(name)
    return int(m.group(1)) if m else None


def build_data_root(root, data_dir, train_ids=0, test_ids=0, seed=0):
    """``root/market1501/Market-1501-v15.09.15/{split}`` as symlinks to ``data_dir``.

    Any previous ``root`` is removed first. Whole splits are directory symlinks. With
    ``train_ids``/``test_ids`` > 0, a random subset (``seed``) of that many identities (all their
    images; on the test side identities with a query image, their query and gallery images) is
    linked file by file instead. Returns ``root``.
    """
    if PEER_PATTERN.search(osp.abspath(root)):
        raise ValueError(f"{root} would confuse cluster-contrast's file-name pattern")
    if osp.exists(root):
        shutil.rmtree(root)
    base = osp.join(root, DATASET_NAME, DATASET_FOLDER)
    os.makedirs(base, exist_ok=True)
    rng = random.Random(seed)
    picked = {}
    for split in SPLITS:
        src = osp.abspath(osp.join(data_dir, split))
        if not osp.isdir(src):
            raise FileNotFoundError(src)
        dst = osp.join(base, split)
        n_ids = train_ids if split == "bounding_box_train" else test_ids
        if n_ids <= 0:
            os.symlink(src, dst)
            continue
        names = sorted(f for f in os.listdir(src) if f.endswith(".jpg"))
        side = "train" if split == "bounding_box_train" else "test"
        if side not in picked:
            pool = sorted({p for p in map(_pid, names) if p not in (None, -1, 0)})
            if side == "test":  # identities that have a query image
                qnames = os.listdir(osp.join(data_dir, "query"))
                pool = sorted(set(pool) & {_pid(f) for f in qnames})
            picked[side] = set(rng.sample(pool, min(n_ids, len(pool))))
        os.makedirs(dst, exist_ok=True)
        for f in names:
            if _pid(f) in picked[side]:
                os.symlink(osp.join(src, f), osp.join(dst, f))
    return root
