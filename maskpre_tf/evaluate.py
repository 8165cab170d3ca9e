"""Evaluate a trained model: ``python -m maskpre_tf.evaluate --checkpoint=RUN_DIR --data_dir=...``.

Loads the deployed encoder of a training run (``--checkpoint``: the run's ``--output_dir``) or
an exported SavedModel (``--saved_model``: a version directory written by ``maskpre_tf.export``)
through :func:`maskpre_tf.inference.load_embedder`, extracts query and gallery features of any
supported dataset, and prints mAP and Rank-1/5/10 with and without k-reciprocal re-ranking
(Market-1501 protocol).
"""

from __future__ import annotations

import json

from absl import flags

from maskpre_tf.errors import UserError, quiet_library_logs, run_app


def define_flags() -> None:
    """This program's flags (defined only when it runs)."""
    flags.DEFINE_string("checkpoint", "", "a training run's output directory")
    flags.DEFINE_string("saved_model", "", "an exported SavedModel directory (one version)")
    flags.DEFINE_string("dataset", "auto", "auto, market1501, dukemtmc, msmt17 or folder")
    flags.DEFINE_string("data_dir", "", "dataset root")
    flags.DEFINE_string("query_dir", "", "folder layout: labelled query crops")
    flags.DEFINE_string("gallery_dir", "", "folder layout: labelled gallery crops")
    flags.DEFINE_integer("batch_size", 128, "images per forward pass")
    flags.DEFINE_bool("flip", False, "average embeddings of each image and its mirror")
    flags.DEFINE_string("output_json", "", "also write the results to this JSON file")
    flags.DEFINE_bool("debug", False, "show the traceback of user errors")


def main(argv: list[str]) -> None:
    """Program entry: evaluate the model given by the flags."""
    del argv
    values = flags.FLAGS
    quiet_library_logs()
    from maskpre_tf.data import datasets
    from maskpre_tf.data.images import image_file_problem, validate_images
    from maskpre_tf.evaluation.extract import evaluate_features, extract_features
    from maskpre_tf.inference import load_embedder

    if not values.data_dir:
        raise UserError("--data_dir is required (a dataset root with query and gallery)")
    datasets.check_dataset_name(values.dataset, "--dataset")
    if bool(values.checkpoint) == bool(values.saved_model):
        raise UserError("give exactly one of --checkpoint=RUN_DIR or --saved_model=EXPORT_DIR")
    options = {}
    if values.dataset == "folder":
        options = {"query_dir": values.query_dir or None, "gallery_dir": values.gallery_dir or None}
    data = datasets.load_dataset(values.dataset, values.data_dir, **options)
    if not data.query or not data.gallery:
        raise UserError(
            f"--data_dir={values.data_dir}: evaluation needs labelled query and gallery images"
        )
    bad = validate_images([r.path for r in data.query + data.gallery])
    if bad:
        raise UserError(
            f"{len(bad)} query/gallery image(s) cannot be used, e.g. {bad[0]} "
            f"({image_file_problem(bad[0])}); evaluation needs every one: re-copy or delete them"
        )
    flag = "--checkpoint" if values.checkpoint else "--saved_model"
    embedder = load_embedder(values.checkpoint or values.saved_model, flag=flag)
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
    run_app(main)
