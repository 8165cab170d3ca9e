"""MaskPre losses as pure functions returning one loss per example ([B], float32).

The training model averages them over the global batch with ``tf.nn.compute_average_loss``.
Inputs may be any float dtype (mixed precision); all arithmetic is float32.

Unsupervised terms: cluster-contrastive loss against prototypes, mask-prediction loss at the
dropped positions, cross-view consistency of soft cluster assignments. Source pre-training terms
(domain adaptation): label-smoothed cross entropy and batch-hard triplet loss.
"""

from __future__ import annotations

import tensorflow as tf


def cluster_contrast_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Cluster-contrastive (InfoNCE over prototypes) loss, Dai et al. 2021 (Cluster Contrast).

    loss_i = −log softmax(logits_i)[y_i], the logits being cosine similarities to the live
    prototypes divided by the temperature. Samples with a label < 0 or ≥ K (outliers)
    contribute 0.

    Args:
      logits: float [B, K]. labels: int [B].

    Returns:
      float32 [B].
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    valid = tf.logical_and(labels >= 0, labels < tf.shape(logits)[-1])
    safe_labels = tf.where(valid, labels, 0)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=logits)
    return tf.where(valid, loss, 0.0)


def mask_prediction_loss(
    pred: tf.Tensor, target: tf.Tensor, sample: tf.Tensor, num_samples: tf.Tensor | int
) -> tf.Tensor:
    """Per-sample mean of (1 - cosine(pred, target)) over its dropped cells.

    Cosine is taken along channels; the target gets no gradient (teacher side). A sample with no
    dropped cell has loss 0.

    Args:
      pred: float [M, C], the head's prediction at the M dropped cells of the batch.
      target: float [M, C], the teacher's map at the same cells.
      sample: int [M], the sample (row of the batch) of each cell.
      num_samples: B, the batch size.

    Returns:
      float32 [B], each in [0, 2].
    """
    pred = tf.math.l2_normalize(tf.cast(pred, tf.float32), axis=-1)
    target = tf.math.l2_normalize(tf.stop_gradient(tf.cast(target, tf.float32)), axis=-1)
    distance = 1.0 - tf.reduce_sum(pred * target, axis=-1)
    sample = tf.cast(sample, tf.int32)
    total = tf.math.unsorted_segment_sum(distance, sample, num_samples)
    count = tf.math.unsorted_segment_sum(tf.ones_like(distance), sample, num_samples)
    return tf.math.divide_no_nan(total, count)


def dropped_cells(keep_mask: tf.Tensor) -> tf.Tensor:
    """int64 [M, 3] (sample, row, column) of the dropped cells of a keep map [B, H, W, 1]."""
    return tf.where(keep_mask[..., 0] < 0.5)


def cross_view_consistency_loss(student_logits: tf.Tensor, teacher_logits: tf.Tensor) -> tf.Tensor:
    """KL(teacher assignment ‖ student assignment) over the live prototypes.

    loss_i = Σ_k p_t[i, k] (log p_t[i, k] − log p_s[i, k]) with p = softmax of the logits (each
    side already divided by its own temperature); the teacher side gets no gradient.

    Args:
      student_logits, teacher_logits: float [B, K].

    Returns:
      float32 [B], ≥ 0 (up to rounding).
    """
    log_student = tf.nn.log_softmax(tf.cast(student_logits, tf.float32), axis=-1)
    log_teacher = tf.nn.log_softmax(tf.stop_gradient(tf.cast(teacher_logits, tf.float32)), -1)
    return tf.reduce_sum(tf.exp(log_teacher) * (log_teacher - log_student), axis=-1)


def cross_entropy_label_smoothing(logits: tf.Tensor, labels: tf.Tensor, epsilon=0.1) -> tf.Tensor:
    """Cross entropy against smoothed one-hot targets (Szegedy et al., CVPR 2016).

    target = (1 - epsilon) * onehot(y) + epsilon / K; loss_i = -sum_k target_k log softmax_k.

    Args:
      logits: float [B, K]. labels: int [B] in [0, K). epsilon: smoothing in [0, 1).

    Returns:
      float32 [B].
    """
    logits = tf.cast(logits, tf.float32)
    num_classes = tf.shape(logits)[-1]
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    onehot = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)
    epsilon = tf.cast(epsilon, tf.float32)
    targets = (1.0 - epsilon) * onehot + epsilon / tf.cast(num_classes, tf.float32)
    return -tf.reduce_sum(targets * log_probs, axis=-1)


def pairwise_euclidean_distance(features: tf.Tensor) -> tf.Tensor:
    """Euclidean distances between all rows: float [B, D] -> float32 [B, B], zero diagonal.

    Uses |a|^2 + |b|^2 - 2 a.b (no [B, B, D] temporary); the square root has a zero gradient
    where the squared distance is 0, instead of NaN.
    """
    x = tf.cast(features, tf.float32)
    squared_norms = tf.reduce_sum(tf.square(x), axis=-1)
    gram = tf.matmul(x, x, transpose_b=True)
    squared = squared_norms[:, None] + squared_norms[None, :] - 2.0 * gram
    squared = tf.maximum(squared, 0.0)
    size = tf.shape(x)[0]
    squared = tf.linalg.set_diag(squared, tf.zeros([size], tf.float32))
    positive = squared > 0.0
    return tf.where(positive, tf.sqrt(tf.where(positive, squared, 1.0)), 0.0)


def batch_hard_triplet_loss(features: tf.Tensor, labels: tf.Tensor, margin=0.3) -> tf.Tensor:
    """Batch-hard triplet loss (Hermans, Beyer, Leibe, 2017) on Euclidean distances.

    loss_i = max(0, margin + max_{j != i, y_j = y_i} d_ij - min_{y_j != y_i} d_ij). A sample
    without a positive (another sample of its label) or without a negative contributes 0.

    Args:
      features: float [B, D], used as given (normalise beforehand for cosine-like distances).
      labels: int [B]. margin: hinge margin >= 0.

    Returns:
      float32 [B].
    """
    distances = pairwise_euclidean_distance(features)
    labels = tf.cast(labels, tf.int64)
    same = tf.equal(labels[:, None], labels[None, :])
    not_self = tf.logical_not(tf.eye(tf.shape(distances)[0], dtype=tf.bool))
    positive = tf.logical_and(same, not_self)
    negative = tf.logical_not(same)
    hardest_positive = tf.reduce_max(tf.where(positive, distances, -1.0), axis=-1)
    largest = tf.stop_gradient(tf.reduce_max(distances)) + 1.0
    hardest_negative = tf.reduce_min(tf.where(negative, distances, largest), axis=-1)
    has_both = tf.logical_and(tf.reduce_any(positive, -1), tf.reduce_any(negative, -1))
    loss = tf.nn.relu(tf.cast(margin, tf.float32) + hardest_positive - hardest_negative)
    return tf.where(has_both, loss, 0.0)


__all__ = [
    "batch_hard_triplet_loss",
    "cluster_contrast_loss",
    "cross_entropy_label_smoothing",
    "cross_view_consistency_loss",
    "dropped_cells",
    "mask_prediction_loss",
    "pairwise_euclidean_distance",
]
