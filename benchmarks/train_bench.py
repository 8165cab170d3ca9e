"""Training-step throughput: the full MaskPre step against a plain single-view step.

(a) plain: the online encoder on one (unmasked) view, cluster-contrastive loss, Adam step —
    the cluster-contrast baseline's step;
(b) MaskPre: teacher forward, two DropBlock views, mask-prediction and consistency heads,
    Adam step, prototype and EMA updates (``Trainer._step_fn``, the real training path).
Both use the same backbone, batch and input; each precision (float32, mixed_bfloat16) runs in
the same process, the two steps timed in alternating rounds (best of each). Prints images/s
and the cost ratio (b)/(a) (goal <= 2.3), then the input pipeline's images/s on generated
Market-layout JPEGs against the step's demand (goal >= 3x).

CPU default: resnet_small at 128x64, batch 32. GPU: --backbone=resnet50 --height=256
--width=128 --batch_size=256 --num_instances=16.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from maskpre_tf import losses  # noqa: E402
from maskpre_tf.config import TrainConfig  # noqa: E402
from maskpre_tf.data.pipeline import make_train_dataset  # noqa: E402
from maskpre_tf.data.sampler import PKSampler  # noqa: E402
from maskpre_tf.models.maskpre import build_maskpre  # noqa: E402
from maskpre_tf.training.loop import Trainer  # noqa: E402


def plain_step_fn(model):
    """A compiled single-view step on the same online encoder and optimizer."""
    cfg = model.cfg
    variables = model.student.trainable_variables

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            emb = model.student(batch["image"], training=True)
            per_example = losses.cluster_contrast_loss(
                model.memory.logits(emb, cfg.temperature), batch["label"]
            )
            loss = tf.nn.compute_average_loss(
                per_example, global_batch_size=model.global_batch_size
            )
        grads = tape.gradient(loss, variables)
        model.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    return step


def images_per_second(run, batch_size: int, steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        float(run())
    start = time.perf_counter()
    for _ in range(steps):
        out = run()
    float(out)
    return batch_size * steps / (time.perf_counter() - start)


def bench_precision(cfg: TrainConfig, steps: int, rounds: int) -> tuple[float, float]:
    keras.mixed_precision.set_global_policy(cfg.optim.precision)
    optim, data = cfg.optim, cfg.data
    num_train = 4 * optim.batch_size
    model = build_maskpre(cfg, num_train, num_replicas=1, ramp_steps=0)
    rng = np.random.default_rng(0)
    model.memory.reset(rng.normal(size=(num_train // 4, model.student.channels)))
    batch = {
        "image": tf.constant(
            rng.uniform(0, 255, (optim.batch_size, data.height, data.width, 3)), tf.float32
        ),
        "index": tf.range(optim.batch_size, dtype=tf.int64),
        "key": tf.range(optim.batch_size, dtype=tf.int64),
        "label": tf.constant(
            np.repeat(np.arange(optim.num_ids_per_batch), optim.num_instances), tf.int64
        ),
    }
    plain = plain_step_fn(model)
    trainer = Trainer(
        model, tf.distribute.get_strategy(), tf.data.Dataset.from_tensors(batch).repeat(), steps, []
    )
    iterator = iter(trainer.dist_dataset)
    plain_ips = full_ips = 0.0
    for _ in range(rounds):  # alternate, keep each one's best: the machine is shared
        plain_ips = max(plain_ips, images_per_second(lambda: plain(batch), optim.batch_size, steps))
        full_ips = max(
            full_ips,
            images_per_second(lambda: trainer._step_fn(iterator)["loss"], optim.batch_size, steps),
        )
    keras.mixed_precision.set_global_policy("float32")
    return plain_ips, full_ips


def bench_pipeline(cfg: TrainConfig, batches: int) -> float:
    """images/s of make_train_dataset (decode + augment) on generated 128x64 JPEGs."""
    from maskpre_tf.data.datasets import read_market1501
    from maskpre_tf.data.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, identities=60, cameras=4, seed=0, verbose=False)
        train = read_market1501(tmp, verbose=False).train
        labels = np.array([r.pid for r in train])
        _, labels = np.unique(labels, return_inverse=True)
        optim, data = cfg.optim, cfg.data
        sampler = PKSampler(
            labels,
            np.array([r.camid for r in train]),
            optim.batch_size,
            optim.num_instances,
            seed=0,
        )
        dataset = make_train_dataset(
            [r.path for r in train],
            sampler,
            lambda: 0,
            batches,
            data.height,
            data.width,
            optim.batch_size,
            seed=0,
            pad=data.pad,
        )
        for _ in dataset.take(2):  # warm-up: graph building, file cache
            pass
        start = time.perf_counter()
        count = sum(int(b["image"].shape[0]) for b in dataset)
        return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet_small")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_instances", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    parser.add_argument("--quick", action="store_true", help="few steps, small batch")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.batch_size, args.rounds = 3, 16, 1
    print(
        f"backbone {args.backbone}, {args.height}x{args.width}, batch {args.batch_size}, "
        f"devices {[d.name for d in tf.config.list_logical_devices()]}"
    )
    demand = 0.0
    print(f"{'precision':>16} {'plain img/s':>12} {'MaskPre img/s':>14} {'cost ratio':>11}")
    for precision in args.precisions.split(","):
        cfg = TrainConfig().replace(
            backbone=args.backbone,
            backbone_weights="none",
            height=args.height,
            width=args.width,
            batch_size=args.batch_size,
            num_instances=args.num_instances,
            precision=precision,
            pad=max(1, args.height // 25),
        )
        plain_ips, full_ips = bench_precision(cfg, args.steps, args.rounds)
        demand = max(demand, full_ips)
        print(
            f"{precision:>16} {plain_ips:12.1f} {full_ips:14.1f} "
            f"{plain_ips / full_ips:10.2f}x  (goal <= 2.3x)"
        )
    pipe_ips = bench_pipeline(cfg, batches=max(4, 2 * args.steps))
    print(
        f"input pipeline: {pipe_ips:.1f} img/s = {pipe_ips / demand:.1f}x the fastest "
        "MaskPre step's demand (goal >= 3x)"
    )


if __name__ == "__main__":
    main()
