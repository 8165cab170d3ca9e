"""Ghost BatchNorm's cost: the full training step with ``--bn_group_size`` N against the whole
replica batch's statistics.

Each row is the real training step (``Trainer.step``: MaskPre's forward passes, losses, Adam,
memory and EMA updates) of the same model, batch and input; only the backbone's BatchNorm
statistics differ (over the whole batch, or over groups of N images). The steps are timed in
alternating rounds in one process (best of each), so the printed ratio holds on a shared,
noisy machine. Then the same comparison for one BatchNorm layer alone, forward and backward,
at shapes of the CPU protocol's MobileNetV2.

Default: ``--flagfile=configs/market_cpu.flags`` (MobileNetV2 at 128x64, batch 64; random
weights), groups of 16 and 32.
"""

from __future__ import annotations

import argparse
import time

import machine  # this checkout's package first on sys.path

if __name__ == "__main__":
    machine.start()

import tensorflow as tf  # noqa: E402
from train_bench import LIVE_IMAGES, bench_config, best_of_rounds, step_runner, synthetic_batch  # noqa: E402

from maskpre_tf.models.batchnorm import FusedBatchNormalization  # noqa: E402

# Inputs of BatchNorm layers in MobileNetV2 at 128x64 with batch 64 ([B, H, W, C]).
LAYER_SHAPES = ((64, 32, 16, 96), (64, 16, 8, 144), (64, 8, 4, 960))


def step_speeds(flagfile: str, groups: list[int], steps: int, rounds: int) -> list[float]:
    """images/s of the training step with whole-batch statistics, then with each group size."""
    sizes = [0, *groups]
    runs = []
    for size in sizes:
        cfg = bench_config(flagfile, {"bn_group_size": size}, "float32")
        batch = synthetic_batch(cfg)
        runs.append(step_runner(cfg, max(LIVE_IMAGES, 4 * cfg.optim.batch_size), batch)[0])
    return best_of_rounds(runs, cfg.optim.batch_size, steps, rounds)[0]


def layer_seconds(shape: tuple[int, ...], group: int, calls: int, rounds: int) -> float:
    """Best seconds per forward + backward pass of one training-mode BatchNorm layer."""
    layer = FusedBatchNormalization(group_size=group)
    layer.build((None, *shape[1:]))
    x = tf.random.normal(shape)

    @tf.function
    def run(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            loss = tf.reduce_sum(layer(t, training=True) * t)
        return tape.gradient(loss, [t, *layer.trainable_variables])

    run(x)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            out = run(x)
        out[0].numpy()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flagfile", default="configs/market_cpu.flags")
    parser.add_argument("--groups", default="16,32", help="group sizes, comma-separated")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    args = parser.parse_args()
    groups = [int(g) for g in args.groups.split(",")]
    print(machine.machine().describe(), flush=True)
    speeds = step_speeds(args.flagfile, groups, args.steps, args.rounds)
    print(f"training step ({args.flagfile}), best of {args.rounds} alternating rounds:")
    print(f"{'BatchNorm statistics over':>28} {'img/s':>7} {'step cost':>10}")
    for size, ips in zip([0, *groups], speeds, strict=True):
        label = f"groups of {size}" if size else "the whole replica batch"
        print(f"{label:>28} {ips:7.1f} {speeds[0] / ips:9.2f}x")
    print("one BatchNorm layer, forward + backward, cost against the whole batch:")
    for shape in LAYER_SHAPES:
        whole = layer_seconds(shape, 0, 10, args.rounds)
        costs = ", ".join(
            f"groups of {g}: {layer_seconds(shape, g, 10, args.rounds) / whole:.2f}x"
            for g in groups
            if shape[0] % g == 0
        )
        print(f"  {shape}: whole batch {whole * 1e3:.2f} ms; {costs}")


if __name__ == "__main__":
    main()
