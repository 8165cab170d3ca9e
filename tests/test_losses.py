"""Tests for maskpre_tf.losses on small hand-made inputs whose values are worked out by hand."""

from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from maskpre_tf.losses import (  # noqa: E402
    batch_hard_triplet_loss,
    cluster_contrast_loss,
    cross_entropy_label_smoothing,
    cross_view_consistency_loss,
    dropped_cells,
    mask_prediction_loss,
    pairwise_euclidean_distance,
)

# Cosine logits of normalize((3, 4)) = (0.6, 0.8) against the prototypes (1, 0) and (0, 1), over
# a temperature of 0.5 (the logits the cluster memory hands to the loss).
LOGITS = tf.constant([[1.2, 1.6], [1.2, 1.6]])


# ----------------------------------------------------------------------------- cluster contrast


def test_cluster_contrast_loss_hand_values():
    loss = cluster_contrast_loss(LOGITS, tf.constant([0, 1])).numpy()
    # -log softmax = log(1 + e^(other - own))
    np.testing.assert_allclose(loss, [math.log1p(math.exp(0.4)), math.log1p(math.exp(-0.4))])


def test_cluster_contrast_softmax_runs_over_every_given_logit():
    # The logits are those of the live clusters only: a third column is a third live cluster.
    three = tf.constant([[1.2, 1.6, 2.0]])
    loss = cluster_contrast_loss(three, tf.constant([0])).numpy()
    expected = -1.2 + math.log(math.exp(1.2) + math.exp(1.6) + math.exp(2.0))
    np.testing.assert_allclose(loss, [expected], rtol=1e-6)


def test_cluster_contrast_outliers_contribute_nothing():
    logits = tf.constant([[1.2, 1.6], [0.0, -2.0], [2.0, 1.0], [0.5, 0.5]])
    labels = tf.constant([0, -1, 2, 1])  # -1: DBSCAN outlier; 2 >= K = 2: no such cluster
    loss = cluster_contrast_loss(logits, labels).numpy()
    np.testing.assert_array_equal(loss[1:3], [0.0, 0.0])
    np.testing.assert_allclose(loss[[0, 3]], [math.log1p(math.exp(0.4)), math.log(2.0)], rtol=1e-6)
    beyond = cluster_contrast_loss(LOGITS, tf.constant([2, 5], tf.int64))
    np.testing.assert_array_equal(beyond.numpy(), [0.0, 0.0])


def test_cluster_contrast_is_float32_for_bfloat16_inputs_and_has_gradients():
    logits = tf.Variable(tf.constant([[1.2, 1.6], [0.0, -2.0]], tf.bfloat16))
    with tf.GradientTape() as tape:
        loss = cluster_contrast_loss(logits, tf.constant([0, 1]))
        total = tf.reduce_sum(loss)
    assert loss.dtype == tf.float32 and loss.shape == (2,)
    grad = tf.cast(tape.gradient(total, logits), tf.float32).numpy()
    # d/dz (-log softmax(z)[y]) = softmax(z) - onehot(y): each row sums to 0, own entry < 0
    assert np.abs(grad).sum() > 0.0
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-2)
    assert grad[0, 0] < 0.0 and grad[1, 1] < 0.0
    with tf.GradientTape() as tape:
        outlier_loss = tf.reduce_sum(cluster_contrast_loss(logits, tf.constant([-1, -1])))
    outlier_grad = tf.cast(tape.gradient(outlier_loss, logits), tf.float32).numpy()
    np.testing.assert_array_equal(outlier_grad, 0.0)


# ----------------------------------------------------------------------------- mask prediction


def _keep(pattern) -> tf.Tensor:
    return tf.constant(pattern, tf.float32)[..., None]


def dense_loss(pred, target, keep) -> tf.Tensor:
    """The loss of whole maps [B, H, W, C] under a keep map, through the dropped cells."""
    cells = dropped_cells(keep)
    return mask_prediction_loss(
        tf.gather_nd(pred, cells), tf.gather_nd(target, cells), cells[:, 0], keep.shape[0]
    )


def test_dropped_cells_lists_sample_row_column_of_every_zero():
    keep = _keep([[[1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [1.0, 1.0]]])
    np.testing.assert_array_equal(dropped_cells(keep).numpy(), [[0, 0, 1], [1, 0, 0], [1, 0, 1]])


def test_mask_prediction_loss_hand_values():
    # one sample, a 1x3 map with 2 channels; positions 0 and 2 dropped, position 1 kept
    pred = tf.constant([[[[1.0, 0.0], [5.0, 5.0], [2.0, 0.0]]]])
    target = tf.constant([[[[0.0, 3.0], [-1.0, 0.0], [-1.0, 0.0]]]])
    loss = dense_loss(pred, target, _keep([[[0.0, 1.0, 0.0]]]))
    # cosines at the dropped positions: 0 and -1 -> mean(1 - 0, 1 + 1) = 1.5
    np.testing.assert_allclose(loss.numpy(), [1.5], rtol=1e-6)


def test_mask_prediction_loss_zero_for_identical_and_for_nothing_dropped():
    x = tf.random.stateless_normal([2, 4, 3, 5], seed=[1, 2])
    other = tf.random.stateless_normal([2, 4, 3, 5], seed=[3, 4])
    some_dropped = _keep(np.tile([[1.0, 0.0, 0.0]], (2, 4, 1)))
    np.testing.assert_allclose(dense_loss(x, x, some_dropped).numpy(), 0.0, atol=1e-6)
    nothing_dropped = tf.ones([2, 4, 3, 1])
    np.testing.assert_array_equal(dense_loss(x, other, nothing_dropped).numpy(), [0, 0])
    assert float(tf.reduce_min(dense_loss(x, other, some_dropped))) > 0.1


def test_mask_prediction_loss_stops_gradient_at_target():
    pred = tf.Variable(tf.random.stateless_normal([1, 2, 2, 3], seed=[5, 6]))
    target = tf.Variable(tf.random.stateless_normal([1, 2, 2, 3], seed=[7, 8]))
    keep = _keep([[[0.0, 1.0], [1.0, 1.0]]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(dense_loss(pred, target, keep))
    grad_pred, grad_target = tape.gradient(loss, [pred, target])
    assert grad_target is None
    grad_pred = grad_pred.numpy()
    assert np.abs(grad_pred[0, 0, 0]).sum() > 0.0  # dropped position
    np.testing.assert_array_equal(grad_pred[0, 0, 1], 0.0)  # kept positions get nothing
    np.testing.assert_array_equal(grad_pred[0, 1], 0.0)


# ----------------------------------------------------------------------------- consistency


def test_cross_view_consistency_hand_value():
    # teacher (0, log 3) -> (1/4, 3/4); student (0, 0) -> (1/2, 1/2)
    teacher = tf.constant([[0.0, math.log(3.0)]])
    student = tf.constant([[0.0, 0.0]])
    loss = cross_view_consistency_loss(student, teacher)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    np.testing.assert_allclose(loss.numpy(), [expected], rtol=1e-5)
    # every given logit is a live cluster: a third one enters both softmaxes
    three = cross_view_consistency_loss(
        tf.constant([[0.0, 0.0, 0.0]]), tf.constant([[0.0, math.log(3.0), 0.0]])
    )
    p_t, p_s = np.array([1.0, 3.0, 1.0]) / 5.0, np.full(3, 1.0 / 3.0)
    np.testing.assert_allclose(three.numpy(), [np.sum(p_t * np.log(p_t / p_s))], rtol=1e-5)


def test_cross_view_consistency_zero_when_equal_and_teacher_gets_no_gradient():
    logits = tf.random.stateless_normal([3, 5], seed=[9, 10])
    np.testing.assert_allclose(cross_view_consistency_loss(logits, logits).numpy(), 0.0, atol=1e-6)
    student = tf.Variable(logits)
    teacher = tf.Variable(logits * 2.0)
    loss_values = cross_view_consistency_loss(student, teacher).numpy()
    assert np.all(loss_values > 0.0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(cross_view_consistency_loss(student, teacher))
    grad_student, grad_teacher = tape.gradient(loss, [student, teacher])
    assert grad_teacher is None
    # d/dz_s KL(p_t || softmax(z_s)) = softmax(z_s) - p_t
    expected = tf.nn.softmax(logits) - tf.nn.softmax(logits * 2.0)
    np.testing.assert_allclose(grad_student.numpy(), expected.numpy(), atol=1e-6)


# ----------------------------------------------------------------------------- source losses


def test_label_smoothing_hand_values():
    logits = tf.constant([[math.log(3.0), 0.0], [0.0, 0.0]])
    loss = cross_entropy_label_smoothing(logits, tf.constant([0, 1]), epsilon=0.1).numpy()
    # probabilities (3/4, 1/4) and (1/2, 1/2); targets (0.95, 0.05) and (0.05, 0.95)
    first = -(0.95 * math.log(0.75) + 0.05 * math.log(0.25))
    np.testing.assert_allclose(loss, [first, math.log(2.0)], rtol=1e-6)
    plain = cross_entropy_label_smoothing(logits, tf.constant([0, 1]), epsilon=0.0).numpy()
    np.testing.assert_allclose(plain, [-math.log(0.75), math.log(2.0)], rtol=1e-6)


def test_batch_hard_triplet_picks_hardest_positive_and_negative():
    # points on a line: label 0 at 0, 1, 3; label 1 at 2, 5; label 2 alone at 10
    features = tf.constant([[0.0], [1.0], [3.0], [2.0], [5.0], [10.0]])
    labels = tf.constant([0, 0, 0, 1, 1, 2])
    loss = batch_hard_triplet_loss(features, labels, margin=0.3).numpy()
    # (hardest positive, hardest negative) per anchor:
    # 0: (3, 2)  1: (2, 1)  3: (3, 1)  2: (3, 1)  5: (3, 2)  10: no positive -> 0
    np.testing.assert_allclose(loss, [1.3, 1.3, 2.3, 2.3, 1.3, 0.0], rtol=1e-5)


def test_batch_hard_triplet_zero_when_separated_and_without_negatives():
    features = tf.constant([[0.0, 0.0], [0.0, 0.1], [5.0, 5.0], [5.0, 5.1]])
    separated = batch_hard_triplet_loss(features, tf.constant([0, 0, 1, 1]), margin=0.3)
    np.testing.assert_array_equal(separated.numpy(), [0.0, 0.0, 0.0, 0.0])
    single_label = batch_hard_triplet_loss(features, tf.constant([4, 4, 4, 4]), margin=0.3)
    np.testing.assert_array_equal(single_label.numpy(), [0.0, 0.0, 0.0, 0.0])


def test_pairwise_distance_is_exact_and_has_finite_gradient_on_duplicates():
    x = tf.Variable([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0]])
    with tf.GradientTape() as tape:
        distances = pairwise_euclidean_distance(x)
        total = tf.reduce_sum(distances)
    np.testing.assert_allclose(distances.numpy(), [[0, 5, 5], [5, 0, 0], [5, 0, 0]], atol=1e-5)
    assert np.all(np.isfinite(tape.gradient(total, x).numpy()))


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_losses_return_float32_per_example(dtype):
    features = tf.cast(tf.random.stateless_normal([4, 3], seed=[11, 12]), dtype)
    labels = tf.constant([0, 0, 1, 1])
    outputs = [
        batch_hard_triplet_loss(features, labels),
        cross_entropy_label_smoothing(features, labels),
        cross_view_consistency_loss(features, features),
        cluster_contrast_loss(features, labels),
    ]
    for out in outputs:
        assert out.dtype == tf.float32 and out.shape == (4,)
        assert np.all(np.isfinite(out.numpy()))


def test_losses_run_in_graph_with_unknown_batch():
    prototypes = tf.constant([[1.0, 0.0], [0.0, 1.0]])

    def logits_of(features):
        return (
            tf.matmul(tf.math.l2_normalize(features, axis=-1), prototypes, transpose_b=True) / 0.5
        )

    @tf.function(
        input_signature=[tf.TensorSpec([None, 2], tf.float32), tf.TensorSpec([None], tf.int32)]
    )
    def total(features, labels):
        return (
            cluster_contrast_loss(logits_of(features), labels)
            + cross_view_consistency_loss(logits_of(features), 2.0 * logits_of(features))
            + batch_hard_triplet_loss(features, labels)
            + cross_entropy_label_smoothing(features, labels)
        )

    features = tf.constant([[3.0, 4.0], [3.0, 4.0], [0.0, 1.0]])
    labels = tf.constant([0, 1, 1])
    expected = (
        cluster_contrast_loss(logits_of(features), labels)
        + cross_view_consistency_loss(logits_of(features), 2.0 * logits_of(features))
        + batch_hard_triplet_loss(features, labels)
        + cross_entropy_label_smoothing(features, labels)
    )
    np.testing.assert_allclose(total(features, labels).numpy(), expected.numpy(), rtol=1e-6)
    assert total(features[:2], labels[:2]).shape == (2,)
