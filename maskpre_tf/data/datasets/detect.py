"""Layout detection: which reader fits the folder at ``root`` (for dataset "auto")."""

from __future__ import annotations

import os
import re

from maskpre_tf.data.datasets.files import (
    README_HINT,
    check_root,
    child,
    is_image,
    subdirs,
    walk_folders,
)
from maskpre_tf.data.datasets.market_layout import SPLIT_DIRS, find_split_root
from maskpre_tf.data.datasets.msmt17 import find_msmt_root
from maskpre_tf.errors import UserError

MARKET_STYLE = re.compile(r"^-?\d+_c\d+s\d+_")
DUKE_STYLE = re.compile(r"^-?\d+_c\d+_f\d+")


def _has_image(directory: str) -> bool:
    """Whether any image file lies under ``directory`` (stops at the first one)."""
    for _, _, files in walk_folders(directory):
        if any(is_image(f) for f in files):
            return True
    return False


def _bbox_flavour(base: str) -> str:
    """'dukemtmc' when the split folders hold Duke-style names, else 'market1501'."""
    for split in ("query", "bounding_box_train", "bounding_box_test"):
        with os.scandir(child(base, split)) as entries:
            names = sorted(e.name for e in entries if is_image(e.name))[:20]
        if any(DUKE_STYLE.match(n) for n in names):
            return "dukemtmc"
        if any(MARKET_STYLE.match(n) for n in names):
            return "market1501"
    return "dukemtmc" if "duke" in os.path.basename(base).lower() else "market1501"


def _refuse_partial_split_folders(path: str) -> None:
    """UserError if ``path`` or a sub-folder holds some but not all of ``SPLIT_DIRS``."""
    for candidate in (path, *subdirs(path)):
        present = [d for d in SPLIT_DIRS if child(candidate, d)]
        if present:
            missing = [f"{d}/" for d in SPLIT_DIRS if d not in present]
            raise UserError(
                f"{candidate} looks like a Market-1501/DukeMTMC-reID copy but lacks "
                f"{', '.join(missing)}; expected bounding_box_train/, bounding_box_test/, "
                f"query/; {README_HINT}"
            )


def detect_layout(root: str) -> str:
    """Name of the reader for the layout at ``root``: market1501, dukemtmc, msmt17 or folder.

    Raises:
      UserError: root missing or empty, a partial Market/Duke layout, or no known layout.
    """
    path = os.path.abspath(os.path.expanduser(root))
    if os.path.isfile(path) and path.lower().endswith(".csv"):
        return "folder"
    path = check_root(path)
    base = find_split_root(path)
    if base is not None:
        return _bbox_flavour(base)
    if find_msmt_root(path) is not None:
        return "msmt17"
    _refuse_partial_split_folders(path)
    if _has_image(path):
        return "folder"
    raise UserError(
        f"{path} matches no known dataset layout: expected Market-1501/DukeMTMC-reID folders "
        "(bounding_box_train/, bounding_box_test/, query/), MSMT17 (list_*.txt with train/ and "
        "test/ or mask_train_v2/ and mask_test_v2/), or a folder of .jpg/.png crops; "
        f"{README_HINT}"
    )
