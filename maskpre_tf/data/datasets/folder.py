"""Reader of a user's own folder of unlabelled crops, by file-name pattern or CSV manifest.

Optional labelled query and gallery folders (Market-style names) make the set evaluable.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence

from maskpre_tf.data.datasets.files import (
    DATASET_EXTENSIONS,
    check_files,
    check_root,
    list_images,
    listing,
)
from maskpre_tf.data.datasets.market_layout import MARKET_EXAMPLE, parse_market_names
from maskpre_tf.data.datasets.records import Record, ReidDataset, report, require_query
from maskpre_tf.data.datasets.registry import register
from maskpre_tf.errors import UserError

DEFAULT_CAM_PATTERN = r"_c(\d+)"
#: The options :func:`read_folder` takes beyond root and verbose.
FOLDER_OPTIONS = ("cam_pattern", "cam_base", "manifest", "query_dir", "gallery_dir")


def camera_ids(values: Sequence[str], cam_base: int = 1) -> list[int]:
    """0-based camera ids from camera labels captured in file names.

    Args:
      values: one captured label per image, e.g. ["1", "3", "1"] or ["north", "south"].
      cam_base: the number the first camera has when the labels are numbers (1 for c1..c6).

    Returns:
      int - cam_base for all-numeric labels; otherwise the index of each label among the sorted
      distinct labels.
    """
    if all(v.isdigit() for v in values):
        return [int(v) - cam_base for v in values]
    order = {v: i for i, v in enumerate(sorted(set(values)))}
    return [order[v] for v in values]


def _compile_cam_pattern(cam_pattern: str) -> tuple[re.Pattern[str], str | int]:
    """The compiled ``cam_pattern`` and its camera group: named group ``cam``, else group 1."""
    try:
        pattern = re.compile(cam_pattern)
    except re.error as err:
        raise UserError(f"camera pattern {cam_pattern!r} is not a valid regex: {err}") from err
    group: str | int = "cam" if "cam" in pattern.groupindex else 1
    if group == 1 and pattern.groups < 1:
        raise UserError(
            f"camera pattern {cam_pattern!r} has no group; use a named group cam, "
            r"e.g. 'c(?P<cam>\d+)'"
        )
    return pattern, group


def _folder_train_from_pattern(
    root: str, paths: Sequence[str], cam_pattern: str, cam_base: int
) -> list[Record]:
    """Training records whose camera (and optional ``pid`` group) come from a regex."""
    pattern, group = _compile_cam_pattern(cam_pattern)
    rel = [os.path.relpath(p, root).replace(os.sep, "/") for p in paths]
    matches = [pattern.search(r) for r in rel]
    unmatched = [p for p, m in zip(paths, matches, strict=True) if m is None or m[group] is None]
    if len(unmatched) == len(paths):
        raise UserError(
            f"no camera id found in the names of the {len(paths)} image(s) under {root} with "
            f"the pattern {cam_pattern!r} (e.g. {listing(unmatched[:1])}); pass cam_pattern "
            r"with a named group cam matching your names (e.g. 'cam(?P<cam>\d+)') or a CSV "
            "manifest (path,camid[,pid]) as manifest"
        )
    if unmatched:
        raise UserError(
            f"{len(unmatched)} image(s) under {root} do not match the camera pattern "
            f"{cam_pattern!r}: {listing(unmatched)}; rename or remove them, change "
            "cam_pattern, or use a CSV manifest"
        )
    cams = camera_ids([m[group] for m in matches], cam_base)
    negative = [p for p, c in zip(paths, cams, strict=True) if c < 0]
    if negative:
        raise UserError(
            f"camera number below cam_base={cam_base} in {listing(negative)}; set cam_base=0 "
            "if your cameras are numbered from 0"
        )
    pids = [-1] * len(paths)
    if "pid" in pattern.groupindex:
        pids = [int(m["pid"]) if m["pid"] and _is_int(m["pid"]) else -1 for m in matches]
    return [Record(p, pid, cam) for p, pid, cam in zip(paths, pids, cams, strict=True)]


def _is_int(text: str) -> bool:
    """Whether ``text`` is an optionally signed decimal integer."""
    return re.fullmatch(r"\s*-?\d+\s*", text) is not None


def read_manifest(manifest: str) -> list[Record]:
    """Training records from a CSV manifest with rows ``path,camid[,pid]``.

    Paths are relative to the manifest's folder (absolute paths are kept); camid is 0-based;
    pid is optional (empty or absent → -1). A first row ``path,camid[,pid]`` is a header.
    """
    manifest = os.path.abspath(os.path.expanduser(manifest))
    if not os.path.isfile(manifest):
        raise UserError(f"manifest {manifest} does not exist; expected a CSV path,camid[,pid]")
    base = os.path.dirname(manifest)
    records = []
    expected = "expected 'path,camid[,pid]' with camid >= 0 (0-based) and pid >= -1"
    with open(manifest, newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            row = [field.strip() for field in row]
            if not row or not any(row):
                continue
            if number == 1 and len(row) >= 2 and row[1].lower() == "camid":
                continue
            valid = 2 <= len(row) <= 3 and row[0] and _is_int(row[1]) and int(row[1]) >= 0
            pid = -1
            if valid and len(row) == 3 and row[2]:
                valid = _is_int(row[2]) and int(row[2]) >= -1
                pid = int(row[2]) if valid else -1
            if not valid:
                raise UserError(f"{manifest} row {number} does not parse: {row}; {expected}")
            path = os.path.normpath(os.path.join(base, row[0]))
            records.append(Record(path, pid, int(row[1])))
    if not records:
        raise UserError(f"manifest {manifest} lists no images; {expected}")
    check_files([r.path for r in records], manifest)
    return sorted(records, key=lambda r: r.path)


def _read_train_dir(
    root_path: str,
    cam_pattern: str | None,
    cam_base: int,
    exclude: Sequence[str],
) -> tuple[list[Record], int]:
    """Training crops under the absolute ``root_path`` -> (records, skipped non-image files).

    Searched recursively; the folders in ``exclude`` (absolute) are left out.
    """
    check_root(root_path)
    paths, skipped = list_images(root_path, recursive=True, exclude=exclude)
    if not paths:
        raise UserError(
            f"no training images ({', '.join(DATASET_EXTENSIONS)}) under {root_path}; point "
            "root at the folder of person crops"
        )
    check_files(paths, root_path)
    train = _folder_train_from_pattern(
        root_path, paths, cam_pattern or DEFAULT_CAM_PATTERN, cam_base
    )
    return train, skipped


def _read_eval_dir(directory: str, split: str) -> tuple[list[Record], int]:
    """Market-style labelled query or gallery folder → (records, skipped non-image files)."""
    directory = check_root(directory)
    paths, skipped = list_images(directory, recursive=False)
    if not paths:
        raise UserError(
            f"{split} folder {directory} holds no images; expected Market-style names such as "
            f"{MARKET_EXAMPLE}"
        )
    check_files(paths, directory)
    return parse_market_names(paths, directory, MARKET_EXAMPLE), skipped


@register("folder")
def read_folder(
    root: str,
    cam_pattern: str | None = None,
    cam_base: int = 1,
    manifest: str | None = None,
    query_dir: str | None = None,
    gallery_dir: str | None = None,
    verbose: bool = True,
) -> ReidDataset:
    """Read a user's own folder of unlabelled training crops (searched recursively).

    Args:
      root: folder of crops (.jpg/.jpeg/.png/.gif/.bmp/.webp), or a CSV manifest (then
        ``manifest`` is root).
      cam_pattern: regex searched in each path relative to root; the camera is the named group
        ``cam`` (else group 1); an optional named group ``pid`` gives identities. Default
        Market-style ``_c(\\d+)``.
      cam_base: number of the first camera in file names (numeric cameras only).
      manifest: CSV ``path,camid[,pid]`` (paths relative to it) used instead of the pattern.
      query_dir, gallery_dir: optional labelled evaluation folders with Market-style names;
        both or neither. Their contents are left out of training if they lie inside root.
      verbose: print the statistics table.

    Returns:
      The dataset; train pids are -1 where no label is given; query/gallery empty if not given.
    """
    root_path = os.path.abspath(os.path.expanduser(root))
    if manifest is None and os.path.isfile(root_path) and root_path.lower().endswith(".csv"):
        manifest = root_path
    skipped = 0
    if manifest is not None:
        train = read_manifest(manifest)
        if not os.path.isdir(root_path):
            root_path = os.path.dirname(os.path.abspath(manifest))
    else:
        exclude = [os.path.abspath(os.path.expanduser(d)) for d in (query_dir, gallery_dir) if d]
        train, skipped = _read_train_dir(root_path, cam_pattern, cam_base, exclude)
    if (query_dir is None) != (gallery_dir is None):
        raise UserError(
            f"evaluation needs both query_dir and gallery_dir (got query_dir={query_dir}, "
            f"gallery_dir={gallery_dir}); pass both or neither"
        )
    query: list[Record] = []
    gallery: list[Record] = []
    if query_dir is not None and gallery_dir is not None:
        query, n_query = _read_eval_dir(query_dir, "query")
        gallery, n_gallery = _read_eval_dir(gallery_dir, "gallery")
        skipped += n_query + n_gallery
        require_query(query, os.path.abspath(os.path.expanduser(query_dir)))
    return report(ReidDataset("folder", root_path, train, query, gallery), skipped, verbose)
