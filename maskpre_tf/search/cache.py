"""The gallery embedding cache: its folder, its key, and reading and writing one entry.

An entry is two files sharing a prefix ``<cache_dir>/gallery-<key[:20]>``: ``.faiss`` (the
faiss index) and ``.json`` (the key, the model description, the gallery paths relative to the
gallery folder in row order, and the skipped files). The JSON is written last, so its presence
marks a complete entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

from maskpre_tf.search.files import writable_dir

CACHE_DIRNAME = ".maskpre_cache"


def default_cache_dir(gallery_dir: str, output_dir: str) -> str:
    """``<gallery>/.maskpre_cache`` when writable, else ``<output_dir>/.maskpre_cache``."""
    preferred = os.path.join(gallery_dir, CACHE_DIRNAME)
    if writable_dir(preferred):
        return preferred
    return os.path.join(output_dir, CACHE_DIRNAME)


def cache_key(identity: str, gallery_dir: str, paths: Sequence[str]) -> str:
    """Hex digest over the model identity and each file's relative path, size and mtime (ns)."""
    entries = []
    for path in paths:
        try:
            st = os.stat(path)
            entries.append([os.path.relpath(path, gallery_dir), st.st_size, st.st_mtime_ns])
        except OSError:
            entries.append([os.path.relpath(path, gallery_dir), -1, -1])
    text = json.dumps({"model": identity, "files": entries}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def entry_prefix(cache_dir: str, key: str) -> str:
    """The path prefix of the cache entry for ``key`` (``.faiss`` and ``.json`` are appended)."""
    return os.path.join(cache_dir, f"gallery-{key[:20]}")


def read_entry(
    prefix: str, key: str, gallery_dir: str
) -> tuple[object, list[str], list[tuple[str, str]]] | None:
    """The cached (faiss index, absolute paths, skipped [(path, reason)]), or None.

    None when the entry is missing, damaged, or was written for another key.
    """
    import faiss

    if not (os.path.isfile(prefix + ".json") and os.path.isfile(prefix + ".faiss")):
        return None
    try:
        with open(prefix + ".json") as f:
            meta = json.load(f)
        index = faiss.read_index(prefix + ".faiss")
        paths = [os.path.join(gallery_dir, rel) for rel in meta["paths"]]
        if meta.get("key") != key or index.ntotal != len(paths):
            return None
        return index, paths, [tuple(s) for s in meta["skipped"]]
    except (OSError, RuntimeError, ValueError, KeyError):
        return None  # A damaged entry is rebuilt by the caller.


def write_entry(
    prefix: str,
    key: str,
    gallery_dir: str,
    index: object,
    paths: Sequence[str],
    skipped: Sequence[tuple[str, str]],
    description: str,
) -> None:
    """Write the cache entry at ``prefix``, each file atomically (temp file + rename).

    Temporary names carry the process id, so two searches writing the same entry at once each
    rename a whole file of their own; both write the same contents for the same key.

    Args:
      prefix: from :func:`entry_prefix`; its folder must exist.
      key: from :func:`cache_key`.
      gallery_dir: the absolute gallery folder the paths are stored relative to.
      index: the faiss index, one row per path.
      paths: absolute gallery paths in row order.
      skipped: [(path, reason)] gallery files left out.
      description: the model, for a reader of the JSON.
    """
    import faiss

    tmp = f".tmp{os.getpid()}"
    faiss.write_index(index, prefix + ".faiss" + tmp)
    os.replace(prefix + ".faiss" + tmp, prefix + ".faiss")
    meta = {
        "key": key,
        "model": description,
        "paths": [os.path.relpath(p, gallery_dir) for p in paths],
        "skipped": [list(s) for s in skipped],
    }
    with open(prefix + ".json" + tmp, "w") as f:
        json.dump(meta, f)
    os.replace(prefix + ".json" + tmp, prefix + ".json")
