"""Finding and checking files on disk: image listings, case-insensitive lookups, error listings.

Readers look at file names and sizes only; decoding images is the input pipeline's job.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

from maskpre_tf.errors import UserError

#: JPEG and PNG: what every program reads, the serving signature and search included.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: What the dataset readers list: TensorFlow's decoder reads these too (the variants it reads
#: wrong are refused by :func:`maskpre_tf.data.images.validate_images`).
DATASET_EXTENSIONS = (*IMAGE_EXTENSIONS, ".gif", ".bmp", ".webp")
README_HINT = "see README.md#datasets"
_MAX_LISTED = 5


def is_image(name: str) -> bool:
    """Whether a file name is a visible image file (DATASET_EXTENSIONS, any case, not hidden)."""
    return not name.startswith(".") and name.lower().endswith(DATASET_EXTENSIONS)


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
    """Sorted absolute paths of the immediate sub-directories of ``directory`` (links to
    folders included; a link loop is not a folder)."""
    with os.scandir(directory) as entries:
        return sorted(e.path for e in entries if _is_dir(e))


def _is_dir(entry: os.DirEntry) -> bool:
    """``entry.is_dir()``, False for a link that loops (which raises ELOOP there)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


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


def walk_folders(directory: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """:func:`os.walk` top-down that follows links to folders, each real folder once.

    A folder reached again (a second link to it, or a link loop back into the tree) and a link
    to ``directory`` itself or above it are not walked, so the walk always ends and lists no file
    twice. Pruning the yielded ``dirs`` in place works as with :func:`os.walk`.

    Yields:
      (folder path as reached, its sub-folder names, its other entry names: files, and links
      that lead nowhere or into a loop).
    """
    top = os.path.realpath(directory)
    walked: set[str] = set()
    for current, dirs, files in os.walk(directory, followlinks=True):
        real = os.path.realpath(current)
        above_top = real != top and os.path.commonpath([real, top]) == real
        if real in walked or above_top:
            dirs[:] = []
            continue
        walked.add(real)
        yield current, dirs, files


def list_images(
    directory: str, recursive: bool, exclude: Iterable[str] = ()
) -> tuple[list[str], int]:
    """Image files under ``directory``; links to folders are followed (see walk_folders).

    Args:
      directory: folder to scan.
      recursive: descend into sub-folders.
      exclude: absolute folders whose contents are left out (e.g. query inside a train root).

    Returns:
      (sorted absolute image paths, number of other entries skipped: other file types such as
      Thumbs.db, hidden files, links that lead nowhere or into a loop, and paths that are not
      valid UTF-8, which TensorFlow cannot open and a message cannot print).
    """
    excluded = {os.path.realpath(e) for e in exclude}
    images: list[str] = []
    skipped = 0
    for current, dirs, files in walk_folders(directory):
        dirs[:] = sorted(
            d for d in dirs if os.path.realpath(os.path.join(current, d)) not in excluded
        )
        for name in files:
            path = os.path.join(current, name)
            if is_image(name) and _is_utf8(path) and os.path.isfile(path):
                images.append(path)
            else:
                skipped += 1
        if not recursive:
            break
    return sorted(images), skipped


def _is_utf8(path: str) -> bool:
    """Whether ``path`` is valid UTF-8 (os.walk gives undecodable bytes as surrogates)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
