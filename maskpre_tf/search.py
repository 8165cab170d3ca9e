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
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from maskpre_tf.data.datasets import IMAGE_EXTENSIONS, MARKET_PATTERN
from maskpre_tf.data.images import image_file_problem
from maskpre_tf.errors import UserError, quiet_library_logs, run_main
from maskpre_tf.inference import Embedder, load_embedder

CACHE_DIRNAME = ".maskpre_cache"
# Thumbnail cell of the ranked-list picture (pixels) and its outline width.
CELL_HEIGHT, CELL_WIDTH, OUTLINE, CAPTION_HEIGHT, GAP = 128, 64, 4, 16, 12
COLOURS = {True: (30, 170, 60), False: (215, 40, 40), None: (150, 150, 150)}
_MAX_EXAMPLES = 5


# --------------------------------------------------------------------------------------------
# Files and labels
# --------------------------------------------------------------------------------------------


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


def embed_files(
    embedder: Embedder, paths: Sequence[str], batch_size: int = 64
) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """Embed image files, skipping the ones that cannot be read or decoded.

    A batch that fails to decode is retried one file at a time, so one bad file costs only
    itself.

    Returns:
      (features float32 [n, D] L2-normalised, the n embedded paths in input order,
      skipped [(path, reason)]).
    """
    skipped: list[tuple[str, str]] = []
    readable: list[tuple[str, bytes]] = []
    for path in paths:
        problem = image_file_problem(path)
        if problem is None:
            try:
                with open(path, "rb") as f:
                    readable.append((path, f.read()))
                continue
            except OSError as err:
                problem = f"unreadable ({err.strerror or err})"
        skipped.append((path, problem))
    kept: list[str] = []
    chunks: list[np.ndarray] = []
    for start in range(0, len(readable), batch_size):
        batch = readable[start : start + batch_size]
        try:
            chunks.append(embedder.embed_bytes([data for _, data in batch]))
            kept += [path for path, _ in batch]
            continue
        except tf.errors.InvalidArgumentError:
            pass
        for path, data in batch:
            try:
                chunks.append(embedder.embed_bytes([data]))
                kept.append(path)
            except tf.errors.InvalidArgumentError:
                skipped.append((path, "cannot be decoded as JPEG/PNG"))
    if not chunks:
        return np.zeros((0, 0), np.float32), kept, skipped
    return np.concatenate(chunks).astype(np.float32), kept, skipped


def report_skipped(what: str, skipped: Sequence[tuple[str, str]]) -> None:
    """Print the count and a few examples of skipped files to stderr."""
    if not skipped:
        return
    examples = "; ".join(f"{path}: {reason}" for path, reason in skipped[:_MAX_EXAMPLES])
    more = f" (and {len(skipped) - _MAX_EXAMPLES} more)" if len(skipped) > _MAX_EXAMPLES else ""
    print(
        f"warning: skipped {len(skipped)} unreadable {what} file(s): {examples}{more}",
        file=sys.stderr,
    )


# --------------------------------------------------------------------------------------------
# Gallery index and cache
# --------------------------------------------------------------------------------------------


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


def _writable_dir(path: str) -> bool:
    """Create ``path`` if needed; True if files can be written there."""
    try:
        os.makedirs(path, exist_ok=True)
        return os.access(path, os.W_OK)
    except OSError:
        return False


def build_gallery_index(
    embedder: Embedder, gallery_dir: str, cache_dir: str, batch_size: int = 64
) -> GalleryIndex:
    """Embed ``gallery_dir`` (or load it from the cache) into a faiss IndexFlatIP.

    Raises:
      UserError: the folder is missing or holds no usable image.
    """
    import faiss

    if not os.path.isdir(gallery_dir):
        raise UserError(
            f"--gallery={gallery_dir}: no such directory; expected a folder of "
            "person crops (JPEG/PNG)"
        )
    gallery_dir = os.path.abspath(gallery_dir)
    paths = list_images(gallery_dir)
    if not paths:
        raise UserError(f"--gallery={gallery_dir}: no .jpg/.jpeg/.png files found")
    key = cache_key(embedder.identity, gallery_dir, paths)
    prefix = os.path.join(cache_dir, f"gallery-{key[:20]}")
    if os.path.isfile(prefix + ".json") and os.path.isfile(prefix + ".faiss"):
        try:
            with open(prefix + ".json") as f:
                meta = json.load(f)
            index = faiss.read_index(prefix + ".faiss")
            cached = [os.path.join(gallery_dir, rel) for rel in meta["paths"]]
            if meta.get("key") == key and index.ntotal == len(cached):
                return GalleryIndex(
                    index,
                    cached,
                    [tuple(s) for s in meta["skipped"]],
                    cache_hit=True,
                    cache_path=prefix,
                )
        except (OSError, RuntimeError, ValueError, KeyError):
            pass  # A damaged cache entry is rebuilt below.
    features, kept, skipped = embed_files(embedder, paths, batch_size)
    if not kept:
        raise UserError(
            f"--gallery={gallery_dir}: none of the {len(paths)} images could be "
            f"read (e.g. {skipped[0][0]}: {skipped[0][1]})"
        )
    index = faiss.IndexFlatIP(features.shape[1])
    index.add(np.ascontiguousarray(features, np.float32))
    if _writable_dir(cache_dir):
        # The JSON is written last: its presence marks a complete entry.
        faiss.write_index(index, prefix + ".faiss.tmp")
        os.replace(prefix + ".faiss.tmp", prefix + ".faiss")
        meta = {
            "key": key,
            "model": embedder.description,
            "paths": [os.path.relpath(p, gallery_dir) for p in kept],
            "skipped": [list(s) for s in skipped],
        }
        with open(prefix + ".json.tmp", "w") as f:
            json.dump(meta, f)
        os.replace(prefix + ".json.tmp", prefix + ".json")
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


# --------------------------------------------------------------------------------------------
# Pictures and HTML
# --------------------------------------------------------------------------------------------


def _thumbnail(path: str):
    """The image at ``path`` fitted into a CELL_HEIGHT × CELL_WIDTH cell (PIL RGB)."""
    from PIL import Image, ImageOps

    cell = Image.new("RGB", (CELL_WIDTH, CELL_HEIGHT), (255, 255, 255))
    try:
        with Image.open(path) as img:
            fitted = ImageOps.contain(img.convert("RGB"), (CELL_WIDTH, CELL_HEIGHT))
        cell.paste(fitted, ((CELL_WIDTH - fitted.width) // 2, (CELL_HEIGHT - fitted.height) // 2))
    except OSError:
        pass  # Left blank: the file was readable when embedded but not now.
    return cell


def render_ranked_list(
    query_path: str, results: Sequence[tuple[str, float, bool | None]], out_path: str
) -> tuple[int, int]:
    """Draw the query and its ranked matches side by side and save a PNG.

    Each thumbnail sits in a frame OUTLINE pixels wide: green for a correct match, red for a
    wrong one, grey when labels are unknown (the query's frame is black). Captions give the rank
    and the cosine similarity.

    Args:
      query_path: the query image file.
      results: [(gallery path, similarity, correct or None)] best first.
      out_path: PNG file to write.

    Returns:
      (width, height) of the picture in pixels.
    """
    from PIL import Image, ImageDraw

    frame_w, frame_h = CELL_WIDTH + 2 * OUTLINE, CELL_HEIGHT + 2 * OUTLINE
    width = frame_w * (1 + len(results)) + GAP + 2 * OUTLINE
    height = frame_h + CAPTION_HEIGHT + 2 * OUTLINE
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    cells = [(query_path, "query", (0, 0, 0))]
    cells += [
        (path, f"{i + 1}: {score:.2f}", COLOURS[correct])
        for i, (path, score, correct) in enumerate(results)
    ]
    for i, (path, caption, colour) in enumerate(cells):
        left = OUTLINE + i * frame_w + (GAP if i else 0)
        top = OUTLINE
        draw.rectangle([left, top, left + frame_w - 1, top + frame_h - 1], fill=colour)
        canvas.paste(_thumbnail(path), (left + OUTLINE, top + OUTLINE))
        draw.text((left + 2, top + frame_h + 2), caption, fill=(0, 0, 0))
    canvas.save(out_path, format="PNG")
    return width, height


def _safe_name(path: str, used: set[str]) -> str:
    """A file-name-safe, unique stem for the ranked-list picture of ``path``."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.splitext(os.path.basename(path))[0])
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}_{n}"
    used.add(name)
    return name


def write_html(out_path: str, title: str, summary: Sequence[str], entries: Sequence[dict]) -> None:
    """Write an HTML page with a summary and, per query, its picture and a ranked table."""
    out_dir = os.path.dirname(out_path)
    lines = [
        "<!DOCTYPE html>",
        "<html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif} td,th{padding:2px 8px;text-align:left}"
        " .yes{color:#1ea03c} .no{color:#d72828}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><ul>",
    ]
    lines += [f"<li>{html.escape(line)}</li>" for line in summary]
    lines.append("</ul>")
    for entry in entries:
        lines.append(f"<h2>{html.escape(os.path.basename(entry['query']))}</h2>")
        lines.append(f"<img src='{html.escape(entry['picture'])}' alt='ranked list'>")
        lines.append("<table><tr><th>rank</th><th>similarity</th><th>match</th><th>file</th></tr>")
        for i, match in enumerate(entry["matches"]):
            correct = match["correct"]
            label = {
                True: "<span class='yes'>yes</span>",
                False: "<span class='no'>no</span>",
                None: "?",
            }[correct]
            link = html.escape(os.path.relpath(match["path"], out_dir))
            lines.append(
                f"<tr><td>{i + 1}</td><td>{match['similarity']:.4f}</td>"
                f"<td>{label}</td><td><a href='{link}'>"
                f"{html.escape(os.path.basename(match['path']))}</a></td></tr>"
            )
        lines.append("</table>")
    lines.append("</body></html>")
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# The whole search
# --------------------------------------------------------------------------------------------


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


def default_cache_dir(gallery_dir: str, output_dir: str) -> str:
    """``<gallery>/.maskpre_cache`` when writable, else ``<output_dir>/.maskpre_cache``."""
    preferred = os.path.join(gallery_dir, CACHE_DIRNAME)
    if _writable_dir(preferred):
        return preferred
    return os.path.join(output_dir, CACHE_DIRNAME)


def run_search(
    model: str | Embedder,
    gallery_dir: str,
    query: str,
    output_dir: str,
    top_k: int = 10,
    cache_dir: str | None = None,
    batch_size: int = 64,
    verbose: bool = True,
) -> SearchReport:
    """Embed the gallery (cached), rank every query image, write pictures and index.html.

    Args:
      model: a run directory or SavedModel path, or an already loaded :class:`Embedder`.
      gallery_dir: folder of gallery crops.
      query: one image file or a folder of query crops.
      output_dir: where ranked_<query>.png, index.html and rankings.json go.
      top_k: matches shown per query.
      cache_dir: gallery cache folder; None = :func:`default_cache_dir`.
      batch_size: images per forward pass.
      verbose: print a summary.

    Returns:
      a :class:`SearchReport`.
    """
    if top_k < 1:
        raise UserError(f"--top_k={top_k}: expected a positive number of matches")
    if batch_size < 1:
        raise UserError(f"--batch_size={batch_size}: expected a positive batch size")
    if os.path.isfile(query):
        queries = [os.path.abspath(query)]
    elif os.path.isdir(query):
        queries = list_images(os.path.abspath(query))
        if not queries:
            raise UserError(f"--query={query}: no .jpg/.jpeg/.png files found")
    else:
        raise UserError(f"--query={query}: no such file or directory; give an image or a folder")
    if not os.path.isdir(gallery_dir):
        raise UserError(
            f"--gallery={gallery_dir}: no such directory; expected a folder of "
            "person crops (JPEG/PNG)"
        )
    if not _writable_dir(output_dir):
        raise UserError(f"--output_dir={output_dir}: cannot create or write it; pick another")
    embedder = model if isinstance(model, Embedder) else load_embedder(model)
    cache_dir = cache_dir or default_cache_dir(gallery_dir, output_dir)
    gallery = build_gallery_index(embedder, gallery_dir, cache_dir, batch_size)
    report_skipped("gallery", gallery.skipped)
    features, kept, skipped = embed_files(embedder, queries, batch_size)
    report_skipped("query", skipped)
    if not kept:
        raise UserError(f"--query={query}: none of the {len(queries)} query images could be read")
    scores, rows = rank(gallery, features, top_k, exclude=kept)
    used: set[str] = set()
    rankings = []
    for q, path in enumerate(kept):
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
        picture = f"ranked_{_safe_name(path, used)}.png"
        render_ranked_list(
            path,
            [(m["path"], m["similarity"], m["correct"]) for m in matches],
            os.path.join(output_dir, picture),
        )
        rankings.append({"query": path, "picture": picture, "matches": matches})
    known = [r for r in rankings if r["matches"] and r["matches"][0]["correct"] is not None]
    summary = [
        f"model: {embedder.description}",
        f"gallery: {os.path.abspath(gallery_dir)}, {len(gallery.paths)} images embedded"
        f"{' (from cache)' if gallery.cache_hit else ''}, "
        f"{len(gallery.skipped)} skipped",
        f"queries: {len(kept)} ranked, {len(skipped)} skipped; top {top_k} shown",
    ]
    if known:
        top1 = sum(r["matches"][0]["correct"] for r in known) / len(known)
        summary.append(f"labelled queries: {len(known)}, top-1 correct {100 * top1:.1f}%")
    skipped_all = [("gallery", s) for s in gallery.skipped] + [("query", s) for s in skipped]
    summary += [f"skipped {kind} file {p}: {why}" for kind, (p, why) in skipped_all[:_MAX_EXAMPLES]]
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


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def define_flags() -> None:
    """Define this program's absl flags (called only when run as a program)."""
    from absl import flags

    flags.DEFINE_string("model", None, "training run directory or exported SavedModel")
    flags.DEFINE_string("gallery", None, "folder of gallery crops")
    flags.DEFINE_string("query", None, "a query image or a folder of query crops")
    flags.DEFINE_integer("top_k", 10, "matches per query")
    flags.DEFINE_string("output_dir", "search_results", "where pictures and index.html go")
    flags.DEFINE_string(
        "cache_dir",
        None,
        "gallery embedding cache (default: "
        "<gallery>/.maskpre_cache, or <output_dir>/.maskpre_cache if read-only)",
    )
    flags.DEFINE_integer("batch_size", 64, "images per forward pass")
    flags.DEFINE_bool("debug", False, "show the traceback of user errors")


def main(argv: list[str]) -> None:
    """Program entry: run the search given by the flags."""
    from absl import flags

    del argv
    values = flags.FLAGS
    quiet_library_logs()
    for name in ("model", "gallery", "query"):
        if not values[name].value:
            raise UserError(f"--{name} is required (see --help)")
    run_search(
        values.model,
        values.gallery,
        values.query,
        values.output_dir,
        top_k=values.top_k,
        cache_dir=values.cache_dir,
        batch_size=values.batch_size,
    )


if __name__ == "__main__":
    from absl import app, flags

    define_flags()
    app.run(lambda argv: run_main(main, argv, debug=flags.FLAGS.debug))
