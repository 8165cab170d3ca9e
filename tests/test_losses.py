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
    mask_prediction_loss,
    pairwise_euclidean_distance,
    prototype_logits,
)

TWO_PROTOTYPES = tf.constant([[1.0, 0.0], [0.0, 1.0]])


# ----------------------------------------------------------------------------- cluster contrast


def test_prototype_logits_are_cosines_over_temperature():
    features = tf.constant([[3.0, 4.0], [0.0, -2.0]])
    logits = prototype_logits(features, TWO_PROTOTYPES, num_active=2, temperature=0.5).numpy()
    # normalize((3, 4)) = (0.6, 0.8); normalize((0, -2)) = (0, -1)
    np.testing.assert_allclose(logits, [[1.2, 1.6], [0.0, -2.0]], rtol=1e-6)


def test_cluster_contrast_loss_hand_values():
    features = tf.constant([[3.0, 4.0], [3.0, 4.0]])
    loss = cluster_contrast_loss(
        features, tf.constant([0, 1]), TWO_PROTOTYPES, num_active=2, temperature=0.5
    ).numpy()
    # logits (1.2, 1.6): -log softmax = log(1 + e^(other - own))
    np.testing.assert_allclose(loss, [math.log1p(math.exp(0.4)), math.log1p(math.exp(-0.4))])


def test_cluster_contrast_ignores_inactive_slots_and_outliers():
    features = tf.constant([[3.0, 4.0], [1.0, 1.0], [1.0, 0.0]])
    labels = tf.constant([0, 1, -1])
    # a third slot that would dominate the softmax if it were active
    prototypes = tf.constant([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    masked = cluster_contrast_loss(features, labels, prototypes, num_active=2, temperature=0.5)
    reference = cluster_contrast_loss(
        features, labels, TWO_PROTOTYPES, num_active=tf.constant(2), temperature=0.5
    )
    np.testing.assert_allclose(masked.numpy(), reference.numpy(), rtol=1e-6)
    assert masked.numpy()[2] == 0.0  # outlier label -1 contributes nothing
    active = cluster_contrast_loss(features, labels, prototypes, num_active=3, temperature=0.5)
    assert active.numpy()[0] > masked.numpy()[0]
    # a label pointing at an inactive slot is treated as an outlier too
    beyond = cluster_contrast_loss(features, tf.constant([2, 2, 2]), prototypes, 2, 0.5)
    np.testing.assert_array_equal(beyond.numpy(), [0.0, 0.0, 0.0])


def test_cluster_contrast_is_float32_for_bfloat16_inputs_and_has_gradients():
    features = tf.Variable(tf.constant([[3.0, 4.0], [1.0, -1.0]], tf.bfloat16))
    with tf.GradientTape() as tape:
        loss = cluster_contrast_loss(features, tf.constant([0, 1]), TWO_PROTOTYPES, 2, 0.05)
        total = tf.reduce_sum(loss)
    assert loss.dtype == tf.float32 and loss.shape == (2,)
    grad = tape.gradient(total, features)
    assert grad is not None and float(tf.reduce_sum(tf.abs(tf.cast(grad, tf.float32)))) > 0.0


# ----------------------------------------------------------------------------- mask prediction


def _keep(pattern) -> tf.Tensor:
    return tf.constant(pattern, tf.float32)[..., None]


def test_mask_prediction_loss_hand_values():
    # one sample, a 1x3 map with 2 channels; positions 0 and 2 dropped, position 1 kept
    pred = tf.constant([[[[1.0, 0.0], [5.0, 5.0], [2.0, 0.0]]]])
    target = tf.constant([[[[0.0, 3.0], [-1.0, 0.0], [-1.0, 0.0]]]])
    loss = mask_prediction_loss(pred, target, _keep([[[0.0, 1.0, 0.0]]]))
    # cosines at the dropped positions: 0 and -1 -> mean(1 - 0, 1 + 1) = 1.5
    np.testing.assert_allclose(loss.numpy(), [1.5], rtol=1e-6)


def test_mask_prediction_loss_zero_for_identical_and_for_nothing_dropped():
    x = tf.random.stateless_normal([2, 4, 3, 5], seed=[1, 2])
    other = tf.random.stateless_normal([2, 4, 3, 5], seed=[3, 4])
    some_dropped = _keep(np.tile([[1.0, 0.0, 0.0]], (2, 4, 1)))
    np.testing.assert_allclose(mask_prediction_loss(x, x, some_dropped).numpy(), 0.0, atol=1e-6)
    nothing_dropped = tf.ones([2, 4, 3, 1])
    np.testing.assert_array_equal(mask_prediction_loss(x, other, nothing_dropped).numpy(), [0, 0])
    assert float(tf.reduce_min(mask_prediction_loss(x, other, some_dropped))) > 0.1


def test_mask_prediction_loss_stops_gradient_at_target():
    pred = tf.Variable(tf.random.stateless_normal([1, 2, 2, 3], seed=[5, 6]))
    target = tf.Variable(tf.random.stateless_normal([1, 2, 2, 3], seed=[7, 8]))
    keep = _keep([[[0.0, 1.0], [1.0, 1.0]]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(mask_prediction_loss(pred, target, keep))
    grad_pred, grad_target = tape.gradient(loss, [pred, target])
    assert grad_target is None
    grad_pred = grad_pred.numpy()
    assert np.abs(grad_pred[0, 0, 0]).sum() > 0.0  # dropped position
    np.testing.assert_array_equal(grad_pred[0, 0, 1], 0.0)  # kept positions get nothing
    np.testing.assert_array_equal(grad_pred[0, 1], 0.0)


# ----------------------------------------------------------------------------- consistency


def test_cross_view_consistency_hand_value_and_masked_slot():
    # teacher (0, log 3) -> (1/4, 3/4); student (0, 0) -> (1/2, 1/2); third slot inactive
    teacher = tf.constant([[0.0, math.log(3.0), 50.0]])
    student = tf.constant([[0.0, 0.0, -50.0]])
    loss = cross_view_consistency_loss(student, teacher, num_active=2)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    np.testing.assert_allclose(loss.numpy(), [expected], rtol=1e-5)
    with_slot = cross_view_consistency_loss(student, teacher, num_active=3)
    assert float(with_slot[0]) > 10.0  # the 50 vs -50 slot would dominate if it were active


def test_cross_view_consistency_zero_when_equal_and_teacher_gets_no_gradient():
    logits = tf.random.stateless_normal([3, 5], seed=[9, 10])
    np.testing.assert_allclose(
        cross_view_consistency_loss(logits, logits, 4).numpy(), 0.0, atol=1e-6
    )
    student = tf.Variable(logits)
    teacher = tf.Variable(logits * 2.0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(cross_view_consistency_loss(student, teacher, 4))
    grad_student, grad_teacher = tape.gradient(loss, [student, teacher])
    assert grad_teacher is None
    assert np.abs(grad_student.numpy()[:, :4]).sum() > 0.0
    np.testing.assert_array_equal(grad_student.numpy()[:, 4], 0.0)


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
        cross_view_consistency_loss(features, features, 3),
        cluster_contrast_loss(features, labels, tf.eye(3), 3),
    ]
    for out in outputs:
        assert out.dtype == tf.float32 and out.shape == (4,)
        assert np.all(np.isfinite(out.numpy()))


def test_losses_run_in_graph_with_unknown_batch():
    @tf.function(
        input_signature=[tf.TensorSpec([None, 2], tf.float32), tf.TensorSpec([None], tf.int32)]
    )
    def total(features, labels):
        return (
            cluster_contrast_loss(features, labels, TWO_PROTOTYPES, 2, 0.5)
            + batch_hard_triplet_loss(features, labels)
            + cross_entropy_label_smoothing(features, labels)
        )

    features = tf.constant([[3.0, 4.0], [3.0, 4.0], [0.0, 1.0]])
    labels = tf.constant([0, 1, 1])
    expected = (
        cluster_contrast_loss(features, labels, TWO_PROTOTYPES, 2, 0.5)
        + batch_hard_triplet_loss(features, labels)
        + cross_entropy_label_smoothing(features, labels)
    )
    np.testing.assert_allclose(total(features, labels).numpy(), expected.numpy(), rtol=1e-6)
    assert total(features[:2], labels[:2]).shape == (2,)
