"""The Market-1501 folder layout, shared by the Market-1501 and DukeMTMC-reID readers.

Three split folders (bounding_box_train/, bounding_box_test/, query/) of images named
``PID_cCAM...``: pid as written (junk ``-1`` dropped, distractor ``0`` kept), camid = the
1-based camera number minus one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from maskpre_tf.data.datasets.files import (
    README_HINT,
    check_files,
    check_root,
    child,
    list_images,
    listing,
    subdirs,
)
from maskpre_tf.data.datasets.records import Record, ReidDataset, report, require_query
from maskpre_tf.data.datasets.sources import DATASET_SOURCES
from maskpre_tf.errors import UserError

SPLIT_DIRS = ("bounding_box_train", "bounding_box_test", "query")
MARKET_PATTERN = re.compile(r"^(?P<pid>-?\d+)_c(?P<cam>\d+)")
#: A valid Market-1501 file name, for error messages.
MARKET_EXAMPLE = "0002_c1s1_000451_03.jpg"


def find_split_root(root: str) -> str | None:
    """The folder holding bounding_box_train/, bounding_box_test/, query/: root or a child."""
    if all(child(root, d) for d in SPLIT_DIRS):
        return root
    found = [d for d in subdirs(root) if all(child(d, s) for s in SPLIT_DIRS)]
    if len(found) > 1:
        raise UserError(
            f"{root} holds several re-ID datasets ({listing(found)}); pass one of them as root"
        )
    return found[0] if found else None


def parse_market_names(paths: Sequence[str], directory: str, example: str) -> list[Record]:
    """Records from Market/Duke-style file names ``PID_cCAM...``; junk (pid -1) dropped.

    Args:
      paths: absolute image paths in ``directory``.
      directory: the folder scanned (for error messages).
      example: an example of a valid name (for error messages).

    Returns:
      Records with the pid as written and camid = camera number - 1.
    """
    records, bad = [], []
    for path in paths:
        match = MARKET_PATTERN.match(os.path.basename(path))
        cam = int(match["cam"]) if match else 0
        if match is None or cam < 1:
            bad.append(path)
            continue
        pid = int(match["pid"])
        if pid == -1:
            continue
        if pid < -1:
            bad.append(path)
            continue
        records.append(Record(path, pid, cam - 1))
    if bad:
        raise UserError(
            f"cannot parse {len(bad)} image file name(s) in {directory}: {listing(bad)}; "
            f"expected PID_cCAM... with a 1-based camera number, e.g. {example}"
        )
    return records


def read_split_folders(root: str, name: str, example: str, verbose: bool) -> ReidDataset:
    """Read a Market-style layout (three split folders, names ``PID_cCAM...``).

    Args:
      root: the folder holding the split folders, or its parent.
      name: the reader's key in ``DATASET_SOURCES`` (its title and folder name go in messages).
      example: a valid file name of this dataset, for error messages.
      verbose: print the statistics table.
    """
    root = check_root(root)
    title, folder = DATASET_SOURCES[name].title, DATASET_SOURCES[name].folders[0]
    base = find_split_root(root)
    if base is None:
        raise UserError(
            f"expected the {title} folders bounding_box_train/, bounding_box_test/, query/ "
            f"under {root} (or under its sub-folder {folder}/); {README_HINT}"
        )
    splits, skipped = {}, 0
    for split in SPLIT_DIRS:
        directory = child(base, split)
        paths, n_skipped = list_images(directory, recursive=False)
        skipped += n_skipped
        if not paths:
            raise UserError(
                f"{directory} holds no images; expected {title} .jpg files such as {example}"
            )
        check_files(paths, directory)
        splits[split] = parse_market_names(paths, directory, example)
    require_query(splits["query"], child(base, "query"))
    ds = ReidDataset(
        name, base, splits["bounding_box_train"], splits["query"], splits["bounding_box_test"]
    )
    return report(ds, skipped, verbose)
