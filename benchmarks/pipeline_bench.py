"""Throughput of the training input pipeline: parallel tf.data map versus a sequential baseline.

Generates Market-1501-like 128×64 JPEG crops in a temporary directory, then measures images/s
of read + decode + resize to 256×128 + augmentation + normalisation + batching through
:func:`maskpre_tf.data.pipeline.make_train_dataset`, once with ``num_parallel_calls=AUTOTUNE``
and once with ``num_parallel_calls=1`` (the baseline), in the same run, alternating the two to
spread the noise of a shared machine. Also times :func:`validate_images` and the P×K sampler.

    python benchmarks/pipeline_bench.py            # 1,000 images, 3 rounds of 8 s each
    python benchmarks/pipeline_bench.py --quick    # small smoke run

Other benchmarks may import :func:`measure_train_pipeline_throughput` and
:func:`write_synthetic_jpegs` from this file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from maskpre_tf.data.images import validate_images  # noqa: E402
from maskpre_tf.data.pipeline import TrainStream, make_train_dataset  # noqa: E402
from maskpre_tf.data.sampler import PKSampler  # noqa: E402


def write_synthetic_jpegs(
    directory: str, count: int, height: int = 128, width: int = 64, seed: int = 0
) -> list[str]:
    """Write ``count`` pedestrian-like JPEG crops (background, coloured torso and legs, noise).

    Args:
      directory: output folder (must exist).
      count: number of files.
      height: image height in pixels.
      width: image width in pixels.
      seed: random seed.

    Returns:
      The file paths, named in Market-1501 style (``0001_c1s1_000001_00.jpg``).
    """
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    paths = []
    for i in range(count):
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        image = top * (1 - rows) + bottom * rows + np.zeros((height, width, 3))
        cx = int(rng.integers(width // 3, 2 * width // 3))
        half = int(rng.integers(width // 6, width // 4))
        image[height // 8 : height // 2, cx - half : cx + half] = rng.integers(0, 256, 3)
        image[height // 2 : height - 4, cx - half : cx + half] = rng.integers(0, 256, 3)
        image += rng.normal(0.0, 12.0, image.shape)
        pixels = np.clip(image, 0, 255).astype(np.uint8)
        path = os.path.join(directory, f"{i // 8 + 1:04d}_c{i % 6 + 1}s1_{i:06d}_00.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def measure_train_pipeline_throughput(
    paths: Sequence[str],
    height: int,
    width: int,
    batch_size: int,
    seconds: float,
    *,
    num_parallel_calls: int | None = None,
    num_instances: int = 4,
) -> float:
    """Images/s delivered by the training pipeline over about ``seconds`` of iteration.

    Pseudo labels group the images in clusters of 8 over 6 cameras. One batch is drawn before
    the clock starts (graph tracing and pipeline start-up are excluded); the dataset is
    re-iterated (next epoch) if it runs out.

    Args:
      paths: image files (JPEG/PNG).
      height: image height fed to the model.
      width: image width fed to the model.
      batch_size: images per batch (a multiple of num_instances).
      seconds: wall-clock measuring time.
      num_parallel_calls: map parallelism; None = AUTOTUNE.
      num_instances: K of the P×K sampler.

    Returns:
      Images per second (float).
    """
    count = len(paths)
    labels = np.arange(count) // 8
    camids = np.arange(count) % 6
    sampler = PKSampler(labels, camids, batch_size, num_instances, seed=0)
    epoch = [0]
    num_batches = max(4, count // batch_size)
    stream = TrainStream(
        paths, lambda: labels, lambda: epoch[0], sampler, num_batches, height, width, seed=0
    )
    dataset = make_train_dataset(stream, num_parallel_calls=num_parallel_calls)
    iterator = iter(dataset)
    next(iterator)
    images = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        try:
            batch = next(iterator)
        except StopIteration:
            epoch[0] += 1
            iterator = iter(dataset)
            continue
        images += int(batch["image"].shape[0])
    return images / (time.perf_counter() - start)


def _time_sampler(num_images: int, batch_size: int, num_instances: int, batches: int) -> float:
    """Seconds for one epoch_indices call over ~num_images/8 clusters."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, max(batch_size // num_instances, num_images // 8), num_images)
    sampler = PKSampler(labels, rng.integers(0, 6, num_images), batch_size, num_instances, 0)
    start = time.perf_counter()
    sampler.epoch_indices(0, batches)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print images/s for both pipelines and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--images", type=int, default=None, help="number of JPEG files")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args(argv)
    count = args.images or (200 if args.quick else 1000)
    seconds = args.seconds or (1.5 if args.quick else 8.0)
    rounds = args.rounds or (1 if args.quick else 3)

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores")
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        paths = write_synthetic_jpegs(directory, count)
        print(f"wrote {count} 128x64 JPEGs in {time.perf_counter() - start:.1f} s")

        start = time.perf_counter()
        bad = validate_images(paths)
        elapsed = time.perf_counter() - start
        print(f"validate_images: {count / elapsed:,.0f} files/s ({len(bad)} bad)")

        sampler_s = _time_sampler(13_000, 256, 16, 220)
        print(f"PKSampler.epoch_indices, 13k images, 220 batches of 16x16: {sampler_s:.3f} s")

        results: dict[str, list[float]] = {"parallel": [], "sequential": []}
        for _ in range(rounds):
            for name, calls in (("parallel", None), ("sequential", 1)):
                results[name].append(
                    measure_train_pipeline_throughput(
                        paths,
                        args.height,
                        args.width,
                        args.batch_size,
                        seconds,
                        num_parallel_calls=calls,
                    )
                )
    parallel = max(results["parallel"])
    sequential = max(results["sequential"])
    paired = [p / s for p, s in zip(results["parallel"], results["sequential"], strict=True)]
    print(
        f"train pipeline, decode+augment+normalise at {args.height}x{args.width}, "
        f"batch {args.batch_size} (best of {rounds} alternating rounds):"
    )
    print(f"  parallel (AUTOTUNE):           {parallel:8.1f} images/s")
    print(f"  sequential (num_parallel=1):   {sequential:8.1f} images/s")
    print(f"  ratio parallel / sequential:   {parallel / sequential:8.2f}x")
    print(f"  per-round ratios:              {', '.join(f'{r:.2f}x' for r in paired)}")


if __name__ == "__main__":
    main()
