"""Evaluate a trained model: ``python -m maskpre_tf.evaluate --run_dir=RUN_DIR --data_dir=...``.

Loads the deployed encoder of a training run (``--run_dir``: the run's folder, the train
program's ``--run_dir``; ``--checkpoint`` is its earlier name) or an exported SavedModel
(``--saved_model``: a version directory written by ``maskpre_tf.export``)
through :func:`maskpre_tf.inference.load_embedder`, extracts query and gallery features of any
supported dataset, and prints mAP and Rank-1/5/10 with and without k-reciprocal re-ranking
(Market-1501 protocol).
"""

from __future__ import annotations

import json

from absl import flags

from maskpre_tf.cli_help import ProgramHelp
from maskpre_tf.errors import UserError, quiet_library_logs, run_app

HELP = ProgramHelp(
    "Evaluate a trained model on a labelled query/gallery split: mAP and Rank-1/5/10, with and "
    "without k-reciprocal re-ranking (Market-1501 protocol).",
    ("python -m maskpre_tf.evaluate --run_dir=runs/market --data_dir=data/Market-1501-v15.09.15",),
    (
        ("model (give one):", ("run_dir", "saved_model")),
        ("data:", ("dataset", "data_dir", "query_dir", "gallery_dir")),
        ("evaluation:", ("batch_size", "flip", "output_json")),
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


def main(argv: list[str]) -> None:
    """Program entry: evaluate the model given by the flags."""
    del argv
    values = flags.FLAGS
    quiet_library_logs()
    from maskpre_tf.data import datasets
    from maskpre_tf.data.images import image_file_problem, validate_images
    from maskpre_tf.evaluation.extract import evaluate_features, extract_features
    from maskpre_tf.inference import load_embedder

    if bool(values.run_dir) == bool(values.saved_model):
        raise UserError("give exactly one of --run_dir=RUN_DIR or --saved_model=EXPORT_DIR")
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
    flag = "--run_dir" if values.run_dir else "--saved_model"
    embedder = load_embedder(values.run_dir or values.saved_model, flag=flag)
    size = (embedder.height, embedder.width)
    qf = extract_features(
        embedder.embed_pixels,
        [r.path for r in data.query],
        *size,
        values.batch_size,
        flip=values.flip,
    )
    gf = extract_features(
        embedder.embed_pixels,
        [r.path for r in data.gallery],
        *size,
        values.batch_size,
        flip=values.flip,
    )
    results = {}
    for rerank in (False, True):
        res = evaluate_features(qf, gf, data.query, data.gallery, rerank=rerank)
        results["re-ranked" if rerank else "plain"] = res
        print(
            f"{'with re-ranking' if rerank else 'plain':>16}: mAP {res['mAP']:.1%}  "
            f"Rank-1 {res['rank1']:.1%}  Rank-5 {res['rank5']:.1%}  "
            f"Rank-10 {res['rank10']:.1%}"
        )
    if values.output_json:
        with open(values.output_json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    from maskpre_tf.console import prepare_process

    prepare_process()
    define_flags()
    run_app(main, HELP)
