"""Reader of MSMT17 V1 and V2 (Wei et al., CVPR 2018), from its list files.

List labels are 0-based and are stored ``+1`` so that pid 0 keeps meaning "distractor" (MSMT17
has none); camid is the 1-based camera field of the file name minus one.
"""

from __future__ import annotations

import os

from maskpre_tf.data.datasets.files import (
    README_HINT,
    check_files,
    check_root,
    child,
    listing,
    subdirs,
)
from maskpre_tf.data.datasets.records import Record, ReidDataset, report, require_query
from maskpre_tf.data.datasets.registry import register
from maskpre_tf.errors import UserError

MSMT_LISTS = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
MSMT_DIRS = {"MSMT17_V1": ("train", "test"), "MSMT17_V2": ("mask_train_v2", "mask_test_v2")}


def _msmt_version(directory: str) -> str | None:
    """'MSMT17_V1' or 'MSMT17_V2' if ``directory`` holds that version's lists and folders."""
    if not child(directory, "list_train.txt"):
        return None
    for version, dirs in MSMT_DIRS.items():
        if all(child(directory, d) for d in dirs):
            return version
    return None


def find_msmt_root(root: str) -> tuple[str, str] | None:
    """(folder, version) of an MSMT17 copy at ``root`` or in one of its sub-folders."""
    version = _msmt_version(root)
    if version:
        return root, version
    found = [(d, v) for d in subdirs(root) if (v := _msmt_version(d))]
    if len(found) > 1:
        names = [d for d, _ in found]
        raise UserError(f"{root} holds several MSMT17 copies ({listing(names)}); pass one")
    return found[0] if found else None


def _parse_msmt_list(list_path: str, image_dir: str) -> list[Record]:
    """Records from an MSMT17 list file (lines ``0000/0000_000_01_0303morning_0015_0.jpg 0``).

    The label (0-based) is stored as pid = label + 1; the camera is the third ``_`` field of the
    file name (1-based), stored as camid = camera - 1. Paths are relative to ``image_dir``.
    """
    records = []
    with open(list_path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.split()
            parts = os.path.basename(fields[0]).split("_") if fields else []
            ok = (
                len(fields) == 2
                and fields[1].isdigit()
                and len(parts) >= 3
                and parts[2].isdigit()
                and int(parts[2]) >= 1
            )
            if not ok:
                raise UserError(
                    f"{list_path} line {number} does not parse: {line.strip()!r}; expected "
                    "'RELATIVE/PATH.jpg LABEL' with file names like "
                    "0000_000_01_0303morning_0015_0.jpg (third field = camera, 1-based)"
                )
            path = os.path.join(image_dir, *fields[0].split("/"))
            records.append(Record(path, int(fields[1]) + 1, int(parts[2]) - 1))
    return records


def _list_files(base: str) -> dict[str, str]:
    """Path of each of ``MSMT_LISTS`` in ``base``; UserError naming the first one missing."""
    lists = {}
    for name in MSMT_LISTS:
        path = child(base, name)
        if path is None:
            raise UserError(f"{os.path.join(base, name)} is missing; expected all of {MSMT_LISTS}")
        lists[name] = path
    return lists


def _by_path(records: list[Record]) -> list[Record]:
    """``records`` without repeats, sorted by path."""
    return sorted(set(records), key=lambda r: r.path)


@register("msmt17")
def read_msmt17(root: str, verbose: bool = True) -> ReidDataset:
    """Read MSMT17 V1 or V2 (Wei et al., CVPR 2018) from its list files.

    Training = list_train.txt + list_val.txt (images under train/ or mask_train_v2/); query and
    gallery from list_query.txt / list_gallery.txt (images under test/ or mask_test_v2/).

    Args:
      root: MSMT17_V1/ or MSMT17_V2/ itself, or the folder holding one of them.
      verbose: print the statistics table.
    """
    root = check_root(root)
    found = find_msmt_root(root)
    if found is None:
        raise UserError(
            f"expected MSMT17 under {root} (or its sub-folder MSMT17_V1/ or MSMT17_V2/): "
            f"{', '.join(MSMT_LISTS)} with train/ and test/ (V1) or mask_train_v2/ and "
            f"mask_test_v2/ (V2); {README_HINT}"
        )
    base, version = found
    train_dir, test_dir = (child(base, d) for d in MSMT_DIRS[version])
    lists = _list_files(base)
    train = _parse_msmt_list(lists["list_train.txt"], train_dir)
    train += _parse_msmt_list(lists["list_val.txt"], train_dir)
    query = _parse_msmt_list(lists["list_query.txt"], test_dir)
    gallery = _parse_msmt_list(lists["list_gallery.txt"], test_dir)
    for split, list_name in ((train, "list_train.txt/list_val.txt"), (gallery, "list_gallery.txt")):
        if not split:
            raise UserError(f"{os.path.join(base, list_name)} lists no images")
    require_query(query, lists["list_query.txt"])
    check_files([r.path for r in train], f"{base} list_train.txt/list_val.txt")
    check_files([r.path for r in query], lists["list_query.txt"])
    check_files([r.path for r in gallery], lists["list_gallery.txt"])
    ds = ReidDataset("msmt17", base, _by_path(train), _by_path(query), _by_path(gallery))
    return report(ds, 0, verbose)
