"""The files of a gallery search: image listing, Market-1501-style labels, folder checks."""

from __future__ import annotations

import os

from maskpre_tf.data.datasets import IMAGE_EXTENSIONS, MARKET_PATTERN
from maskpre_tf.errors import UserError


def list_images(directory: str) -> list[str]:
    """JPEG/PNG files under ``directory`` (recursive, hidden folders skipped), sorted."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            os.path.join(root, name)
            for name in files
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
        ]
    return sorted(found)


def check_gallery_dir(gallery_dir: str) -> None:
    """Raise :class:`UserError` unless ``gallery_dir`` is an existing folder."""
    if not os.path.isdir(gallery_dir):
        raise UserError(
            f"--gallery={gallery_dir}: no such directory; expected a folder of "
            "person crops (JPEG/PNG)"
        )


def gallery_files(gallery_dir: str) -> list[str]:
    """The images of an absolute ``gallery_dir``, sorted; :class:`UserError` if there is none."""
    check_gallery_dir(gallery_dir)
    paths = list_images(gallery_dir)
    if not paths:
        raise UserError(
            f"--gallery={gallery_dir}: no .jpg/.jpeg/.png files found (hidden files and folders "
            "are skipped); point --gallery at a folder of person crops"
        )
    return paths


def query_files(query: str) -> list[str]:
    """Absolute paths of the query: the one file ``query``, or the images of the folder ``query``.

    Raises:
      UserError: ``query`` does not exist, or is a folder without images.
    """
    if os.path.isfile(query):
        return [os.path.abspath(query)]
    if not os.path.isdir(query):
        raise UserError(f"--query={query}: no such file or directory; give an image or a folder")
    paths = list_images(os.path.abspath(query))
    if not paths:
        raise UserError(
            f"--query={query}: no .jpg/.jpeg/.png files found (hidden files and folders are "
            "skipped); point --query at a folder of person crops or at one image file"
        )
    return paths


def writable_dir(path: str) -> bool:
    """Create ``path`` if needed; True if files can be written there."""
    try:
        os.makedirs(path, exist_ok=True)
        return os.access(path, os.W_OK)
    except OSError:
        return False


def parse_label(path: str) -> tuple[int, int] | None:
    """(pid, camid 0-based) from a Market-1501-style file name ``<pid>_c<cam>...``, else None."""
    match = MARKET_PATTERN.match(os.path.basename(path))
    if match is None:
        return None
    return int(match.group("pid")), int(match.group("cam")) - 1


def is_match(
    query_label: tuple[int, int] | None, gallery_label: tuple[int, int] | None
) -> bool | None:
    """Whether a gallery item shows the query's person: None when either label is unknown.

    Distractors (pid 0) and junk (pid -1) never match.
    """
    if query_label is None or gallery_label is None:
        return None
    return gallery_label[0] > 0 and gallery_label[0] == query_label[0]
