"""Evaluate a trained model: ``python -m maskpre_tf.evaluate --run_dir=RUN_DIR --data_dir=...``.

Loads the deployed encoder of a training run (``--run_dir``: the run's folder, the train
program's ``--run_dir``; ``--checkpoint`` is its earlier name) or an exported SavedModel
(``--saved_model``: a version directory written by ``maskpre_tf.export``)
through :func:`maskpre_tf.inference.load_embedder`, extracts query and gallery features of any
supported dataset, and prints mAP and Rank-1/5/10 with and without k-reciprocal re-ranking
(Market-1501 protocol). With ``--run_dir`` (or ``--plots_dir``) it also draws the CMC curves
and the ranked lists of a few sampled queries (:mod:`maskpre_tf.evaluation.plots`) into
``<run_dir>/evaluation``.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from absl import flags

from maskpre_tf.cli_help import ProgramHelp
from maskpre_tf.errors import UserError, quiet_library_logs, run_app

if TYPE_CHECKING:
    import numpy as np

    from maskpre_tf.data.datasets import ReidDataset

HELP = ProgramHelp(
    "Evaluate a trained model on a labelled query/gallery split: mAP and Rank-1/5/10, with and "
    "without k-reciprocal re-ranking (Market-1501 protocol).",
    ("python -m maskpre_tf.evaluate --run_dir=runs/market --data_dir=data/Market-1501-v15.09.15",),
    (
        ("model (give one):", ("run_dir", "saved_model")),
        ("data:", ("dataset", "data_dir", "query_dir", "gallery_dir")),
        ("evaluation:", ("batch_size", "flip", "output_json", "plots_dir")),
    ),
)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """This program's flags (defined only when it runs); --checkpoint is --run_dir's old name."""
    on = {"flag_values": flag_values}
    flags.DEFINE_string(
        "run_dir",
        "",
        "a training run's folder (the --run_dir it was trained with): its delivered encoder",
        **on,
    )
    flags.DEFINE_alias("checkpoint", "run_dir", **on)
    flags.DEFINE_string(
        "saved_model",
        "",
        "an exported SavedModel: a version folder or the --export_dir of maskpre_tf.export",
        **on,
    )
    flags.DEFINE_string(
        "dataset", "", "auto, market1501, dukemtmc, msmt17 or folder (default: the run's)", **on
    )
    flags.DEFINE_string(
        "data_dir", "", "dataset root (default: the run's own; required with --saved_model)", **on
    )
    flags.DEFINE_string("query_dir", "", "folder layout: labelled query crops", **on)
    flags.DEFINE_string("gallery_dir", "", "folder layout: labelled gallery crops", **on)
    flags.DEFINE_integer("batch_size", 128, "images per forward pass", **on)
    flags.DEFINE_bool("flip", False, "average embeddings of each image and its mirror", **on)
    flags.DEFINE_string("output_json", "", "also write the results to this JSON file", **on)
    flags.DEFINE_string(
        "plots_dir",
        "",
        "folder for the pictures cmc.png and ranked_queries.png (default: <run_dir>/evaluation "
        "with --run_dir, none with --saved_model; 'none': no pictures)",
        **on,
    )
    flags.DEFINE_bool("debug", False, "show the traceback of user errors", **on)


def dataset_of(values: flags.FlagValues) -> tuple[str, str]:
    """(--dataset, --data_dir), the run's own where not given (a run's config.json records them).

    Raises:
      UserError: no --data_dir and no run to take it from.
    """
    if values.data_dir:
        return values.dataset or "auto", values.data_dir
    if not values.run_dir:
        raise UserError(
            "--data_dir is required with --saved_model (a dataset root with query/gallery)"
        )
    from maskpre_tf import runs

    recorded = runs.read_config(values.run_dir).data
    return values.dataset or recorded.dataset, recorded.data_dir


def plots_folder(values: flags.FlagValues) -> str:
    """Where the pictures go: --plots_dir, else ``<run_dir>/evaluation``; "" for none.

    Raises:
      UserError: an explicit --plots_dir cannot be created or written (checked before the
        features are extracted). The default folder is not created yet; when the run's folder
        is read-only a note says so and the evaluation runs without pictures.
    """
    if values.plots_dir.lower() == "none" or not (values.plots_dir or values.run_dir):
        return ""
    if values.plots_dir:
        from maskpre_tf import runs

        runs.prepare_run_dir(values.plots_dir, "--plots_dir")
        return values.plots_dir
    folder = os.path.join(values.run_dir, "evaluation")
    if not os.access(folder if os.path.isdir(folder) else values.run_dir, os.W_OK | os.X_OK):
        print(f"note: {folder} is not writable; no pictures (pass --plots_dir=FOLDER)")
        return ""
    return folder


def load_split(values: flags.FlagValues) -> ReidDataset:
    """The dataset the flags name, checked: labelled query and gallery, every image usable.

    Raises:
      UserError: an unknown dataset, an empty split or an unusable image.
    """
    from maskpre_tf.data import datasets
    from maskpre_tf.data.images import image_file_problem, validate_images

    dataset, data_dir = dataset_of(values)
    datasets.check_dataset_name(dataset, "--dataset")
    options = {}
    if dataset == "folder":
        options = {"query_dir": values.query_dir or None, "gallery_dir": values.gallery_dir or None}
    data = datasets.load_dataset(dataset, data_dir, **options)
    if not data.query or not data.gallery:
        raise UserError(
            f"--data_dir={data_dir}: evaluation needs labelled query and gallery images"
        )
    bad = validate_images([r.path for r in data.query + data.gallery])
    if bad:
        raise UserError(
            f"{len(bad)} query/gallery image(s) cannot be used, e.g. {bad[0]} "
            f"({image_file_problem(bad[0])}); evaluation needs every one: re-copy or delete them"
        )
    return data


def score(
    qf: np.ndarray, gf: np.ndarray, data: ReidDataset
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Score the features with and without re-ranking, printing one line each.

    Args:
      qf, gf: float32 [Nq, D], [Ng, D] L2-normalised query and gallery features.
      data: the dataset (its query and gallery records).

    Returns:
      ({"plain" | "re-ranked": {"mAP", "rank1", "rank5", "rank10"} in [0, 1]},
      {legend entry: CMC float32 [min(50, Ng)]}).
    """
    from maskpre_tf.evaluation.extract import rank_features, rank_metrics

    results, curves = {}, {}
    for rerank in (False, True):
        cmc, mean_ap = rank_features(qf, gf, data.query, data.gallery, rerank=rerank)
        res = rank_metrics(cmc, mean_ap)
        name = "re-ranked" if rerank else "plain"
        results[name] = res
        curves[f"{name}: mAP {res['mAP']:.1%}, Rank-1 {res['rank1']:.1%}"] = cmc
        print(
            f"{'with re-ranking' if rerank else 'plain':>16}: mAP {res['mAP']:.1%}  "
            f"Rank-1 {res['rank1']:.1%}  Rank-5 {res['rank5']:.1%}  "
            f"Rank-10 {res['rank10']:.1%}"
        )
    return results, curves


def write_pictures(
    folder: str, curves: dict[str, np.ndarray], qf: np.ndarray, gf: np.ndarray, data: ReidDataset
) -> None:
    """The evaluation's pictures in ``folder`` and one line naming it; a failed write is a note
    (the figures are already printed and saved)."""
    from maskpre_tf.evaluation.plots import write_evaluation_pictures

    try:
        written = write_evaluation_pictures(folder, curves, qf, gf, data.query, data.gallery)
    except OSError as err:
        print(f"note: pictures not written to {folder} ({err.strerror or err})")
        return
    names = ", ".join(os.path.basename(path) for path in written)
    print(f"pictures: {os.path.abspath(folder)} ({names})")


def evaluate(values: flags.FlagValues) -> dict[str, dict[str, float]]:
    """Evaluate the model the flags name; print, save and draw the results.

    Returns:
      {"plain" | "re-ranked": {"mAP", "rank1", "rank5", "rank10"} in [0, 1]}.
    """
    from maskpre_tf.evaluation.extract import extract_features
    from maskpre_tf.inference import load_embedder

    if bool(values.run_dir) == bool(values.saved_model):
        raise UserError("give exactly one of --run_dir=RUN_DIR or --saved_model=EXPORT_DIR")
    data = load_split(values)
    flag = "--run_dir" if values.run_dir else "--saved_model"
    embedder = load_embedder(values.run_dir or values.saved_model, flag=flag)
    folder = plots_folder(values)
    size = (embedder.height, embedder.width)
    qf, gf = (
        extract_features(
            embedder.embed_pixels,
            [r.path for r in split],
            *size,
            values.batch_size,
            flip=values.flip,
        )
        for split in (data.query, data.gallery)
    )
    results, curves = score(qf, gf, data)
    if values.output_json:
        with open(values.output_json, "w") as f:
            json.dump(results, f, indent=1)
    if folder:
        write_pictures(folder, curves, qf, gf, data)
    return results


def main(argv: list[str]) -> None:
    """Program entry: evaluate the model given by the flags."""
    del argv
    quiet_library_logs()
    evaluate(flags.FLAGS)


if __name__ == "__main__":
    from maskpre_tf.console import prepare_process

    prepare_process()
    define_flags()
    run_app(main, HELP)
