"""Shared helpers of the end-to-end tests: a tiny training run in a subprocess and its checks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_flags(data_dir: str, run_dir: str, **extra) -> list[str]:
    """Flags of a ~20 s run (resnet_small, 64×32, 3 epochs × 3 steps) on a tiny generated set."""
    flags = {
        "dataset": "market1501",
        "data_dir": data_dir,
        "run_dir": run_dir,
        "backbone": "resnet_small",
        "backbone_weights": "none",
        "height": 64,
        "width": 32,
        "pad": 2,
        "batch_size": 16,
        "num_instances": 4,
        "epochs": 3,
        "iters": 3,
        "lr_step": 2,
        "eps": 0.5,
        "k1": 8,
        "k2": 2,
        "min_samples": 2,
        "outliers": "instances",
        "eval_every": 1,
        "precision": "float32",
        "seed": 3,
    }
    flags.update(extra)
    return [f"--{k}={v}" for k, v in flags.items()]


def run_train(
    flags: list[str],
    timeout: int = 600,
    program: list[str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python -m maskpre_tf.train`` (or ``program``) with ``flags``; output captured.

    ``environ``: the child's environment (default: this process's)."""
    base = os.environ if environ is None else environ
    env = dict(base, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, *(program or ["-m", "maskpre_tf.train"]), *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )


def checkpoint_tensor(checkpoint: str, name: str) -> np.ndarray:
    """The value of the checkpointed object ``name`` (e.g. "pseudo_labels", "epoch")."""
    return tf.train.load_checkpoint(checkpoint).get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE")


def assert_same_end(ref_out: str, out: str, epochs: int = 3) -> None:
    """Run ``out`` ended where the uninterrupted ``ref_out`` did: equal pseudo labels and
    teacher weights within float reduction-order noise (the 1- vs 2-replica tolerance)."""
    ref_final = os.path.join(ref_out, "checkpoints", f"ckpt-{epochs}")
    final = os.path.join(out, "checkpoints", f"ckpt-{epochs}")
    np.testing.assert_array_equal(
        checkpoint_tensor(final, "pseudo_labels"), checkpoint_tensor(ref_final, "pseudo_labels")
    )
    ref_reader = tf.train.load_checkpoint(ref_final)
    reader = tf.train.load_checkpoint(final)
    teacher_keys = [
        k
        for k in ref_reader.get_variable_to_shape_map()
        if k.startswith("model/teacher") and "OPTIMIZER" not in k
    ]
    assert teacher_keys
    for key in teacher_keys:
        np.testing.assert_allclose(
            reader.get_tensor(key), ref_reader.get_tensor(key), rtol=1e-3, atol=1e-4
        )
