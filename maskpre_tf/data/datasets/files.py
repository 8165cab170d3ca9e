"""Finding and checking files on disk: image listings, case-insensitive lookups, error listings.

Readers look at file names and sizes only; decoding images is the input pipeline's job.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from maskpre_tf.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
README_HINT = "see README 'Datasets'"
_MAX_LISTED = 5


def is_image(name: str) -> bool:
    """Whether a file name is a visible image file (.jpg/.jpeg/.png, any case, not hidden)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def listing(paths: Sequence[str]) -> str:
    """Up to five paths joined for an error message, with '(N in all)' when there are more."""
    shown = ", ".join(paths[:_MAX_LISTED])
    return shown if len(paths) <= _MAX_LISTED else f"{shown}, ... ({len(paths)} in all)"


def child(directory: str, name: str) -> str | None:
    """The entry ``name`` of ``directory`` (exact, else case-insensitive match), or None."""
    exact = os.path.join(directory, name)
    if os.path.exists(exact):
        return exact
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return None
    for entry in entries:
        if entry.lower() == name.lower():
            return os.path.join(directory, entry)
    return None


def subdirs(directory: str) -> list[str]:
    """Sorted absolute paths of the immediate sub-directories of ``directory``."""
    with os.scandir(directory) as entries:
        return sorted(e.path for e in entries if e.is_dir())


def check_root(root: str) -> str:
    """Absolute, user-expanded ``root``; UserError if it is missing, not a directory or empty."""
    path = os.path.abspath(os.path.expanduser(root))
    if not os.path.exists(path):
        raise UserError(
            f"dataset directory {path} does not exist; pass the folder that holds the "
            f"dataset ({README_HINT})"
        )
    if not os.path.isdir(path):
        raise UserError(f"dataset path {path} is not a directory; {README_HINT}")
    if not os.listdir(path):
        raise UserError(f"dataset directory {path} is empty; extract the dataset there first")
    return path


def list_images(
    directory: str, recursive: bool, exclude: Iterable[str] = ()
) -> tuple[list[str], int]:
    """Image files under ``directory``.

    Args:
      directory: folder to scan.
      recursive: descend into sub-folders.
      exclude: absolute folders whose contents are left out (e.g. query inside a train root).

    Returns:
      (sorted absolute image paths, number of other files skipped, e.g. Thumbs.db).
    """
    excluded = {os.path.normpath(e) for e in exclude}
    images: list[str] = []
    skipped = 0
    for current, dirs, files in os.walk(directory):
        dirs[:] = sorted(
            d for d in dirs if os.path.normpath(os.path.join(current, d)) not in excluded
        )
        for name in files:
            if is_image(name):
                images.append(os.path.join(current, name))
            else:
                skipped += 1
        if not recursive:
            break
    return sorted(images), skipped


def check_files(paths: Sequence[str], where: str) -> None:
    """UserError if any of ``paths`` is missing or has zero bytes (a corrupt download)."""
    missing, empty = [], []
    for path in paths:
        try:
            if os.stat(path).st_size == 0:
                empty.append(path)
        except OSError:
            missing.append(path)
    if missing:
        raise UserError(
            f"{len(missing)} image(s) listed in {where} do not exist: {listing(missing)}; "
            "re-extract the dataset archive"
        )
    if empty:
        raise UserError(
            f"{len(empty)} corrupt (zero-byte) image file(s) under {where}: {listing(empty)}; "
            "re-extract the dataset or delete these files"
        )
