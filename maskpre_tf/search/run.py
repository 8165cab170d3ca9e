"""The whole gallery search: embed the gallery (cached), rank the queries, write the outputs."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from maskpre_tf.errors import UserError
from maskpre_tf.inference import Embedder, load_embedder
from maskpre_tf.search.cache import default_cache_dir
from maskpre_tf.search.embed import MAX_EXAMPLES, embed_files, report_skipped
from maskpre_tf.search.files import (
    check_gallery_dir,
    is_match,
    parse_label,
    query_files,
    writable_dir,
)
from maskpre_tf.search.index import GalleryIndex, build_gallery_index, rank
from maskpre_tf.search.page import write_html
from maskpre_tf.search.render import picture_name, render_ranked_list


@dataclass
class SearchReport:
    """What :func:`run_search` produced.

    Attributes:
      rankings: one dict per query: "query", "picture" (PNG file name), "matches"
        [{"path", "similarity", "correct" (bool or None)}] best first.
      html_path: the index.html written.
      gallery_size: embedded gallery images.
      skipped_gallery, skipped_query: [(path, reason)] files left out.
      cache_hit: the gallery embeddings came from the cache.
    """

    rankings: list[dict]
    html_path: str
    gallery_size: int
    skipped_gallery: list[tuple[str, str]] = field(default_factory=list)
    skipped_query: list[tuple[str, str]] = field(default_factory=list)
    cache_hit: bool = False


def rankings_and_pictures(
    gallery: GalleryIndex,
    queries: Sequence[str],
    scores: np.ndarray,
    rows: np.ndarray,
    output_dir: str,
) -> list[dict]:
    """One ranking dict per query (see :class:`SearchReport`), its picture drawn in output_dir.

    Args:
      gallery: the gallery index the rows refer to.
      queries: the q query paths.
      scores, rows: float32 / int64 [q, k] from :func:`~maskpre_tf.search.index.rank`; row -1
        marks an empty place and is left out.
      output_dir: where the ``ranked_<query>.png`` pictures go.
    """
    used: set[str] = set()
    rankings = []
    for q, path in enumerate(queries):
        q_label = parse_label(path)
        matches = [
            {
                "path": gallery.paths[r],
                "similarity": float(s),
                "correct": is_match(q_label, parse_label(gallery.paths[r])),
            }
            for s, r in zip(scores[q], rows[q], strict=True)
            if r >= 0
        ]
        picture = picture_name(path, used)
        render_ranked_list(
            path,
            [(m["path"], m["similarity"], m["correct"]) for m in matches],
            os.path.join(output_dir, picture),
        )
        rankings.append({"query": path, "picture": picture, "matches": matches})
    return rankings


def summary_lines(
    description: str,
    gallery_dir: str,
    gallery: GalleryIndex,
    rankings: Sequence[dict],
    skipped_query: Sequence[tuple[str, str]],
    top_k: int,
) -> list[str]:
    """The search's summary: model, gallery, queries, top-1 accuracy if labelled, skipped files."""
    known = [r for r in rankings if r["matches"] and r["matches"][0]["correct"] is not None]
    summary = [
        f"model: {description}",
        f"gallery: {os.path.abspath(gallery_dir)}, {len(gallery.paths)} images embedded"
        f"{' (from cache)' if gallery.cache_hit else ''}, "
        f"{len(gallery.skipped)} skipped",
        f"queries: {len(rankings)} ranked, {len(skipped_query)} skipped; top {top_k} shown",
    ]
    if known:
        top1 = sum(r["matches"][0]["correct"] for r in known) / len(known)
        summary.append(f"labelled queries: {len(known)}, top-1 correct {100 * top1:.1f}%")
    skipped_all = [("gallery", s) for s in gallery.skipped]
    skipped_all += [("query", s) for s in skipped_query]
    summary += [f"skipped {kind} file {p}: {why}" for kind, (p, why) in skipped_all[:MAX_EXAMPLES]]
    return summary


def run_search(
    model: str | Embedder,
    gallery_dir: str,
    query: str,
    output_dir: str,
    top_k: int = 10,
    cache_dir: str | None = None,
    batch_size: int = 64,
    verbose: bool = True,
    model_flag: str = "--saved_model",
) -> SearchReport:
    """Embed the gallery (cached), rank every query image, write pictures and index.html.

    Args:
      model: a run directory or SavedModel path, or an already loaded :class:`Embedder`.
      gallery_dir: folder of gallery crops.
      query: one image file or a folder of query crops.
      output_dir: where ranked_<query>.png, index.html and rankings.json go (the program's
        ``--results_dir``).
      top_k: matches shown per query.
      cache_dir: gallery cache folder; None = :func:`default_cache_dir`.
      batch_size: images per forward pass.
      verbose: print a summary.
      model_flag: the flag that named ``model``, for error messages.

    Returns:
      a :class:`SearchReport`.
    """
    if top_k < 1:
        raise UserError(f"--top_k={top_k}: expected a positive number of matches")
    if batch_size < 1:
        raise UserError(f"--batch_size={batch_size}: expected a positive batch size")
    queries = query_files(query)
    check_gallery_dir(gallery_dir)
    if not writable_dir(output_dir):
        raise UserError(f"--results_dir={output_dir}: cannot create or write it; pick another")
    embedder = model if isinstance(model, Embedder) else load_embedder(model, flag=model_flag)
    cache_dir = cache_dir or default_cache_dir(gallery_dir, output_dir)
    gallery = build_gallery_index(embedder, gallery_dir, cache_dir, batch_size)
    report_skipped("gallery", gallery.skipped)
    features, kept, skipped = embed_files(embedder, queries, batch_size)
    report_skipped("query", skipped)
    if not kept:
        raise UserError(
            f"--query={query}: none of the {len(queries)} query image(s) could be read (the "
            "warning above names them); replace them with complete JPEG/PNG files"
        )
    scores, rows = rank(gallery, features, top_k, exclude=kept)
    rankings = rankings_and_pictures(gallery, kept, scores, rows, output_dir)
    summary = summary_lines(embedder.description, gallery_dir, gallery, rankings, skipped, top_k)
    html_path = os.path.join(output_dir, "index.html")
    write_html(html_path, "Gallery search", summary, rankings)
    with open(os.path.join(output_dir, "rankings.json"), "w") as f:
        json.dump({"summary": summary, "rankings": rankings}, f, indent=1)
    if verbose:
        print("\n".join(summary))
        print(f"wrote {len(rankings)} ranked lists and {html_path}")
    return SearchReport(
        rankings, html_path, len(gallery.paths), gallery.skipped, skipped, gallery.cache_hit
    )
