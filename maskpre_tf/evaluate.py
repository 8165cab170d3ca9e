"""Evaluate a trained model: ``python -m maskpre_tf.evaluate --checkpoint=RUN_DIR --data_dir=...``.

Loads the teacher of a training run (``--checkpoint``: the run's ``--output_dir``) or an exported
SavedModel (``--saved_model``: a version directory written by ``maskpre_tf.export``), extracts
query and gallery features of any supported dataset, and prints mAP and Rank-1/5/10 with and
without k-reciprocal re-ranking (Market-1501 protocol).
"""

from __future__ import annotations

import json

import tensorflow as tf
from absl import app, flags

from maskpre_tf.data import datasets
from maskpre_tf.data.pipeline import IMAGENET_MEAN, IMAGENET_STD, validate_images
from maskpre_tf.errors import UserError, run_main
from maskpre_tf.evaluation.extract import evaluate_features, extract_features

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
FLAGS = flags.FLAGS


def load_embedder(checkpoint: str, saved_model: str):
    """(embed function on normalised images [b, H, W, 3] → [b, D], height, width)."""
    if bool(checkpoint) == bool(saved_model):
        raise UserError("give exactly one of --checkpoint=RUN_DIR or --saved_model=EXPORT_DIR")
    if checkpoint:
        from maskpre_tf.models.maskpre import load_teacher

        teacher, cfg = load_teacher(checkpoint)
        embed = tf.function(lambda x: teacher(x, training=False), reduce_retracing=True)
        return embed, cfg.height, cfg.width
    try:
        loaded = tf.saved_model.load(saved_model)
    except (OSError, ValueError) as err:
        raise UserError(f"--saved_model={saved_model}: not a loadable SavedModel ({err})") \
            from err
    meta = json.loads(loaded.signatures["metadata"]()["metadata_json"].numpy().decode())
    signature = loaded.signatures["embed_images"]

    def embed(images: tf.Tensor) -> tf.Tensor:
        # The signature takes 0-255 pixels and normalises in-graph, as serving clients send.
        return signature(images=images * IMAGENET_STD + IMAGENET_MEAN)["embedding"]

    return embed, meta["height"], meta["width"]


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.data_dir:
        raise UserError("--data_dir is required (a dataset root with query and gallery)")
    options = {}
    if FLAGS.dataset == "folder":
        options = {"query_dir": FLAGS.query_dir or None, "gallery_dir": FLAGS.gallery_dir or None}
    data = datasets.load_dataset(FLAGS.dataset, FLAGS.data_dir, **options)
    if not data.query or not data.gallery:
        raise UserError(f"{FLAGS.data_dir}: evaluation needs labelled query and gallery images")
    bad = validate_images([r.path for r in data.query + data.gallery])
    if bad:
        raise UserError(f"{len(bad)} query/gallery images are unreadable, e.g. {bad[0]}")
    embed, height, width = load_embedder(FLAGS.checkpoint, FLAGS.saved_model)
    qf = extract_features(embed, [r.path for r in data.query], height, width,
                          FLAGS.batch_size, flip=FLAGS.flip)
    gf = extract_features(embed, [r.path for r in data.gallery], height, width,
                          FLAGS.batch_size, flip=FLAGS.flip)
    results = {}
    for rerank in (False, True):
        res = evaluate_features(qf, gf, data.query, data.gallery, rerank=rerank)
        results["re-ranked" if rerank else "plain"] = res
        print(f"{'with re-ranking' if rerank else 'plain':>16}: mAP {res['mAP']:.1%}  "
              f"Rank-1 {res['rank1']:.1%}  Rank-5 {res['rank5']:.1%}  "
              f"Rank-10 {res['rank10']:.1%}")
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    app.run(lambda argv: run_main(main, argv, debug=FLAGS.debug))
