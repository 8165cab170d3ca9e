"""Tests for maskpre_tf.models.memory: the row updates (update_rows) and ClusterMemory.

Hand cases use 2-D unit vectors, whose momentum steps are rotations that can be read off. The
camera-aware memory (camera_proxies, CameraMemory) is tested in test_camera_memory.py.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from memory_reference import normalize, step, unit  # noqa: E402
from two_cpus import run_on_two_cpus  # noqa: E402

from maskpre_tf.models.memory import (  # noqa: E402
    UPDATES,
    ClusterMemory,
    momentum_step,
    occurrence,
    update_rows,
)


def _table(rows) -> tf.Variable:
    return tf.Variable(tf.constant(rows, tf.float32), trainable=False)


def _random_case(seed=0, capacity=6, dim=4, batch=12):
    """A unit-row table and a batch with repeated rows, outliers and untouched rows."""
    rng = np.random.default_rng(seed)
    table = normalize(rng.normal(size=(capacity, dim))).astype(np.float32)
    features = rng.normal(size=(batch, dim)).astype(np.float32) * rng.uniform(0.5, 3.0, (batch, 1))
    rows = np.array([0, 2, 2, -1, 0, 5, 2, 0, -1, 3, 5, 2][:batch], np.int32)
    return table, features.astype(np.float32), rows


# -------------------------------------------------------------------------------- update_rows: mean


def test_mean_update_hand_case_writes_only_the_batch_rows():
    table = _table([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.6, 0.8]])
    features = tf.constant([[0.0, 2.0], [0.0, 0.5], [3.0, 0.0], [7.0, 7.0]])
    rows = tf.constant([0, 0, 2, -1])  # the last sample is an outlier
    untouched = table.numpy()[[1, 3]]
    update_rows(table, features, rows, momentum=0.1, mode="mean")
    out = table.numpy()
    # row 0: batch mean of the normalised features (0, 1); 0.1 (1, 0) + 0.9 (0, 1) = (0.1, 0.9)
    # row 2: batch mean (1, 0);                             0.1 (0, 1) + 0.9 (1, 0) = (0.9, 0.1)
    norm = math.hypot(0.1, 0.9)
    np.testing.assert_allclose(out[0], [0.1 / norm, 0.9 / norm], rtol=1e-6)
    np.testing.assert_allclose(out[2], [0.9 / norm, 0.1 / norm], rtol=1e-6)
    # rows of clusters absent from the batch are not written (bit for bit), outliers ignored
    np.testing.assert_array_equal(out[[1, 3]], untouched)


def test_mean_update_takes_one_step_with_the_batch_mean():
    # Row at 0 degrees, two samples at 0 and 90 degrees: their mean points at 45 degrees and one
    # step of momentum 0.5 between two unit vectors lands on the bisector, 22.5 degrees. (Two
    # sample-by-sample steps would end at 45 degrees: see the instance test.)
    table = _table([[0.0, 1.0], [1.0, 0.0]])
    features = tf.constant([[2.0, 0.0], [0.0, 5.0], [1.0, 1.0]])
    update_rows(table, features, tf.constant([1, 1, -1], tf.int64), momentum=0.5, mode="mean")
    out = table.numpy()
    np.testing.assert_allclose(out[1], unit(22.5), rtol=1e-6)
    np.testing.assert_array_equal(out[0], [0.0, 1.0])


def test_mean_update_matches_numpy_on_a_random_case():
    table0, features, rows = _random_case(seed=1)
    table = _table(table0)
    update_rows(table, features, rows, momentum=0.2, mode="mean")
    expected = table0.astype(np.float64)
    directions = normalize(features)
    for row in np.unique(rows[rows >= 0]):
        expected[row] = step(table0[row], directions[rows == row].mean(axis=0), 0.2)
    np.testing.assert_allclose(table.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(table.numpy()[[1, 4]], table0[[1, 4]])


# ---------------------------------------------------------------------------- update_rows: instance


def test_instance_update_hand_case_steps_sample_by_sample():
    # Row at 0 degrees; samples at 0 then 90 degrees with momentum 0.5: the first step keeps the
    # row at 0 degrees, the second lands on the bisector of 0 and 90 degrees, 45 degrees.
    table = _table([[0.0, 1.0], [1.0, 0.0]])
    features = tf.constant([[2.0, 0.0], [0.0, 5.0], [1.0, 1.0]])
    update_rows(table, features, tf.constant([1, 1, -1]), momentum=0.5, mode="instance")
    np.testing.assert_allclose(table.numpy()[1], unit(45.0), rtol=1e-6)
    np.testing.assert_array_equal(table.numpy()[0], [0.0, 1.0])
    # In the other order: 0 -> 45 degrees, then back towards 0: 22.5 degrees.
    table = _table([[0.0, 1.0], [1.0, 0.0]])
    update_rows(table, features[1::-1], tf.constant([1, 1]), momentum=0.5, mode="instance")
    np.testing.assert_allclose(table.numpy()[1], unit(22.5), rtol=1e-6)


def test_instance_update_equals_momentum_steps_in_batch_order():
    table0, features, rows = _random_case(seed=2)
    table = _table(table0)
    update_rows(table, features, rows, momentum=0.3, mode="instance")
    expected = table0.astype(np.float64)
    for feature, row in zip(features, rows, strict=True):
        if row >= 0:
            expected[row] = step(expected[row], feature, 0.3)
    np.testing.assert_allclose(table.numpy(), expected, rtol=1e-5, atol=1e-6)
    # the same through momentum_step, one sample at a time
    stepped = tf.constant(table0)
    for i in np.flatnonzero(rows >= 0):
        row = int(rows[i])
        new = momentum_step(stepped[row : row + 1], features[i : i + 1], 0.3)
        stepped = tf.tensor_scatter_nd_update(stepped, [[row]], new)
    np.testing.assert_allclose(table.numpy(), stepped.numpy(), rtol=1e-6, atol=1e-7)
    # the order matters: the reversed batch ends elsewhere
    reversed_table = _table(table0)
    update_rows(reversed_table, features[::-1], rows[::-1], momentum=0.3, mode="instance")
    assert np.abs(reversed_table.numpy() - table.numpy()).max() > 1e-3


def test_occurrence_counts_earlier_entries_of_the_same_row():
    rows = tf.constant([4, 7, 4, 4, 1, 7, -1, 1])
    assert occurrence(rows).numpy().tolist() == [0, 0, 1, 2, 0, 1, 0, 1]
    assert occurrence(tf.zeros([0], tf.int32)).numpy().tolist() == []


def ops_in(graph) -> list[str]:
    """Types of every op of a graph and of the functions it calls (loop bodies included)."""
    types = [op.type for op in graph.get_operations()]
    for function in graph._functions.values():
        types += ops_in(function.graph)
    return types


def dense_gathers(graph) -> int:
    """Gathers whose input is a dense read of a variable (the fallback of tf.gather)."""
    count = sum(
        op.type == "GatherV2" and op.inputs[0].op.type == "ReadVariableOp"
        for op in graph.get_operations()
    )
    return count + sum(dense_gathers(f.graph) for f in graph._functions.values())


@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("mode", UPDATES)
def test_updates_never_read_the_whole_table(mode, mirrored):
    # After a scatter a variable is in copy-on-read mode: a dense read (ReadVariableOp) would copy
    # all [capacity, D] rows on every call; the updates read only their rows (ResourceGather).
    # A mirrored variable (training's default strategy, even on one device) has no sparse_read,
    # where tf.gather silently falls back to a dense read.
    if mirrored:
        with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
            table = _table(np.eye(6, 4))
    else:
        table = _table(np.eye(6, 4))
    _, features, rows = _random_case(seed=4)
    update = tf.function(lambda f, r: update_rows(table, f, r, 0.3, mode))
    types = ops_in(update.get_concrete_function(tf.constant(features), tf.constant(rows)).graph)
    assert "ReadVariableOp" not in types and "ResourceGather" in types, sorted(set(types))


def test_memory_reads_in_replica_context_are_sparse():
    # Inside strategy.run (the training step) the logits and CAP losses read only live rows.
    from maskpre_tf.models.memory import CameraMemory

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        memory, camera = ClusterMemory(8, 4), CameraMemory(8, 4, 8)
    features = np.eye(8, 4, dtype=np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2, -1, 3])
    with strategy.scope():
        memory.reset(features[:4])
        camera.reset(features, labels, np.arange(8) % 2)

    def step(f, index):
        logits = memory.logits(f, 0.05)
        intra, inter = camera.losses(f, index, 0.07, 2)
        return tf.reduce_sum(logits) + tf.reduce_sum(intra + inter)

    run = tf.function(lambda f, i: strategy.run(step, args=(f, i)))
    graph = run.get_concrete_function(tf.constant(features), tf.range(8)).graph
    assert dense_gathers(graph) == 0 and "ResourceGather" in ops_in(graph)
    assert np.isfinite(run(tf.constant(features), tf.range(8)).numpy())


# -------------------------------------------------------------------------------- update_rows: hard


def test_hard_update_steps_with_the_least_similar_sample():
    # Row 0 at 0 degrees: samples at 10, 80 and 40 degrees; the least similar is at 80 degrees.
    # Row 1 at 90 degrees: samples at 60 and 170 degrees; the least similar is at 170 degrees.
    table = _table([unit(0.0), unit(90.0), [0.0, 1.0]])
    angles = [10.0, 60.0, 80.0, 135.0, 170.0, 40.0]
    features = tf.constant([unit(a) for a in angles]) * tf.constant([[1.0], [2.0], [3.0]] * 2)
    rows = tf.constant([0, 1, 0, -1, 1, 0])
    update_rows(table, features, rows, momentum=0.5, mode="hard")
    out = table.numpy()
    np.testing.assert_allclose(out[0], unit(40.0), rtol=1e-6)  # bisector of 0 and 80
    np.testing.assert_allclose(out[1], unit(130.0), rtol=1e-6)  # bisector of 90 and 170
    np.testing.assert_array_equal(out[2], [0.0, 1.0])


def test_hard_update_ties_take_the_first_sample():
    # Samples at +60 and -60 degrees are equally similar to a row at 0 degrees.
    for first, second in ((60.0, -60.0), (-60.0, 60.0)):
        table = _table([unit(0.0)])
        features = tf.constant([unit(10.0), unit(first), unit(second)])
        update_rows(table, features, tf.constant([0, 0, 0]), momentum=0.5, mode="hard")
        np.testing.assert_allclose(table.numpy()[0], unit(first / 2), rtol=1e-6, atol=1e-7)


def test_hard_update_matches_numpy_on_a_random_case():
    table0, features, rows = _random_case(seed=3)
    table = _table(table0)
    update_rows(table, features, rows, momentum=0.2, mode="hard")
    expected = table0.astype(np.float64)
    directions = normalize(features)
    for row in np.unique(rows[rows >= 0]):
        members = np.flatnonzero(rows == row)
        hardest = members[np.argmin(directions[members] @ table0[row])]
        expected[row] = step(table0[row], features[hardest], 0.2)
    np.testing.assert_allclose(table.numpy(), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- update_rows: any mode


@pytest.mark.parametrize("mode", UPDATES)
def test_update_in_tf_function_equals_eager(mode):
    table0, features, rows = _random_case(seed=4)
    eager = _table(table0)
    update_rows(eager, features, rows, momentum=0.3, mode=mode)
    graph = _table(table0)

    @tf.function(
        input_signature=[tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int32)]
    )
    def update(f, r):
        update_rows(graph, f, r, momentum=0.3, mode=mode)

    update(tf.constant(features), tf.constant(rows))
    np.testing.assert_allclose(graph.numpy(), eager.numpy(), rtol=1e-6, atol=1e-7)
    assert np.abs(graph.numpy() - table0).max() > 1e-3
    # the same trace with another batch size, then all outliers (nothing written)
    update(tf.constant(features[:5]), tf.constant(rows[:5]))
    update_rows(eager, features[:5], rows[:5], momentum=0.3, mode=mode)
    np.testing.assert_allclose(graph.numpy(), eager.numpy(), rtol=1e-6, atol=1e-7)
    before = graph.numpy()
    update(tf.constant(features[:3]), tf.constant([-1, -1, -1]))
    np.testing.assert_array_equal(graph.numpy(), before)
    assert update.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("mode", UPDATES)
def test_updated_rows_stay_unit_norm(mode):
    table0, features, rows = _random_case(seed=5)
    table = _table(table0)
    update_rows(table, features, tf.constant(rows, tf.int64), momentum=0.1, mode=mode)
    np.testing.assert_allclose(np.linalg.norm(table.numpy(), axis=1), 1.0, rtol=1e-6)


def test_unknown_update_mode_is_rejected():
    with pytest.raises(ValueError, match="expected one of mean, instance, hard"):
        update_rows(_table([[1.0, 0.0]]), tf.constant([[1.0, 0.0]]), tf.constant([0]), 0.1, "avg")


@pytest.mark.slow
def test_update_rows_keeps_mirrored_copies_identical(tmp_path):
    # A fresh process with two logical CPUs (~6 s).
    line = run_on_two_cpus(
        tmp_path,
        "mirrored_update",
        """
        from maskpre_tf.models.memory import UPDATES, update_rows
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        rng = np.random.default_rng(0)
        init = rng.normal(size=(6, 4)).astype(np.float32)
        init /= np.linalg.norm(init, axis=1, keepdims=True)
        features = rng.normal(size=(10, 4)).astype(np.float32)
        rows = np.array([0, 2, 2, -1, 0, 5, 2, 0, -1, 3], np.int32)
        for mode in UPDATES:
            plain = tf.Variable(init)
            update_rows(plain, features, rows, 0.3, mode)
            for graph in (False, True):
                with strategy.scope():
                    table = tf.Variable(init)
                def update(f, r):
                    update_rows(table, f, r, 0.3, mode)
                (tf.function(update) if graph else update)(tf.constant(features), rows)
                copies = [v.numpy() for v in strategy.experimental_local_results(table)]
                assert len(copies) == 2 and type(table).__name__ == "MirroredVariable"
                np.testing.assert_array_equal(copies[0], copies[1])
                np.testing.assert_allclose(copies[0], plain.numpy(), rtol=1e-6, atol=1e-6)
                assert np.abs(copies[0] - init).max() > 1e-3
        print("OK", strategy.num_replicas_in_sync)
        """,
    )
    assert line == "OK 2"


# ------------------------------------------------------------------------------------ ClusterMemory


def test_cluster_memory_reset_normalises_counts_and_clears_stale_rows():
    memory = ClusterMemory(capacity=5, dim=2)
    assert int(memory.num_active) == 0 and not memory.table.numpy().any()
    memory.reset(np.array([[3.0, 4.0], [0.0, -2.0], [5.0, 0.0]], np.float32))
    assert int(memory.num_active) == 3
    np.testing.assert_allclose(memory.table.numpy()[:3], [[0.6, 0.8], [0.0, -1.0], [1.0, 0.0]])
    assert not memory.table.numpy()[3:].any()
    memory.reset(np.array([[0.0, 7.0]], np.float32))  # the next epoch finds one cluster
    assert int(memory.num_active) == 1
    np.testing.assert_allclose(memory.table.numpy()[0], [0.0, 1.0])
    assert not memory.table.numpy()[1:].any()


def test_cluster_memory_logits_are_cosines_over_the_live_rows_only():
    memory = ClusterMemory(capacity=4, dim=2)
    memory.reset(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32))
    # rows beyond num_active hold leftovers that must not become logits
    memory.table.scatter_nd_update([[2], [3]], [[0.6, 0.8], [1.0, 0.0]])
    features = tf.constant([[3.0, 4.0], [0.0, -2.0]])
    logits = memory.logits(features, temperature=0.5).numpy()
    # normalize((3, 4)) = (0.6, 0.8); normalize((0, -2)) = (0, -1)
    assert logits.shape == (2, 2)
    np.testing.assert_allclose(logits, [[1.2, 1.6], [0.0, -2.0]], rtol=1e-6)
    memory.num_active.assign(3)
    np.testing.assert_allclose(memory.logits(features, 0.5).numpy()[:, 2], [2.0, -1.6], rtol=1e-6)


def test_cluster_memory_logits_follow_num_active_in_one_trace():
    memory = ClusterMemory(capacity=6, dim=3)
    logits = tf.function(
        lambda f: memory.logits(f, 0.05), input_signature=[tf.TensorSpec([None, 3])]
    )
    features = tf.random.stateless_normal([4, 3], seed=[1, 2])
    memory.reset(np.eye(3, dtype=np.float32)[:2])
    assert logits(features).shape == (4, 2)
    memory.reset(np.eye(3, dtype=np.float32))
    out = logits(features)
    assert out.shape == (4, 3) and logits.experimental_get_tracing_count() == 1
    expected = tf.math.l2_normalize(features, axis=-1).numpy() / 0.05
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5)


def test_cluster_memory_logits_pass_gradients_to_features_only():
    memory = ClusterMemory(capacity=3, dim=2)
    memory.reset(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32))
    features = tf.Variable([[3.0, 4.0]])
    with tf.GradientTape() as tape:
        tape.watch(memory.table)  # a non-trainable variable is not watched by itself
        total = tf.reduce_sum(memory.logits(features, 0.5)[:, 0])
    grad_features, grad_table = tape.gradient(total, [features, memory.table])
    assert grad_table is None
    # d/dx (x_0 / |x|) / 0.5 at (3, 4) = 2 (1/5 - 9/125, -12/125)
    np.testing.assert_allclose(grad_features.numpy(), [[2 * 16 / 125, -2 * 12 / 125]], rtol=1e-5)
