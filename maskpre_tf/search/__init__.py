"""Gallery search: embed a folder of person crops once, rank query crops against it, draw results.

``python -m maskpre_tf.search --run_dir=RUN_DIR --gallery=DIR --query=IMG_OR_DIR --top_k=10``

* The model is a training run (``--run_dir``, the folder the run was trained into) or an
  exported SavedModel (``--saved_model``: a version directory holding ``saved_model.pb``, or
  the model base path, whose highest version is used), loaded by
  :func:`maskpre_tf.inference.load_embedder`, which tells the two apart by their files (so the
  earlier ``--model``, now an alias of ``--run_dir``, still takes either). Either way images
  are embedded through the export's ``serving_default`` graph (JPEG/PNG bytes → decode,
  resize, the weights' own normalisation → embedding), i.e. exactly what TF Serving computes.
* Gallery embeddings are cached in ``--cache_dir`` (default ``<gallery>/.maskpre_cache``; when
  the gallery folder is read-only, ``<results_dir>/.maskpre_cache``) as a faiss ``IndexFlatIP``
  (inner product = cosine similarity on the L2-normalised embeddings) plus a JSON file list. The
  cache key hashes the model's content and every gallery file's relative path, size and mtime,
  so a changed model or gallery is embedded again.
* Outputs in ``--results_dir`` (earlier ``--output_dir``; not a training run's folder):
  ``ranked_<query>.png`` (the query, then its top-k matches with their rank and cosine
  similarity; when file names carry Market-1501-style labels ``<pid>_c<cam>...`` on both
  sides, correct matches are outlined green and wrong ones red, grey otherwise), ``index.html``
  showing them all, and ``rankings.json``.
* Unreadable or undecodable files are reported (count and examples) and skipped.

Modules: :mod:`~maskpre_tf.search.files` (image listing, labels, folder checks),
:mod:`~maskpre_tf.search.embed` (embedding files, skipping bad ones),
:mod:`~maskpre_tf.search.cache` (the embedding cache), :mod:`~maskpre_tf.search.index` (the
faiss gallery index and ranking), :mod:`~maskpre_tf.search.render` (ranked-list PNGs),
:mod:`~maskpre_tf.search.page` (the HTML page), :mod:`~maskpre_tf.search.run` (the whole
search) and ``__main__`` (the command line). Their public names are importable from here;
each module loads when one of its names is first used (:mod:`maskpre_tf.lazy`).
"""

from maskpre_tf.lazy import lazy_attributes

# Public name -> the submodule that defines it.
_MODULE_OF = {
    "CACHE_DIRNAME": "cache",
    "cache_key": "cache",
    "default_cache_dir": "cache",
    "embed_files": "embed",
    "report_skipped": "embed",
    "is_match": "files",
    "list_images": "files",
    "parse_label": "files",
    "GalleryIndex": "index",
    "build_gallery_index": "index",
    "rank": "index",
    "write_html": "page",
    "CAPTION_HEIGHT": "render",
    "CELL_HEIGHT": "render",
    "CELL_WIDTH": "render",
    "COLOURS": "render",
    "GAP": "render",
    "OUTLINE": "render",
    "draw_ranked_list": "render",
    "render_ranked_list": "render",
    "SearchReport": "run",
    "run_search": "run",
}

__all__ = sorted(_MODULE_OF)
__getattr__, __dir__ = lazy_attributes(__name__, _MODULE_OF)
