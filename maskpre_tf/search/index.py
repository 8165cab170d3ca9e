"""The gallery index: embedded gallery crops in a faiss IndexFlatIP, and ranking queries on it.

Inner product on the L2-normalised embeddings is cosine similarity. Building the index goes
through the cache of :mod:`maskpre_tf.search.cache`, so an unchanged gallery embedded by an
unchanged model is read back instead of embedded again.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from maskpre_tf.errors import UserError
from maskpre_tf.inference import Embedder
from maskpre_tf.search import cache
from maskpre_tf.search.embed import embed_files
from maskpre_tf.search.files import gallery_files, writable_dir


@dataclass
class GalleryIndex:
    """Embedded gallery: faiss IndexFlatIP over L2-normalised embeddings and its file list.

    Attributes:
      index: ``faiss.IndexFlatIP`` with one row per path.
      paths: absolute paths, row order.
      skipped: [(path, reason)] files left out.
      cache_hit: the embeddings came from the cache.
      cache_path: the cache file prefix used.
    """

    index: object
    paths: list[str]
    skipped: list[tuple[str, str]]
    cache_hit: bool = False
    cache_path: str = ""


def build_gallery_index(
    embedder: Embedder, gallery_dir: str, cache_dir: str, batch_size: int = 64
) -> GalleryIndex:
    """Embed ``gallery_dir`` (or load it from the cache) into a faiss IndexFlatIP.

    Args:
      embedder: the model.
      gallery_dir: folder of gallery crops (searched recursively).
      cache_dir: the cache folder, created if needed; when it cannot be written the gallery is
        embedded without caching (a warning says so).
      batch_size: images per forward pass.

    Raises:
      UserError: the folder is missing or holds no usable image.
    """
    import faiss

    gallery_dir = os.path.abspath(gallery_dir)
    paths = gallery_files(gallery_dir)
    key = cache.cache_key(embedder.identity, gallery_dir, paths)
    prefix = cache.entry_prefix(cache_dir, key)
    cached = cache.read_entry(prefix, key, gallery_dir)
    if cached is not None:
        index, kept, skipped = cached
        return GalleryIndex(index, kept, skipped, cache_hit=True, cache_path=prefix)
    features, kept, skipped = embed_files(embedder, paths, batch_size)
    if not kept:
        raise UserError(
            f"--gallery={gallery_dir}: none of the {len(paths)} images could be "
            f"read (e.g. {skipped[0][0]}: {skipped[0][1]})"
        )
    index = faiss.IndexFlatIP(features.shape[1])
    index.add(np.ascontiguousarray(features, np.float32))
    if writable_dir(cache_dir):
        cache.write_entry(prefix, key, gallery_dir, index, kept, skipped, embedder.description)
    else:
        print(
            f"warning: cannot write the cache folder {cache_dir}; the gallery will be "
            "embedded again next time (pass a writable --cache_dir)",
            file=sys.stderr,
        )
    return GalleryIndex(index, kept, skipped, cache_hit=False, cache_path=prefix)


def rank(
    gallery: GalleryIndex,
    query_features: np.ndarray,
    top_k: int,
    exclude: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k gallery rows by cosine similarity for each query.

    Args:
      gallery: the gallery index.
      query_features: float32 [q, D] L2-normalised.
      top_k: results per query (capped at the gallery size).
      exclude: optional per-query path that must not be returned (the query file itself when it
        also lies in the gallery).

    Returns:
      (scores float32 [q, k], rows int64 [q, k]) best first; k = min(top_k, gallery size).
      Places left empty (``exclude`` took a row and the gallery has no other) hold row -1 and
      score 0.
    """
    k = min(int(top_k), len(gallery.paths))
    extra = 1 if exclude is not None else 0
    scores, rows = gallery.index.search(
        np.ascontiguousarray(query_features, np.float32), min(k + extra, len(gallery.paths))
    )
    if exclude is None:
        return scores[:, :k], rows[:, :k]
    out_s = np.zeros((len(rows), k), np.float32)
    out_r = np.full((len(rows), k), -1, np.int64)
    for q, (s_row, r_row) in enumerate(zip(scores, rows, strict=True)):
        keep = [
            i
            for i, r in enumerate(r_row)
            if r >= 0 and os.path.realpath(gallery.paths[r]) != os.path.realpath(exclude[q])
        ]
        keep = keep[:k]
        out_s[q, : len(keep)] = s_row[keep]
        out_r[q, : len(keep)] = r_row[keep]
    return out_s, out_r
