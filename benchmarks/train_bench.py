"""Training-step throughput: the full MaskPre step against a plain single-view step.

(a) plain: the same protocol with MaskPre's own parts switched off (one view, no mask
    prediction, no consistency) — the cluster-contrast baseline's real training step
    (``Trainer.step``: forward, loss, Adam, memory and EMA updates), built and run under
    the strategy training uses (``make_strategy(--strategy)``);
(b) MaskPre: teacher forward, two DropBlock views, mask-prediction and consistency heads, Adam,
    memory and EMA updates (the same ``Trainer.step``).
Both use the same backbone, batch and input; each precision runs in the same process, the two
steps timed in alternating rounds (best of each). Prints images/s and the cost ratio (b)/(a)
next to the FLOP ratio (its floor at equal efficiency), then the full step at each prototype
capacity of ``--capacities`` with the same live clusters (goal: within 5 % of the smallest),
then the input pipeline's images/s on generated Market-layout JPEGs against the step's demand
(goal >= 3x).

Default: resnet_small at 128x64, batch 32. The real CPU protocol:
``--flagfile=configs/market_cpu.flags`` (MobileNetV2 at 128x64, batch 64, its method settings;
random weights). ResNet-50: --backbone=resnet50 --height=256 --width=128 --batch_size=16.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import machine  # this checkout's package first on sys.path

if __name__ == "__main__":
    machine.start()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from flops import step_flops  # noqa: E402

from maskpre_tf.config import TrainConfig  # noqa: E402
from maskpre_tf.config_flags import config_from_argv  # noqa: E402
from maskpre_tf.data.pipeline import TrainStream, make_train_dataset  # noqa: E402
from maskpre_tf.data.sampler import PKSampler  # noqa: E402
from maskpre_tf.models.maskpre import build_maskpre  # noqa: E402
from maskpre_tf.training.distribute import make_strategy  # noqa: E402
from maskpre_tf.training.loop import Trainer  # noqa: E402

# MaskPre's own parts switched off: the plain single-view step.
PARTS_OFF = {"drop_rate": 0.0, "mask_weight": 0.0, "consistency_weight": 0.0}
# Defaults without a flagfile (the CPU demo's backbone).
DEFAULTS = {
    "backbone": "resnet_small",
    "height": 128,
    "width": 64,
    "batch_size": 32,
    "num_instances": 4,
}
# Training images holding the live clusters (4 per cluster) at every capacity.
LIVE_IMAGES = 2400


def bench_config(flagfile: str | None, overrides: dict, precision: str) -> TrainConfig:
    """The benchmarked configuration: a flagfile's (or the defaults') with random weights."""
    given = {k: v for k, v in overrides.items() if v is not None}
    argv = [f"--flagfile={flagfile}"] if flagfile else []
    argv += [f"--{k}={v}" for k, v in ({} if flagfile else DEFAULTS).items() if k not in given]
    argv += [f"--{k}={v}" for k, v in given.items()]
    argv += ["--backbone_weights=none", f"--precision={precision}"]
    cfg = config_from_argv(argv, resolve_weights=False)
    return cfg.replace(pad=max(1, cfg.data.height // 25)) if not flagfile else cfg


def synthetic_batch(cfg: TrainConfig, seed: int = 0) -> dict[str, tf.Tensor]:
    """One global batch: random pixels [b, H, W, 3] in 0–255, P x K labels, rows 0..b-1."""
    optim, data = cfg.optim, cfg.data
    rng = np.random.default_rng(seed)
    index = np.arange(optim.batch_size)
    return {
        "image": tf.constant(
            rng.uniform(0, 255, (optim.batch_size, data.height, data.width, 3)), tf.float32
        ),
        "index": tf.constant(index, tf.int64),
        "key": tf.constant(index, tf.int64),
        "label": tf.constant(index // optim.num_instances, tf.int64),
    }


def step_runner(cfg: TrainConfig, capacity: int, batch: dict[str, tf.Tensor]):
    """(A zero-argument callable running one real training step and returning its loss tensor,
    the model it trains.)

    The model holds ``capacity`` training images (prototype and proxy tables of that many rows),
    of which the first ``LIVE_IMAGES`` form clusters of ``num_instances`` images on 6 cameras.
    """
    keras.mixed_precision.set_global_policy(cfg.optim.precision)
    strategy = make_strategy(cfg.run.strategy)
    with strategy.scope():  # as a training run builds it
        model = build_maskpre(cfg, capacity, strategy.num_replicas_in_sync, ramp_steps=0)
    rng = np.random.default_rng(1)
    live = min(LIVE_IMAGES, capacity)
    features = np.zeros((capacity, model.student.channels), np.float32)
    features[:live] = rng.normal(size=(live, model.student.channels))
    labels = np.full(capacity, -1, np.int64)
    labels[:live] = np.arange(live) // cfg.optim.num_instances
    camids = np.arange(capacity) % 6
    with strategy.scope():
        model.reset_memories(features, labels, camids)
    trainer = Trainer(model, strategy, tf.data.Dataset.from_tensors(batch).repeat(), 1)
    iterator = iter(trainer.dist_dataset)
    keras.mixed_precision.set_global_policy("float32")
    return (lambda: trainer.step(iterator)["loss"]), model


def images_per_second(
    run, batch_size: int, steps: int, usage: machine.Usage, warmup: int = 3
) -> float:
    """Throughput of ``steps`` calls of ``run`` after ``warmup`` untimed ones (images/s); the
    timed steps' CPU time and page faults are added to ``usage``."""
    for _ in range(warmup):
        float(run())
    with usage:
        start = time.perf_counter()
        for _ in range(steps):
            out = run()
        float(out)
        elapsed = time.perf_counter() - start
    return batch_size * steps / elapsed


def best_of_rounds(
    runs: list, batch_size: int, steps: int, rounds: int
) -> tuple[list[float], list[machine.Usage]]:
    """Each run's best images/s over ``rounds`` alternating rounds (the machine is shared), and
    its CPU time and faults summed over all its timed steps (``rounds x steps``)."""
    best = [0.0] * len(runs)
    usage = [machine.Usage() for _ in runs]
    for _ in range(rounds):
        for i, run in enumerate(runs):
            best[i] = max(best[i], images_per_second(run, batch_size, steps, usage[i]))
    return best, usage


def step_figures(ips: float, usage: machine.Usage, flops: int, steps: int, peak: float) -> dict:
    """One step's figures: images/s, FLOPs per image, GFLOP/s and share of the FMA peak, the
    kernel's share of the CPU time and minor page faults per step (over ``steps`` timed)."""
    return {
        "img_s": ips,
        "gflop_per_img": flops / 1e9,
        "gflop_s": ips * flops / 1e9,
        "peak_share": ips * flops / 1e9 / peak,
        "sys_share": usage.sys_share,
        "faults_per_step": usage.minor_faults / steps,
    }


def bench_precision(cfg: TrainConfig, steps: int, rounds: int, peak: float) -> dict[str, dict]:
    """{"plain": figures, "maskpre": figures} of one precision, at a capacity of 4 batches."""
    batch = synthetic_batch(cfg)
    capacity = max(LIVE_IMAGES, 4 * cfg.optim.batch_size)
    plain_cfg = cfg.replace(**PARTS_OFF)
    plain, plain_model = step_runner(plain_cfg, capacity, batch)
    full, full_model = step_runner(cfg, capacity, batch)
    speeds, usage = best_of_rounds([plain, full], cfg.optim.batch_size, steps, rounds)
    result = {}
    for name, c, model, ips, use in zip(
        ("plain", "maskpre"),
        (plain_cfg, cfg),
        (plain_model, full_model),
        speeds,
        usage,
        strict=True,
    ):
        m = c.maskpre
        teacher = m.mask_weight > 0 or m.consistency_weight > 0
        flops = step_flops(model, m.drop_rate, m.mask_weight, teacher)
        result[name] = step_figures(ips, use, flops, steps * rounds, peak)
    return result


def bench_capacity(cfg: TrainConfig, capacities: list[int], steps: int, rounds: int) -> list:
    """MaskPre images/s at each prototype capacity, the same live clusters in each."""
    batch = synthetic_batch(cfg)
    runs = [step_runner(cfg, capacity, batch)[0] for capacity in capacities]
    return best_of_rounds(runs, cfg.optim.batch_size, steps, rounds)[0]


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
        stream = TrainStream(
            [r.path for r in train],
            lambda: labels,
            lambda: 0,
            sampler,
            batches,
            data.height,
            data.width,
            seed=0,
            pad=data.pad,
        )
        dataset = make_train_dataset(stream)
        for _ in dataset.take(2):  # warm-up: graph building, file cache
            pass
        start = time.perf_counter()
        count = sum(int(b["image"].shape[0]) for b in dataset)
        return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--flagfile", default=None, help="a protocol, e.g. configs/market_cpu.flags"
    )
    for name, kind in (("backbone", str), ("height", int), ("width", int)):
        parser.add_argument(f"--{name}", type=kind, default=None)
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--num_instances", type=int, default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--capacities", default="12936,100000", help="'' skips the comparison")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    parser.add_argument("--pipeline", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", action="store_true", help="end with the figures as JSON")
    parser.add_argument("--quick", action="store_true", help="few steps, small batch")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.batch_size, args.rounds = 3, 16, 1
    here = machine.machine()
    print(here.describe(), flush=True)
    overrides = {
        k: getattr(args, k) for k in ("backbone", "height", "width", "batch_size", "num_instances")
    }
    precisions = args.precisions.split(",")
    cfg = bench_config(args.flagfile, overrides, precisions[0])
    data, optim = cfg.data, cfg.optim
    print(
        f"backbone {cfg.model.backbone}, {data.height}x{data.width}, batch {optim.batch_size} "
        f"({optim.num_instances} per cluster), memory {cfg.maskpre.memory_update}"
        f"{', camera proxies' if cfg.maskpre.camera_memory else ''}, "
        f"devices {[d.name for d in tf.config.list_logical_devices()]}"
    )
    report = {"machine": here.describe(), "precisions": {}}
    print(
        f"{'precision':>16} {'step':>8} {'img/s':>7} {'GFLOP/img':>9} {'GFLOP/s':>8} "
        f"{'of peak':>7} {'kernel CPU':>10} {'faults/step':>11}"
    )
    for precision in precisions:
        figures = bench_precision(
            bench_config(args.flagfile, overrides, precision),
            args.steps,
            args.rounds,
            here.peak_gflops,
        )
        report["precisions"][precision] = figures
        for name, f in figures.items():
            print(
                f"{precision:>16} {name:>8} {f['img_s']:7.1f} {f['gflop_per_img']:9.3f} "
                f"{f['gflop_s']:8.1f} {f['peak_share']:7.1%} {f['sys_share']:10.1%} "
                f"{f['faults_per_step']:11.0f}"
            )
        ratio = figures["plain"]["img_s"] / figures["maskpre"]["img_s"]
        flops = figures["maskpre"]["gflop_per_img"] / figures["plain"]["gflop_per_img"]
        print(
            f"{precision:>16} MaskPre cost {ratio:.2f}x the plain step; its FLOPs {flops:.2f}x "
            "(the floor of the cost ratio at equal efficiency)"
        )
    demand = max(f["maskpre"]["img_s"] for f in report["precisions"].values())
    if args.capacities:
        capacities = [int(c) for c in args.capacities.split(",")]
        speeds = bench_capacity(cfg, capacities, args.steps, args.rounds)
        for capacity, ips in zip(capacities, speeds, strict=True):
            print(
                f"capacity {capacity:>7} rows ({min(LIVE_IMAGES, capacity) // optim.num_instances}"
                f" live clusters, {precisions[0]}): {ips:.1f} img/s, step time "
                f"{speeds[0] / ips:.3f}x the first (goal <= 1.05x)"
            )
    if args.pipeline:
        pipe_ips = bench_pipeline(cfg, batches=max(4, 2 * args.steps))
        report["pipeline_img_s"] = pipe_ips
        print(
            f"input pipeline: {pipe_ips:.1f} img/s = {pipe_ips / demand:.1f}x the fastest "
            "MaskPre step's demand (goal >= 3x)"
        )
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
