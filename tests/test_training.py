"""Tests of the MaskPre model's step: EMA teacher, prototypes, multi-replica equivalence."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from maskpre_tf.config import TrainConfig
from maskpre_tf.models.maskpre import build_maskpre
from maskpre_tf.training.loop import NonFiniteLossError, Trainer

CFG = TrainConfig().replace(
    backbone="resnet_small",
    backbone_weights="none",
    height=32,
    width=16,
    batch_size=8,
    num_instances=2,
    drop_rate=0.3,
    lr=1e-3,
    iters=2,
    epochs=1,
)
SHAPE = (CFG.data.height, CFG.data.width, 3)
HERE = os.path.dirname(__file__)


@pytest.fixture(scope="module")
def model():
    return build_maskpre(CFG, num_train=16, num_replicas=1, total_steps=0)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.uniform(0, 255, (8, *SHAPE)).astype(np.float32),
        "index": np.arange(8, dtype=np.int64),
        "label": np.repeat(np.arange(4), 2).astype(np.int64),
    }


def test_ema_momentum_warm_up(model):
    iterations = model.optimizer.iterations
    old = int(iterations.numpy())
    try:
        for step, expected in ((0, 0.0), (1, 0.5), (9, 0.9), (99, 0.99), (5000, 0.999)):
            iterations.assign(step)
            assert float(model.ema_momentum()) == pytest.approx(expected, abs=1e-6)
    finally:
        iterations.assign(old)


def test_update_teacher_is_the_ema_of_every_weight(model):
    rng = np.random.default_rng(1)
    saved = model.student.get_weights()
    for var in model.student.weights + model.teacher.weights:
        var.assign(rng.uniform(0.5, 1.5, size=var.shape).astype(np.float32))
    teacher_before = [w.numpy() for w in model.teacher.weights]
    student = [w.numpy() for w in model.student.weights]
    model.optimizer.iterations.assign(9)  # momentum min(1 - 1/10, 0.999) = 0.9
    model.update_teacher()
    for t_old, s, t_new in zip(teacher_before, student, model.teacher.weights, strict=True):
        np.testing.assert_allclose(t_new.numpy(), 0.9 * t_old + 0.1 * s, rtol=1e-5, atol=1e-6)
    # BN moving statistics are averaged too, not only trainable weights.
    assert any("moving_variance" in w.path for w in model.teacher.weights)
    model.optimizer.iterations.assign(0)
    model.student.set_weights(saved)
    model.copy_student_to_teacher()


def test_reset_prototypes_normalises_and_counts(model):
    centroids = np.array([[3.0] + [0.0] * 255, [0.0, 4.0] + [0.0] * 254], np.float32)
    model.reset_prototypes(centroids)
    assert int(model.num_clusters) == 2
    protos = model.prototypes.numpy()
    np.testing.assert_allclose(protos[0, 0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(protos[1, 1], 1.0, rtol=1e-6)
    assert not protos[2:].any()


def test_step_trains_student_moves_teacher_and_prototypes(model):
    model.copy_student_to_teacher()
    rng = np.random.default_rng(2)
    model.reset_prototypes(rng.normal(size=(4, 256)).astype(np.float32))
    student0 = [w.numpy() for w in model.student.trainable_weights]
    teacher0 = [w.numpy() for w in model.teacher.weights]
    protos0 = model.prototypes.numpy()
    dataset = tf.data.Dataset.from_tensors(_batch()).repeat()
    trainer = Trainer(model, tf.distribute.get_strategy(), dataset, 2, [])
    logs = trainer.fit(0, 1)
    assert np.isfinite(logs["loss"]) and logs["mask_loss"] > 0 and logs["cluster_loss"] > 0
    assert any(
        np.abs(w.numpy() - w0).max() > 1e-5
        for w, w0 in zip(model.student.trainable_weights, student0, strict=True)
    )
    assert any(
        np.abs(w.numpy() - w0).max() > 1e-6
        for w, w0 in zip(model.teacher.weights, teacher0, strict=True)
    )
    assert np.abs(model.prototypes.numpy()[:4] - protos0[:4]).max() > 1e-4
    np.testing.assert_allclose(np.linalg.norm(model.prototypes.numpy()[:4], axis=1), 1.0, rtol=1e-5)


def test_non_finite_loss_stops_the_run(model):
    batch = _batch()
    batch["image"][0, 0, 0, 0] = np.nan
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    trainer = Trainer(model, tf.distribute.get_strategy(), dataset, 1, [])
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        trainer.fit(0, 1)


def test_two_replica_step_matches_one_replica_step():
    """One global batch on 2 replicas (two logical CPUs) gives the 1-replica result."""
    script = os.path.join(HERE, "scripts", "distributed_step.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["num_replicas"] == 2
    for key, value in report["loss_single"].items():
        assert report["loss_double"][key] == pytest.approx(value, rel=1e-4, abs=1e-6)
    # Two Adam steps move weights by ~lr each; the runs agree to well within that. (Adam
    # normalises each gradient entry, so entries whose gradient is ~0 may differ by ~lr: the
    # comparison is on the whole update's L2 norm.)
    assert report["student_change"] > 1e-3
    assert report["student_rel_l2"] < 2e-3  # a doubled weight decay gives 1.7e-2
    assert report["teacher_diff"] < 0.05 * report["student_change"]
    assert report["prototype_diff"] < 1e-4
    # Teacher, BN statistics and prototypes are identical on both replicas.
    assert report["replica_spread"] == 0.0
