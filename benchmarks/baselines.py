"""Reference points on the demo set: a colour histogram and a random-init network.

Any trained model should beat both. Prints mAP and Rank-1 (Market-1501 protocol) of
- an 8x8x8 RGB colour histogram per image (L1-normalised), compared by the Bhattacharyya
  distance 1 - sum(sqrt(p * q)) and, as a second reading, by cosine distance;
- the demo backbone (resnet_small, 128x64) with random initial weights (3 seeds).

Usage: ``python benchmarks/baselines.py [--data_dir data/demo]`` (the demo set is generated
there if missing).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from maskpre_tf.config import TrainConfig  # noqa: E402
from maskpre_tf.data.datasets import Record, read_market1501  # noqa: E402
from maskpre_tf.data.synth import ensure_demo_data  # noqa: E402
from maskpre_tf.evaluation.extract import evaluate_model  # noqa: E402
from maskpre_tf.evaluation.ranking import evaluate_rank  # noqa: E402
from maskpre_tf.models.encoder import build_encoder  # noqa: E402


def colour_histograms(records: list[Record], bins: int = 8) -> np.ndarray:
    """[N, bins**3] L1-normalised joint RGB histograms of the images."""
    out = np.zeros((len(records), bins**3), np.float64)
    for i, record in enumerate(records):
        pixels = np.asarray(Image.open(record.path).convert("RGB")).reshape(-1, 3)
        cells = (pixels.astype(np.int64) * bins) // 256
        flat = (cells[:, 0] * bins + cells[:, 1]) * bins + cells[:, 2]
        out[i] = np.bincount(flat, minlength=bins**3)
    return out / out.sum(axis=1, keepdims=True)


def ranked(distmat: np.ndarray, query: list[Record], gallery: list[Record]) -> tuple[float, float]:
    cmc, m_ap = evaluate_rank(
        distmat,
        np.array([r.pid for r in query]),
        np.array([r.pid for r in gallery]),
        np.array([r.camid for r in query]),
        np.array([r.camid for r in gallery]),
    )
    return m_ap, float(cmc[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="data/demo")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    ensure_demo_data(args.data_dir)
    data = read_market1501(args.data_dir, verbose=False)
    hq, hg = colour_histograms(data.query), colour_histograms(data.gallery)
    bhattacharyya = 1.0 - np.sqrt(hq) @ np.sqrt(hg).T
    qn = hq / np.linalg.norm(hq, axis=1, keepdims=True)
    gn = hg / np.linalg.norm(hg, axis=1, keepdims=True)
    print(f"{'feature':>40} {'mAP':>7} {'Rank-1':>7}")
    for name, dist in (
        ("colour histogram, Bhattacharyya", bhattacharyya),
        ("colour histogram, cosine", 1.0 - qn @ gn.T),
    ):
        m_ap, r1 = ranked(dist, data.query, data.gallery)
        print(f"{name:>40} {m_ap:7.1%} {r1:7.1%}")
    cfg = TrainConfig().replace(
        backbone="resnet_small", backbone_weights="none", height=128, width=64
    )
    scores = []
    for seed in range(args.seeds):
        keras.utils.set_random_seed(seed)
        encoder = build_encoder(cfg.model, (128, 64, 3))
        embed = tf.function(lambda x, e=encoder: e(x, training=False))
        res = evaluate_model(embed, data.query, data.gallery, cfg.data.height, cfg.data.width)
        scores.append((res["mAP"], res["rank1"]))
        print(
            f"{f'random-init resnet_small (seed {seed})':>40} {res['mAP']:7.1%} {res['rank1']:7.1%}"
        )
    mean = np.mean(scores, axis=0)
    print(f"{'random-init resnet_small, mean':>40} {mean[0]:7.1%} {mean[1]:7.1%}")


if __name__ == "__main__":
    main()
