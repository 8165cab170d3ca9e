"""Epoch ends: seconds to tear down a training epoch's input iterator, as trained before and now.

Each round iterates the real training pipeline (:func:`make_train_dataset` on generated
Market-layout JPEGs) through the distributed dataset training uses, one batch per call of a
``tf.function`` with a pause between calls that stands in for the training step, for
``--seconds``; then it drops the iterator as an epoch's end does and times that. Two set-ups
alternate in the same run:

* ``before``: ``MirroredStrategy`` over the one device and the pipeline with tf.data's
  autotuning on (what training ran before);
* ``now``: ``make_strategy("mirrored")`` (the default strategy on one device) and the pipeline
  as built (:func:`pipeline_options`: no autotuning thread).

Prints each round's teardown seconds, the mean and worst per set-up and their ratio. The
stall, when it strikes, lasts until the autotuner's next wake-up, so it grows with the epoch's
length (up to 60 s), and it strikes in some rounds only (about one in two ``before`` rounds
on a 2-core EPYC; with short pauses, rarely): a short ``--seconds`` shows smaller stalls.

    python benchmarks/teardown_bench.py                 # 4 rounds of 30 s per set-up
    python benchmarks/teardown_bench.py --quick         # 2 rounds of 8 s
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence

import machine  # this checkout's package first on sys.path

if __name__ == "__main__":
    machine.start()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from pipeline_bench import write_synthetic_jpegs  # noqa: E402

from maskpre_tf.data.pipeline import TrainStream, make_train_dataset  # noqa: E402
from maskpre_tf.data.sampler import PKSampler  # noqa: E402
from maskpre_tf.training.distribute import make_strategy  # noqa: E402


def _setups(stream: TrainStream) -> dict:
    """{name: distributed dataset} for the two set-ups (see the module docstring)."""
    autotuned = tf.data.Options()
    autotuned.autotune.enabled = True
    before = tf.distribute.MirroredStrategy(["/cpu:0"])
    now = make_strategy("mirrored")
    return {
        "before": before.distribute_datasets_from_function(
            lambda ctx: make_train_dataset(stream, ctx).with_options(autotuned)
        ),
        "now": now.distribute_datasets_from_function(lambda ctx: make_train_dataset(stream, ctx)),
    }


def teardown_seconds(dataset, seconds: float, pause: float) -> float:
    """Seconds to drop an iterator of ``dataset`` after ~``seconds`` of paced iteration."""
    next_batch = tf.function(lambda iterator: next(iterator)["image"])
    iterator = iter(dataset)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        next_batch(iterator)
        time.sleep(pause)
    start = time.perf_counter()
    del iterator
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> None:
    """Run the alternating rounds and print the teardown seconds of both set-ups."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0, help="iteration per round")
    parser.add_argument("--pause", type=float, default=2.5, help="seconds between batches")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 8 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds = 2, 8.0
    print(machine.describe())
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_synthetic_jpegs(tmp, 256)
        labels = np.arange(len(paths)) // 8
        sampler = PKSampler(labels, np.arange(len(paths)) % 6, 32, 4, seed=0)
        # More batches than a round draws: every round ends mid-epoch, as a paced epoch would.
        stream = TrainStream(paths, lambda: labels, lambda: 0, sampler, 10_000, 128, 64, seed=0)
        setups = _setups(stream)
        times: dict[str, list[float]] = {name: [] for name in setups}
        for round_ in range(args.rounds):
            for name, dataset in setups.items():
                times[name].append(teardown_seconds(dataset, args.seconds, args.pause))
                print(f"round {round_ + 1} {name:6s} teardown {times[name][-1]:6.2f} s")
    for name, values in times.items():
        print(f"{name:6s} mean {statistics.mean(values):6.2f} s, worst {max(values):6.2f} s")
    ratio = statistics.mean(times["before"]) / max(statistics.mean(times["now"]), 1e-3)
    print(f"teardown before / now (mean): {ratio:.0f}x")


if __name__ == "__main__":
    main()
