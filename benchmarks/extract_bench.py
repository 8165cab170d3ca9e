"""Feature-extraction throughput: the encoder as trained against its BatchNorm-folded copy.

Clustering embeds every training image each epoch and evaluation every query and gallery image;
both run the encoder in inference mode, where each BatchNormalization is a per-channel affine
map that :mod:`maskpre_tf.models.folding` folds into the convolution before it. In one process,
on the same generated crops, timed in alternating rounds (best of ``--rounds``):

(a) unfolded: ``encoder(x, training=False)`` in a ``tf.function`` (how extraction ran before);
(b) folded: :class:`~maskpre_tf.models.folding.FoldedEncoder`, what training now extracts with.

Both the forward pass alone (pixels already in memory) and ``extract_features`` from JPEG
files (decoding included) are timed. Prints images/s, the speed-up (b)/(a) and the largest
difference between the two embeddings (cosine distance). Random weights with randomised BN
statistics; the cost does not depend on the values.

    python benchmarks/extract_bench.py                        # MobileNetV2 at 128x64
    python benchmarks/extract_bench.py --backbone=resnet50 --height=256 --width=128
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import machine  # this checkout's package first on sys.path

if __name__ == "__main__":
    machine.start()
sys.path.insert(0, os.path.join(machine.REPO, "tests", "support"))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from batchnorm_stats import randomise_batchnorms  # noqa: E402
from flops import forward_flops  # noqa: E402

from maskpre_tf.evaluation.extract import extract_features  # noqa: E402
from maskpre_tf.models.backbones import build_backbone  # noqa: E402
from maskpre_tf.models.encoder import ReidEncoder  # noqa: E402
from maskpre_tf.models.folding import FoldedEncoder  # noqa: E402


def write_crops(folder: str, count: int, height: int, width: int) -> list[str]:
    """``count`` random-noise JPEG crops of height x width; their paths."""
    rng = np.random.default_rng(1)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        path = os.path.join(folder, f"{i:05d}.jpg")
        tf.io.write_file(path, tf.io.encode_jpeg(pixels))
        paths.append(path)
    return paths


def rate(fn, images: int, usage: machine.Usage) -> float:
    """Images per second of one call of ``fn()``, which embeds ``images`` images; its CPU time
    and page faults are added to ``usage``."""
    with usage:
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
    return images / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="end with the figures as JSON")
    args = parser.parse_args()
    here = machine.machine()
    print(here.describe(), flush=True)
    shape = (args.height, args.width, 3)
    encoder = ReidEncoder(build_backbone(args.backbone, shape, weights="none"), "torch")
    encoder(tf.zeros((1, *shape)))
    randomise_batchnorms(encoder.backbone, seed=0)
    unfolded = tf.function(lambda x: encoder(x, training=False), reduce_retracing=True)
    folded = FoldedEncoder(encoder)
    pixels = np.random.default_rng(2).uniform(0, 255, (args.images, *shape)).astype(np.float32)
    batches = [
        tf.constant(pixels[i : i + args.batch_size]) for i in range(0, len(pixels), args.batch_size)
    ]
    gap = max(
        float(np.max(1.0 - np.sum(unfolded(b).numpy() * folded(b).numpy(), axis=1)))
        for b in batches[:2]
    )
    with tempfile.TemporaryDirectory() as folder:
        paths = write_crops(folder, args.images, args.height, args.width)
        runs = {}
        for name, embed in (("unfolded", unfolded), ("folded", folded)):
            runs[name] = (
                lambda e=embed: [e(b).numpy() for b in batches],
                lambda e=embed: extract_features(
                    e, paths, args.height, args.width, args.batch_size
                ),
            )
            for fn in runs[name]:
                fn()  # trace and warm up
        timings = {name: [0.0, 0.0] for name in runs}
        usage = {name: machine.Usage() for name in runs}
        for _ in range(args.rounds):  # alternate, so drift on a shared machine hits both
            for name, (forward, files) in runs.items():
                timings[name][0] = max(timings[name][0], rate(forward, len(pixels), usage[name]))
                timings[name][1] = max(timings[name][1], rate(files, len(paths), usage[name]))
    print(
        f"{args.backbone} at {args.height}x{args.width}, batch {args.batch_size}, "
        f"{args.images} images, best of {args.rounds} alternating rounds"
    )
    flops = forward_flops(encoder.backbone)
    print(f"{flops / 1e9:.3f} GFLOP per image (convolutions of the forward pass)")
    print(
        f"{'':10s} {'forward img/s':>14s} {'from JPEG img/s':>16s} {'forward GFLOP/s':>16s} "
        f"{'of peak':>8s} {'kernel CPU':>11s} {'faults/image':>13s}"
    )
    report = {"machine": here.describe(), "gflop_per_img": flops / 1e9}
    for name, (forward, files) in timings.items():
        gflops = forward * flops / 1e9
        faults = usage[name].minor_faults / (2 * args.rounds * args.images)
        print(
            f"{name:10s} {forward:14.0f} {files:16.0f} {gflops:16.1f} "
            f"{gflops / here.peak_gflops:8.1%} {usage[name].sys_share:11.1%} {faults:13.1f}"
        )
        report[name] = {
            "forward_img_s": forward,
            "jpeg_img_s": files,
            "peak_share": gflops / here.peak_gflops,
            "sys_share": usage[name].sys_share,
            "faults_per_image": faults,
        }
    (f_u, j_u), (f_f, j_f) = timings["unfolded"], timings["folded"]
    print(f"folded / unfolded: forward {f_f / f_u:.2f}x, from JPEG {j_f / j_u:.2f}x")
    print(f"largest cosine distance between the two embeddings: {gap:.2e}")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
