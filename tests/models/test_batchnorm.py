"""FusedBatchNormalization: Keras's BatchNormalization, its training pass one fused kernel."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from maskpre_tf.models.batchnorm import FusedBatchNormalization, batch_normalization  # noqa: E402


def pair(**config):
    """A Keras and a fused layer with the same (non-trivial) weights, built for 4 channels."""
    keras_bn = keras.layers.BatchNormalization(**config)
    fused_bn = FusedBatchNormalization(**config)
    rng = np.random.default_rng(0)
    for layer in (keras_bn, fused_bn):
        layer.build((None, 5, 3, 4))
    weights = [
        rng.uniform(0.5, 2.0, 4),
        rng.normal(size=4),
        rng.normal(size=4),
        rng.uniform(1, 3, 4),
    ]
    for layer in (keras_bn, fused_bn):
        layer.set_weights([w.astype(np.float32) for w in weights])
    return keras_bn, fused_bn


def ops_of(fn, x) -> set[str]:
    return {op.type for op in tf.function(fn).get_concrete_function(x).graph.get_operations()}


def test_training_pass_matches_keras_outputs_gradients_and_moving_statistics():
    keras_bn, fused_bn = pair(momentum=0.9, epsilon=1e-5)
    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, (6, 5, 3, 4)), tf.float32)
    results = []
    for layer in (keras_bn, fused_bn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.range(4, dtype=tf.float32))
        grads = tape.gradient(loss, [x, *layer.trainable_variables])
        results.append((y.numpy(), [g.numpy() for g in grads], layer.get_weights()))
    (y0, g0, w0), (y1, g1, w1) = results
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
    for a, b in zip(g1, g0, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    for a, b in zip(w1, w0, strict=True):  # gamma, beta, moving mean, moving variance
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.abs(w1[3] - 1.0).max() > 0.1  # the moving variance did move
    assert "FusedBatchNormV3" in ops_of(lambda t: fused_bn(t, training=True), x)


def test_inference_is_keras_own_and_the_same():
    keras_bn, fused_bn = pair()
    x = tf.random.normal((2, 5, 3, 4))
    np.testing.assert_array_equal(keras_bn(x, training=False), fused_bn(x, training=False))
    assert "FusedBatchNormV3" not in ops_of(lambda t: fused_bn(t, training=False), x)


@pytest.mark.parametrize("case", ["frozen", "two_d", "synchronized"])
def test_cases_the_kernel_does_not_cover_fall_back_to_keras(case):
    layer = FusedBatchNormalization(synchronized=case == "synchronized")
    shape = (4, 6) if case == "two_d" else (2, 5, 3, 6)
    layer.build(shape)
    layer.trainable = case != "frozen"
    assert "FusedBatchNormV3" not in ops_of(
        lambda t: layer(t, training=True), tf.random.normal(shape)
    )


def test_factory_picks_the_fused_layer_unless_synchronised():
    assert type(batch_normalization(momentum=0.9)) is FusedBatchNormalization
    assert type(batch_normalization(synchronized=True)) is keras.layers.BatchNormalization


def test_groups_of_n_images_normalise_as_separate_batches_of_n():
    """Ghost BatchNorm: a batch of 16 in groups of 4 gives what four batches of 4 would give on
    four unsynchronised replicas: the same outputs, and moving statistics moved by the mean of
    the four groups' statistics."""
    _, reference = pair(momentum=0.9, epsilon=1e-5)
    grouped = FusedBatchNormalization(group_size=4, momentum=0.9, epsilon=1e-5)
    grouped.build((None, 5, 3, 4))
    grouped.set_weights(reference.get_weights())
    start = [w.copy() for w in reference.get_weights()]
    x = np.random.default_rng(1).normal(2.0, 3.0, size=(16, 5, 3, 4)).astype(np.float32)
    got = grouped(x, training=True).numpy()
    parts, moving = [], []
    for g in range(4):  # one fresh "replica" per group, from the same starting statistics
        reference.set_weights(start)
        parts.append(reference(x[4 * g : 4 * g + 4], training=True).numpy())
        moving.append([w.copy() for w in reference.get_weights()[2:]])
    np.testing.assert_allclose(got, np.concatenate(parts), rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(grouped.get_weights()[2:], zip(*moving, strict=True), strict=True):
        np.testing.assert_allclose(mine, np.mean(theirs, axis=0), rtol=1e-5, atol=1e-6)
    # The whole batch's statistics differ: the groups are what makes the outputs above.
    whole = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
    whole.build((None, 5, 3, 4))
    whole.set_weights(start)
    assert np.abs(whole(x, training=True).numpy() - got).max() > 1e-2


def grouped_pass(layer, x, batch_known: bool):
    """(outputs, gradients w.r.t. input, gamma and beta, moving statistics) of one training
    pass of ``layer`` on ``x``, traced with the batch size static or known only at run time."""
    spec = tf.TensorSpec((x.shape[0] if batch_known else None, *x.shape[1:]), tf.float32)

    @tf.function(input_signature=[spec])
    def run(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = layer(t, training=True)
            loss = tf.reduce_sum(y * tf.range(4, dtype=tf.float32) * t)
        return y, tape.gradient(loss, [t, layer.gamma, layer.beta])

    y, grads = run(tf.constant(x))
    return y.numpy(), [g.numpy() for g in grads], [w.copy() for w in layer.get_weights()[2:]]


@pytest.mark.parametrize("batch_known", [True, False], ids=["static_batch", "dynamic_batch"])
def test_groups_have_the_gradients_of_separate_batches_whether_or_not_the_batch_is_static(
    batch_known,
):
    """The fused per-group kernels (static batch) and the element-wise moments (batch known only
    at run time) give Keras's own layer's outputs, gradients and moving statistics, group by
    group."""
    keras_bn, _ = pair(momentum=0.9, epsilon=1e-5)
    start = [w.copy() for w in keras_bn.get_weights()]
    grouped = FusedBatchNormalization(group_size=4, momentum=0.9, epsilon=1e-5)
    grouped.build((None, 5, 3, 4))
    grouped.set_weights(start)
    x = np.random.default_rng(2).normal(1.0, 2.0, size=(12, 5, 3, 4)).astype(np.float32)
    y, grads, moving = grouped_pass(grouped, x, batch_known)
    parts, dx, dgamma, dbeta, stats = [], [], 0.0, 0.0, []
    for g in range(3):
        keras_bn.set_weights(start)
        yg, (dxg, dgg, dbg), sg = grouped_pass(keras_bn, x[4 * g : 4 * g + 4], True)
        parts.append(yg)
        dx.append(dxg)
        dgamma, dbeta = dgamma + dgg, dbeta + dbg
        stats.append(sg)
    np.testing.assert_allclose(y, np.concatenate(parts), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grads[0], np.concatenate(dx), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads[1], dgamma, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads[2], dbeta, rtol=1e-4, atol=1e-4)
    for mine, theirs in zip(moving, zip(*stats, strict=True), strict=True):
        np.testing.assert_allclose(mine, np.mean(theirs, axis=0), rtol=1e-5, atol=1e-6)
    kernels = ops_of(lambda t: grouped(t, training=True), tf.constant(x))
    assert "FusedBatchNormV3" in kernels and "Transpose" not in kernels


def test_a_group_size_that_does_not_divide_the_batch_is_an_error():
    layer = FusedBatchNormalization(group_size=4)
    layer.build((None, 5, 3, 4))
    with pytest.raises(ValueError, match="bn_group_size=4"):
        layer(np.zeros((6, 5, 3, 4), np.float32), training=True)
    run = tf.function(
        lambda t: layer(t, training=True),
        input_signature=[tf.TensorSpec((None, 5, 3, 4), tf.float32)],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="bn_group_size=4"):
        run(tf.zeros((6, 5, 3, 4)))


def test_grouping_replaces_synchronising_and_survives_serialisation():
    layer = batch_normalization(synchronized=True, group_size=8, momentum=0.9)
    assert isinstance(layer, FusedBatchNormalization) and not layer.synchronized
    clone = FusedBatchNormalization.from_config(layer.get_config())
    assert clone.group_size == 8
