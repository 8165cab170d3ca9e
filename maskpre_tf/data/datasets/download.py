"""Getting a dataset archive onto disk: download (with a cache) and safe extraction."""

from __future__ import annotations

import os
import tarfile
import zipfile

from maskpre_tf.errors import UserError


def _archive_kind(path: str) -> str:
    """'zip' or 'tar' from an archive's file name (.zip, .tar, .tar.gz, .tgz, .tar.bz2)."""
    lower = path.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2")):
        return "tar"
    raise UserError(f"{path} is not a .zip or .tar.gz archive; extract it by hand into a folder")


def _safe_member(name: str, archive: str) -> str:
    """``name`` if it stays inside the extraction folder; UserError for absolute or '..' paths."""
    normal = os.path.normpath(name.replace("\\", "/"))
    if os.path.isabs(normal) or normal == ".." or normal.startswith(".." + os.sep):
        raise UserError(f"archive {archive} holds an unsafe member path {name!r}; not extracting")
    return normal


def extract_archive(archive: str, dest: str) -> str:
    """Extract a .zip or .tar(.gz) archive into ``dest``.

    Returns:
      dest/<top> when every member lies under one top-level folder <top>, else dest.
    """
    kind = _archive_kind(archive)
    os.makedirs(dest, exist_ok=True)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as handle:
                names = [_safe_member(n, archive) for n in handle.namelist()]
                handle.extractall(dest)
        else:
            with tarfile.open(archive) as handle:
                names = [_safe_member(m.name, archive) for m in handle.getmembers()]
                handle.extractall(dest, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise UserError(f"cannot extract {archive}: {err}; download it again") from err
    tops = {n.split(os.sep)[0] for n in names if n not in ("", ".")}
    if len(tops) == 1:
        top = os.path.join(dest, tops.pop())
        if os.path.isdir(top):
            return top
    return dest


def _finished_extraction(marker: str) -> str | None:
    """The folder an earlier extraction recorded in ``marker``, if both still exist."""
    if not os.path.isfile(marker):
        return None
    with open(marker, encoding="utf-8") as handle:
        done = handle.read().strip()
    return done if os.path.isdir(done) else None


def download_and_extract(url: str, dest: str, file_hash: str | None = None) -> str:
    """Download an archive (cached in ``dest``) and extract it there.

    Uses ``keras.utils.get_file`` (http(s) and file:// URLs); a second call with the same URL
    reuses the downloaded archive and the finished extraction.

    Args:
      url: where the .zip/.tar.gz lies, e.g. a licensed copy of Market-1501-v15.09.15.zip.
      dest: folder for the archive and its contents.
      file_hash: optional sha256 or md5 of the archive, checked after download.

    Returns:
      The extracted dataset folder, ready to pass to :func:`load_dataset`.
    """
    import keras  # imported here: loading Keras (and TensorFlow) is slow and only needed here

    dest = os.path.abspath(os.path.expanduser(dest))
    try:
        os.makedirs(dest, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the download folder {dest}: {err}") from err
    try:
        archive = keras.utils.get_file(
            origin=url, cache_dir=dest, cache_subdir="", file_hash=file_hash
        )
    except Exception as err:  # get_file raises bare Exception/ValueError on fetch or hash errors
        raise UserError(f"cannot download {url} into {dest}: {err}") from err
    _archive_kind(archive)
    marker = archive + ".extracted"
    done = _finished_extraction(marker)
    if done is not None:
        return done
    target = extract_archive(archive, dest)
    with open(marker, "w", encoding="utf-8") as handle:
        handle.write(target)
    return target
