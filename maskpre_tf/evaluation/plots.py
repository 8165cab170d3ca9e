"""Pictures of a training run and of an evaluation: training curves, CMC, sampled ranked lists.

* :func:`write_training_curves`: ``<run_dir>/training_curves.png`` from the run's
  ``summary_epochs.json`` (mAP, clusters, outliers and DBSCAN eps per epoch).
* :func:`write_cmc`: the CMC curve (Rank-1..20, in %) of one or more result sets on one axis.
* :func:`write_ranked_queries`: the top-10 gallery matches of a few evenly spaced queries, one
  row each, drawn by the search program's renderer (:mod:`maskpre_tf.search.render`).
* :func:`write_evaluation_pictures`: the evaluate program's two pictures.

matplotlib is an optional extra (``pip install 'maskpre-tf[plots]'``) and is imported only
inside the functions that draw charts; they draw on a non-interactive Agg canvas (no pyplot, no
change of the process's backend). Without matplotlib they print one note and return None: a
missing extra never fails a training run or an evaluation. The ranked-list picture needs only
Pillow.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from maskpre_tf.data.datasets import Record

TRAINING_CURVES = "training_curves.png"
CMC_PICTURE = "cmc.png"
RANKED_PICTURE = "ranked_queries.png"
#: Ranks shown by the CMC picture (1..CMC_RANKS).
CMC_RANKS = 20
#: Queries sampled for the ranked-list picture, and matches shown for each.
SAMPLED_QUERIES, TOP_K = 8, 10
_DPI = 100


def missing_note(picture: str) -> str:
    """The one line printed when matplotlib is missing and ``picture`` cannot be drawn."""
    return (
        f"note: matplotlib is not installed (pip install 'maskpre-tf[plots]'); no {picture} written"
    )


def new_figure(size: tuple[float, float], picture: str):
    """A matplotlib ``Figure`` of ``size`` inches (at 100 dpi) on an Agg canvas, or None.

    Prints :func:`missing_note` for ``picture`` and returns None when matplotlib is missing.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print(missing_note(picture))
        return None
    figure = Figure(figsize=size, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


# ---------------------------------------------------------------------------- training curves


def read_epochs(run_dir: str) -> list[dict]:
    """The per-epoch entries of ``<run_dir>/summary_epochs.json`` ([] if missing or unreadable)."""
    from maskpre_tf import runs

    epochs = runs.read_json(os.path.join(run_dir, runs.SUMMARY_EPOCHS)).get("epochs")
    return [e for e in epochs if isinstance(e, dict)] if isinstance(epochs, list) else []


def _number(value: object) -> float | None:
    """``value`` as a float when it is a finite int or float (not a bool), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def epoch_number(entry: Mapping, position: int) -> int:
    """The entry's 1-based ``epoch``, or ``position + 1`` where it records none."""
    number = _number(entry.get("epoch"))
    return int(number) if number is not None else position + 1


def epoch_series(epochs: Sequence[Mapping], key: str) -> tuple[list[int], list[float]]:
    """(epoch numbers, values) of the entries that hold a finite number under ``key``.

    An entry without an ``epoch`` number counts as epoch (its position + 1).
    """
    xs, ys = [], []
    for i, entry in enumerate(epochs):
        value = _number(entry.get(key))
        if value is not None:
            xs.append(epoch_number(entry, i))
            ys.append(value)
    return xs, ys


def map_keys(epochs: Sequence[Mapping]) -> list[str]:
    """The mAP figures of the epochs: ``mAP`` first, then e.g. ``val_mAP``, ``teacher_mAP``."""
    found = {k for e in epochs for k in e if k == "mAP" or k.endswith("_mAP")}
    return sorted(found, key=lambda k: (k != "mAP", k))


def map_label(key: str) -> str:
    """The legend entry of an mAP figure: test set, validation set or the other network."""
    if key == "mAP":
        return "query/gallery"
    if key == "val_mAP":
        return "validation"
    return f"query/gallery, {key.removesuffix('_mAP')}"


def _epoch_axes(axes, epochs: Sequence[Mapping], title: str, ylabel: str) -> None:
    """Title, labels, a light grid and whole-epoch ticks over all of ``epochs`` (every panel the
    same x range, evaluated epochs or not) of a training-curve panel."""
    from matplotlib.ticker import MaxNLocator

    numbers = [epoch_number(e, i) for i, e in enumerate(epochs)]
    axes.set(title=title, xlabel="epoch", ylabel=ylabel)
    axes.set_xlim(min(numbers) - 0.5, max(numbers) + 0.5)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10], min_n_ticks=1))
    axes.grid(alpha=0.3)


def _panel(axes, epochs: Sequence[Mapping], key: str, title: str, ylabel: str) -> None:
    """One training-curve panel: ``key`` per epoch, or a "not recorded" note."""
    xs, ys = epoch_series(epochs, key)
    if xs:
        axes.plot(xs, ys, marker="o", markersize=3)
    else:
        axes.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=axes.transAxes)
    _epoch_axes(axes, epochs, title, ylabel)


def _map_panel(axes, epochs: Sequence[Mapping]) -> None:
    """The mAP panel: every mAP figure (in %) at the epochs that were evaluated."""
    keys = [k for k in map_keys(epochs) if epoch_series(epochs, k)[0]]
    for key in keys:
        xs, ys = epoch_series(epochs, key)
        axes.plot(xs, [100 * y for y in ys], marker="o", markersize=4, label=map_label(key))
    if keys:
        axes.legend(fontsize="small")
    else:
        axes.text(
            0.5, 0.5, "no evaluated epoch", ha="center", va="center", transform=axes.transAxes
        )
    _epoch_axes(axes, epochs, "mAP (evaluated epochs)", "mAP (%)")


def write_training_curves(run_dir: str) -> str | None:
    """Draw ``<run_dir>/training_curves.png`` from the run's ``summary_epochs.json``.

    A 2 x 2 grid, x = epoch (1-based): mAP in % of the evaluated epochs (and the validation
    set's or the other network's mAP when recorded), the number of clusters, the number of
    outliers (images DBSCAN left out) and the DBSCAN eps (a Jaccard distance in (0, 1)) of each
    epoch's clustering. 1000 x 700 pixels.

    Args:
      run_dir: a training run's folder.

    Returns:
      the PNG's path; None when the run has no finished epoch or matplotlib is missing (then one
      note is printed). Never raises for a missing extra.

    Raises:
      OSError: the PNG cannot be written (a full disk, a read-only folder).
    """
    epochs = read_epochs(run_dir)
    if not epochs:
        return None
    figure = new_figure((10, 7), TRAINING_CURVES)
    if figure is None:
        return None
    grid = figure.subplots(2, 2)
    _map_panel(grid[0, 0], epochs)
    _panel(grid[0, 1], epochs, "num_clusters", "pseudo-label clusters", "clusters (count)")
    _panel(grid[1, 0], epochs, "num_outliers", "outliers (unclustered)", "outliers (images)")
    _panel(grid[1, 1], epochs, "eps", "DBSCAN eps", "eps (Jaccard distance)")
    figure.suptitle(f"training: {os.path.basename(os.path.abspath(run_dir))}")
    path = os.path.join(run_dir, TRAINING_CURVES)
    figure.savefig(path, format="png")
    return path


# ---------------------------------------------------------------------------------------- CMC


def write_cmc(
    cmc: np.ndarray | Sequence[np.ndarray], path: str, label: str | Sequence[str]
) -> str | None:
    """Draw the CMC curve(s) of one or more result sets on one axis and save a PNG.

    Args:
      cmc: float [R] (``cmc[k]``: fraction of queries matched within rank k + 1, as
        :func:`~maskpre_tf.evaluation.ranking.evaluate_rank` returns it), or a list of them.
      path: PNG file to write (640 x 480 pixels).
      label: the legend entry of each curve (a str for one curve, a list for several).

    Returns:
      ``path``; None when matplotlib is missing (one note is printed).
    """
    curves = [cmc] if isinstance(label, str) else list(cmc)
    labels = [label] if isinstance(label, str) else list(label)
    if len(curves) != len(labels):
        raise ValueError(f"{len(curves)} CMC curves but {len(labels)} labels")
    figure = new_figure((6.4, 4.8), os.path.basename(path))
    if figure is None:
        return None
    axes = figure.subplots()
    lowest = 100.0
    for curve, name in zip(curves, labels, strict=True):
        values = 100 * np.asarray(curve, dtype=np.float64)[:CMC_RANKS]
        ranks = np.arange(1, values.size + 1)
        axes.plot(ranks, values, marker="o", markersize=3, label=name)
        lowest = min(lowest, float(values.min(initial=100.0)))
    axes.set(title="CMC", xlabel="rank", ylabel="queries matched within rank (%)")
    axes.set_xlim(0.5, CMC_RANKS + 0.5)
    axes.set_xticks([1, 5, 10, 15, 20])
    axes.set_ylim(max(0.0, 10 * math.floor(lowest / 10) - 5), 101)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    figure.savefig(path, format="png")
    return path


# --------------------------------------------------------------------------- ranked lists


def sample_queries(
    query: Sequence[Record], gallery: Sequence[Record], count: int = SAMPLED_QUERIES
) -> list[int]:
    """Indices of ``count`` evenly spaced queries (all of them when there are fewer).

    Only queries the Market-1501 protocol scores are drawn from: those whose identity appears in
    the gallery under another camera (all queries when none does).
    """
    cameras: dict[int, set[int]] = {}
    for record in gallery:
        cameras.setdefault(record.pid, set()).add(record.camid)
    pool = [i for i, r in enumerate(query) if cameras.get(r.pid, set()) - {r.camid}]
    pool = pool or list(range(len(query)))
    if len(pool) <= count:
        return pool
    return [pool[int(i)] for i in np.linspace(0, len(pool) - 1, count).round()]


def ranked_matches(
    query_feature: np.ndarray,
    gallery_features: np.ndarray,
    record: Record,
    gallery: Sequence[Record],
    top_k: int = TOP_K,
) -> list[tuple[str, float, bool]]:
    """The query's ``top_k`` best gallery matches by cosine similarity, as the protocol ranks.

    Gallery images of the query's identity taken by the query's camera are left out (they are
    not scored by the Market-1501 protocol); equal similarities keep gallery order.

    Args:
      query_feature: float32 [D] L2-normalised.
      gallery_features: float32 [Ng, D] L2-normalised.
      record: the query's record; gallery: the gallery's records [Ng].
      top_k: matches returned.

    Returns:
      [(gallery path, cosine similarity in [-1, 1], same identity)] best first.
    """
    similarity = gallery_features @ query_feature
    g_pids = np.fromiter((r.pid for r in gallery), np.int64, len(gallery))
    g_cams = np.fromiter((r.camid for r in gallery), np.int64, len(gallery))
    order = np.argsort(-similarity, kind="stable")
    junk = (g_pids == record.pid) & (g_cams == record.camid)
    best = order[~junk[order]][:top_k]
    return [(gallery[j].path, float(similarity[j]), bool(g_pids[j] == record.pid)) for j in best]


def write_ranked_queries(
    path: str,
    query_features: np.ndarray,
    gallery_features: np.ndarray,
    query: Sequence[Record],
    gallery: Sequence[Record],
    count: int = SAMPLED_QUERIES,
    top_k: int = TOP_K,
) -> str:
    """Draw the ranked lists of ``count`` sampled queries (:func:`sample_queries`) in one PNG.

    One row per query, drawn by :func:`maskpre_tf.search.render.draw_ranked_list`: the query
    (black frame), then its ``top_k`` matches (:func:`ranked_matches`) framed green when they
    show the query's identity and red otherwise, captioned with rank and cosine similarity.
    Eight rows of ten matches are 812 x 1280 pixels.

    Args:
      path: PNG file to write.
      query_features: float32 [Nq, D]; gallery_features: float32 [Ng, D]; L2-normalised.
      query, gallery: their records, in the same order.
      count, top_k: queries drawn, matches per query.

    Returns:
      ``path``.
    """
    from PIL import Image

    from maskpre_tf.search.render import draw_ranked_list

    rows = [
        draw_ranked_list(
            query[i].path,
            ranked_matches(query_features[i], gallery_features, query[i], gallery, top_k),
        )
        for i in sample_queries(query, gallery, count)
    ]
    width = max((row.width for row in rows), default=1)
    sheet = Image.new("RGB", (width, max(1, sum(row.height for row in rows))), (255, 255, 255))
    top = 0
    for row in rows:
        sheet.paste(row, (0, top))
        top += row.height
    sheet.save(path, format="PNG")
    return path


def write_evaluation_pictures(
    folder: str,
    curves: Mapping[str, np.ndarray],
    query_features: np.ndarray,
    gallery_features: np.ndarray,
    query: Sequence[Record],
    gallery: Sequence[Record],
) -> list[str]:
    """The evaluate program's pictures in ``folder`` (created if needed).

    Args:
      folder: output folder.
      curves: {legend entry: CMC float [R]} of each result set (e.g. plain, re-ranked).
      query_features, gallery_features, query, gallery: as :func:`write_ranked_queries`.

    Returns:
      the files written: ``cmc.png`` (not without matplotlib) and ``ranked_queries.png``.
    """
    os.makedirs(folder, exist_ok=True)
    written = [write_cmc(list(curves.values()), os.path.join(folder, CMC_PICTURE), list(curves))]
    written.append(
        write_ranked_queries(
            os.path.join(folder, RANKED_PICTURE), query_features, gallery_features, query, gallery
        )
    )
    return [path for path in written if path]
