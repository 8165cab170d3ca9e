"""Gallery search: embed a folder of person crops once, rank query crops against it, draw results.

``python -m maskpre_tf.search --model=RUN_OR_EXPORT --gallery=DIR --query=IMG_OR_DIR --top_k=10``

* ``--model`` is a training run directory or an exported SavedModel (a version directory
  holding ``saved_model.pb``, or the model base path, whose highest version is used), loaded by
  :func:`maskpre_tf.inference.load_embedder`. Either way images are embedded through the
  export's ``serving_default`` graph (JPEG/PNG bytes → decode, resize, the weights' own
  normalisation → embedding), i.e. exactly what TF Serving computes.
* Gallery embeddings are cached in ``--cache_dir`` (default ``<gallery>/.maskpre_cache``; when
  the gallery folder is read-only, ``<output_dir>/.maskpre_cache``) as a faiss ``IndexFlatIP``
  (inner product = cosine similarity on the L2-normalised embeddings) plus a JSON file list. The
  cache key hashes the model's content and every gallery file's relative path, size and mtime,
  so a changed model or gallery is embedded again.
* Outputs in ``--output_dir``: ``ranked_<query>.png`` (the query, then its top-k matches with
  their rank and cosine similarity; when file names carry Market-1501-style labels
  ``<pid>_c<cam>...`` on both sides, correct matches are outlined green and wrong ones red, grey
  otherwise), ``index.html`` showing them all, and ``rankings.json``.
* Unreadable or undecodable files are reported (count and examples) and skipped.

Modules: :mod:`~maskpre_tf.search.files` (image listing, labels, folder checks),
:mod:`~maskpre_tf.search.embed` (embedding files, skipping bad ones),
:mod:`~maskpre_tf.search.cache` (the embedding cache), :mod:`~maskpre_tf.search.index` (the
faiss gallery index and ranking), :mod:`~maskpre_tf.search.render` (ranked-list PNGs),
:mod:`~maskpre_tf.search.page` (the HTML page), :mod:`~maskpre_tf.search.run` (the whole
search) and ``__main__`` (the command line). Their public names are importable from here.
"""

from maskpre_tf.search.cache import CACHE_DIRNAME, cache_key, default_cache_dir
from maskpre_tf.search.embed import embed_files, report_skipped
from maskpre_tf.search.files import is_match, list_images, parse_label
from maskpre_tf.search.index import GalleryIndex, build_gallery_index, rank
from maskpre_tf.search.page import write_html
from maskpre_tf.search.render import (
    CAPTION_HEIGHT,
    CELL_HEIGHT,
    CELL_WIDTH,
    COLOURS,
    GAP,
    OUTLINE,
    render_ranked_list,
)
from maskpre_tf.search.run import SearchReport, run_search

__all__ = [
    "CACHE_DIRNAME",
    "CAPTION_HEIGHT",
    "CELL_HEIGHT",
    "CELL_WIDTH",
    "COLOURS",
    "GAP",
    "OUTLINE",
    "GalleryIndex",
    "SearchReport",
    "build_gallery_index",
    "cache_key",
    "default_cache_dir",
    "embed_files",
    "is_match",
    "list_images",
    "parse_label",
    "rank",
    "render_ranked_list",
    "report_skipped",
    "run_search",
    "write_html",
]
