"""Tests of the MaskPre model's step: EMA teacher, memories, multi-replica equivalence."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from maskpre_tf.config import TrainConfig
from maskpre_tf.models.maskpre import build_maskpre
from maskpre_tf.training.distribute import make_strategy
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
    return build_maskpre(CFG, num_train=16, num_replicas=1, ramp_steps=0)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.uniform(0, 255, (8, *SHAPE)).astype(np.float32),
        "index": np.arange(8, dtype=np.int64),
        "key": np.arange(8, dtype=np.int64) + 1000 * seed,
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


def test_reset_memories_normalises_and_counts(model):
    features = np.zeros((5, 256), np.float32)
    features[[0, 1], 0] = [3.0, 5.0]  # cluster 0: mean (4, 0, ...)
    features[2, 1] = 4.0  # cluster 1
    features[3, 2] = 1.0  # cluster 2
    features[4] = 9.0  # an outlier, in no cluster
    model.reset_memories(features, np.array([0, 0, 1, 2, -1]))
    assert int(model.memory.num_active) == 3
    protos = model.memory.table.numpy()
    assert protos.shape == (16, 256)
    for row, column in ((0, 0), (1, 1), (2, 2)):
        expected = np.zeros(256, np.float32)
        expected[column] = 1.0
        np.testing.assert_allclose(protos[row], expected, rtol=1e-6, atol=1e-7)
    assert not protos[3:].any()
    assert model.camera_memory is None  # not asked for: no per-camera proxies


def _fit(model, steps=2, seed=0):
    dataset = tf.data.Dataset.from_tensors(_batch(seed)).repeat()
    return Trainer(model, tf.distribute.get_strategy(), dataset, steps).train_epoch(0)


def test_step_trains_student_moves_teacher_and_memory(model):
    model.copy_student_to_teacher()
    rng = np.random.default_rng(2)
    model.reset_memories(rng.normal(size=(8, 256)).astype(np.float32), np.repeat(np.arange(4), 2))
    student0 = [w.numpy() for w in model.student.trainable_weights]
    teacher0 = [w.numpy() for w in model.teacher.weights]
    protos0 = model.memory.table.numpy()
    logs = _fit(model)
    assert np.isfinite(logs["loss"]) and logs["mask_loss"] > 0 and logs["cluster_loss"] > 0
    assert logs["consistency_loss"] > 0
    assert any(
        np.abs(w.numpy() - w0).max() > 1e-5
        for w, w0 in zip(model.student.trainable_weights, student0, strict=True)
    )
    assert any(
        np.abs(w.numpy() - w0).max() > 1e-6
        for w, w0 in zip(model.teacher.weights, teacher0, strict=True)
    )
    protos = model.memory.table.numpy()
    assert np.abs(protos[:4] - protos0[:4]).max(axis=1).min() > 0  # every batch cluster moved
    assert np.abs(protos[:4] - protos0[:4]).max() > 1e-4
    np.testing.assert_allclose(np.linalg.norm(protos[:4], axis=1), 1.0, rtol=1e-5)
    assert not protos[4:].any() and int(model.memory.num_active) == 4  # only live rows written


def test_train_step_returns_features_labels_and_index(model):
    batch = {k: tf.constant(v) for k, v in _batch(3).items()}
    batch["index"] = tf.constant([5, 3, 1, 7, 9, 11, 13, 15], tf.int64)
    model.reset_memories(np.eye(4, 256, dtype=np.float32), np.arange(4))
    out = model.train_step(batch)
    assert out.features.shape == (8, 256)
    np.testing.assert_array_equal(out.index.numpy(), batch["index"].numpy())
    np.testing.assert_array_equal(out.labels.numpy(), batch["label"].numpy())
    # the mean of the two views' unit embeddings
    norms = np.linalg.norm(out.features.numpy(), axis=1)
    assert np.all(norms > 0.0) and np.all(norms <= 1.0 + 1e-5)


def test_identical_views_are_computed_once(model):
    # With DropBlock off (inference mode, or drop_rate 0) both views are the same image, so the
    # one-view model must give the two-view losses.
    batch = _batch(4)
    model.reset_memories(np.eye(4, 256, dtype=np.float32), np.arange(4))
    assert model.num_views == 2
    two, two_features = model.compute_losses(
        batch["image"], batch["label"], batch["index"], batch["key"], training=False
    )
    cfg = model.cfg
    try:
        model.cfg = dataclasses.replace(cfg, drop_rate=0.0)
        assert model.num_views == 1
        one, one_features = model.compute_losses(
            batch["image"], batch["label"], batch["index"], batch["key"], training=False
        )
    finally:
        model.cfg = cfg
    for name in ("loss", "cluster_loss", "mask_loss", "consistency_loss"):
        np.testing.assert_allclose(one[name].numpy(), two[name].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one_features.numpy(), two_features.numpy(), rtol=1e-5, atol=1e-6)
    assert float(two["cluster_loss"]) > 0


def test_camera_memory_model_trains_and_updates_its_proxies():
    cfg = CFG.replace(camera_memory=True, memory_update="instance")
    model = build_maskpre(cfg, num_train=16, num_replicas=1, ramp_steps=0)
    rng = np.random.default_rng(5)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3] + [-1] * 8)
    camids = np.array([0, 1, 0, 0, 1, 2, 2, 2] + [0] * 8)
    model.reset_memories(rng.normal(size=(16, 256)).astype(np.float32), labels, camids)
    camera = model.camera_memory
    assert int(camera.num_active) == 6 and int(model.memory.num_active) == 4
    np.testing.assert_array_equal(camera.sample_proxy.numpy()[:8], [0, 1, 2, 2, 3, 4, 5, 5])
    proxies0 = camera.table.numpy()
    logs = _fit(model, steps=1)
    assert np.isfinite(logs["loss"]) and logs["cluster_loss"] > 0
    proxies = camera.table.numpy()
    assert np.abs(proxies[:6] - proxies0[:6]).max(axis=1).min() > 0
    assert np.abs(proxies[:6] - proxies0[:6]).max() > 1e-4
    np.testing.assert_allclose(np.linalg.norm(proxies[:6], axis=1), 1.0, rtol=1e-5)
    assert not proxies[6:].any()


def test_non_finite_loss_stops_the_run():
    # A NaN step leaves NaN weights behind (the run resumes from its checkpoint), so this test
    # gets a model of its own instead of the module's shared one.
    model = build_maskpre(CFG, num_train=16, num_replicas=1, ramp_steps=0)
    model.reset_memories(np.eye(4, 256, dtype=np.float32), np.arange(4))
    batch = _batch()
    batch["image"][0, 0, 0, 0] = np.nan
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    trainer = Trainer(model, tf.distribute.get_strategy(), dataset, 1)
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        trainer.train_epoch(0)


@pytest.mark.parametrize("variant", ["cluster", pytest.param("camera", marks=pytest.mark.slow)])
def test_two_replica_step_matches_one_replica_step(variant):
    """One global batch on 2 replicas (two logical CPUs) gives the 1-replica result (~30 s)."""
    script = os.path.join(HERE, "..", "support", "scripts", "distributed_step.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, script, variant], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["num_replicas"] == 2 and report["variant"] == variant
    assert report["copies"] == [2]  # every compared variable was read on both replicas
    for key, value in report["loss_single"].items():
        assert report["loss_double"][key] == pytest.approx(value, rel=1e-4, abs=1e-6)
    # Two Adam steps move weights by ~lr each; the runs agree to well within that. (Adam
    # normalises each gradient entry, so entries whose gradient is ~0 may differ by ~lr: the
    # comparison is on the whole update's L2 norm.)
    assert report["student_change"] > 1e-3
    assert report["student_rel_l2"] < 2e-3  # a doubled weight decay gives 1.7e-2
    assert report["teacher_diff"] < 0.05 * report["student_change"]
    assert report["memory_change"] > 1e-3
    assert report["memory_diff"] < 1e-4
    # Teacher, BN statistics and memory tables are identical on both replicas.
    assert report["replica_spread"] == 0.0


def test_the_mask_loss_equals_the_dense_head_on_each_masked_view(model):
    # The step shares one 1x1 reduction between the views and predicts only dropped cells;
    # the loss must equal the head run on each whole masked map, read at its dropped cells.
    from maskpre_tf import losses

    batch = _batch(3)
    model.reset_memories(np.eye(4, 256, dtype=np.float32), np.arange(4))
    images = tf.constant(batch["image"])
    got, _ = model.compute_losses(
        images, batch["label"], batch["index"], batch["key"], training=True
    )
    teacher_map = model.teacher.feature_map(images, training=False)
    front = model.masking_map(images, training=True)
    dense = []
    for view in (0, 1):
        masked, keep = model.dropblock(
            front, model.view_keys(batch["key"], view), model.drop_rate(), training=True
        )
        assert 0 < float(tf.reduce_mean(1.0 - keep)) < 1  # some cells dropped, some kept
        predicted = model.mask_head(masked, training=True)
        cells = losses.dropped_cells(keep)
        per_sample = losses.mask_prediction_loss(
            tf.gather_nd(predicted, cells), tf.gather_nd(teacher_map, cells), cells[:, 0], 8
        )
        dense.append(float(tf.reduce_sum(per_sample)) / 8)
    np.testing.assert_allclose(float(got["mask_loss"]), np.mean(dense), rtol=1e-4)
    assert float(got["mask_loss"]) > 0


def test_mirrored_over_one_device_is_the_default_strategy():
    """One device: no MirroredStrategy (its per-device iterator stalls epoch ends)."""
    if len(tf.config.list_logical_devices("GPU")) > 1:
        pytest.skip("several GPUs: --strategy=mirrored mirrors over them")
    strategy = make_strategy("mirrored")
    assert not isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy is tf.distribute.get_strategy()


def test_the_anchor_adds_the_unmasked_views_cluster_loss_and_feeds_the_memory(model):
    batch = _batch(6)
    model.reset_memories(np.eye(4, 256, dtype=np.float32), np.arange(4))
    images = tf.constant(batch["image"])
    args = (images, batch["label"], batch["index"], batch["key"])
    plain, plain_features = model.compute_losses(*args, training=True)
    cfg = model.cfg
    try:
        model.cfg = dataclasses.replace(cfg, anchor_weight=0.5)
        anchored, features = model.compute_losses(*args, training=True)
    finally:
        model.cfg = cfg
    clean = model.student.embed_map(model.masking_map(images, training=True), training=True)
    clean_loss = float(tf.reduce_mean(model.cluster_losses(clean, batch["label"], batch["index"])))
    assert clean_loss > 0
    np.testing.assert_allclose(
        float(anchored["cluster_loss"]), float(plain["cluster_loss"]) + 0.5 * clean_loss, rtol=1e-5
    )
    for name in ("mask_loss", "consistency_loss"):
        np.testing.assert_allclose(float(anchored[name]), float(plain[name]), rtol=1e-5)
    np.testing.assert_allclose(features.numpy(), clean.numpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(features.numpy() - plain_features.numpy()).max() > 1e-3  # views were masked
