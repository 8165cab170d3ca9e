"""BatchNorm folding: the folded trunk computes the same map, always on the current weights."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from batchnorm_stats import randomise_batchnorms  # noqa: E402
from two_cpus import run_on_two_cpus  # noqa: E402

from maskpre_tf.models.backbones import build_backbone  # noqa: E402
from maskpre_tf.models.encoder import ReidEncoder  # noqa: E402
from maskpre_tf.models.folding import (  # noqa: E402
    FoldedBatchNorm,
    FoldedEncoder,
    FoldedTrunk,
    foldable_pairs,
    graph_links,
)

SHAPE = (64, 32, 3)


@pytest.mark.parametrize(
    "name, layout",
    [("resnet_small", "keras"), ("mobilenet_v2", "keras"), ("mobilenet_v2", "torch")],
)
def test_the_folded_trunk_computes_the_same_map_without_batchnorm(name, layout):
    trunk = build_backbone(name, SHAPE, weights="none", layout=layout)
    randomise_batchnorms(trunk, seed=1)
    folded = FoldedTrunk(trunk)
    batchnorms = [la for la in trunk.layers if isinstance(la, keras.layers.BatchNormalization)]
    assert len(folded.pairs) == len(batchnorms) > 0  # every BN of the shipped trunks folds
    assert not any(isinstance(la, keras.layers.BatchNormalization) for la in folded.folded.layers)
    assert sum(isinstance(la, FoldedBatchNorm) for la in folded.folded.layers) == len(batchnorms)
    x = np.random.default_rng(0).normal(size=(3, *SHAPE)).astype(np.float32)
    want = trunk(x, training=False).numpy()
    for got in (folded(x).numpy(), folded.frozen()(x, training=False).numpy()):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_the_serialised_graph_names_every_link_of_the_shipped_trunks():
    """Folding reads the layer graph from ``get_config()``; a change of that format fails here."""
    trunk = build_backbone("mobilenet_v2", SHAPE, weights="none")
    calls, uses = graph_links(trunk)
    assert set(calls) == {layer.name for layer in trunk.layers}
    for layer in trunk.layers[1:]:  # every layer after the input reads at least one tensor
        assert calls[layer.name] and all(calls[layer.name]), layer.name
    assert uses[trunk.layers[-1].name] == 1  # the model's output counts as a use
    assert sum(uses.values()) == sum(len(n) for c in calls.values() for n in c) + 1


def test_a_batchnorm_whose_convolution_feeds_another_layer_is_left_alone():
    inputs = keras.Input(SHAPE)
    conv = keras.layers.Conv2D(4, 3, name="shared_conv")(inputs)
    normed = keras.layers.BatchNormalization(name="bn")(conv)
    model = keras.Model(inputs, keras.layers.Add()([normed, conv]))  # conv also feeds Add
    randomise_batchnorms(model, seed=2)
    assert foldable_pairs(model) == {}
    folded = FoldedTrunk(model)
    assert isinstance(folded.folded.get_layer("bn"), keras.layers.BatchNormalization)
    x = np.random.default_rng(3).normal(size=(2, *SHAPE)).astype(np.float32)
    np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)


def test_the_folded_encoder_follows_the_encoder_and_the_frozen_one_does_not():
    encoder = ReidEncoder(build_backbone("resnet_small", SHAPE, weights="none"), "torch")
    encoder(tf.zeros((1, *SHAPE)))
    randomise_batchnorms(encoder.backbone, seed=4)
    folded = FoldedEncoder(encoder)
    frozen = FoldedEncoder(encoder, frozen=True)
    pixels = tf.constant(np.random.default_rng(5).uniform(0, 255, (5, *SHAPE)), tf.float32)
    before = encoder(pixels, training=False).numpy()
    np.testing.assert_allclose(folded(pixels).numpy(), before, atol=1e-5)
    np.testing.assert_allclose(frozen(pixels).numpy(), before, atol=1e-5)

    randomise_batchnorms(encoder.backbone, seed=6)  # "a training step" changed the weights
    kernel = encoder.backbone.get_layer("stem_conv").kernel
    kernel.assign(kernel * 1.5)
    after = encoder(pixels, training=False).numpy()
    assert np.abs(after - before).max() > 1e-2
    np.testing.assert_allclose(folded(pixels).numpy(), after, atol=1e-5)  # never stale
    np.testing.assert_allclose(frozen(pixels).numpy(), before, atol=1e-5)  # folded once
    assert len(frozen.weights) < len(encoder.weights)  # the folded kernels, no BN variables
    with pytest.raises(ValueError, match="inference"):
        folded(pixels, training=True)


@pytest.mark.slow
def test_the_folded_encoder_under_two_replicas_equals_the_encoder(tmp_path):
    run_on_two_cpus(
        tmp_path,
        "folded_replicas",
        """
        from maskpre_tf.models.backbones import build_backbone
        from maskpre_tf.models.encoder import ReidEncoder
        from maskpre_tf.models.folding import FoldedEncoder
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            encoder = ReidEncoder(build_backbone("resnet_small", (64, 32, 3)), "torch")
            encoder(tf.zeros((1, 64, 32, 3)))
        folded = FoldedEncoder(encoder, strategy)
        x = tf.constant(np.random.default_rng(0).uniform(0, 255, (5, 64, 32, 3)), tf.float32)
        for step in range(2):
            for layer in encoder.backbone.layers:  # new statistics, as training would give
                if hasattr(layer, "moving_variance"):
                    layer.moving_variance.assign(layer.moving_variance * 1.7)
                    layer.moving_mean.assign(layer.moving_mean + 0.1)
            want = encoder(x, training=False).numpy()
            np.testing.assert_allclose(folded(x).numpy(), want, atol=1e-5)
        print("OK")
        """,
    )


def test_the_teacher_map_of_a_training_step_follows_the_teacher_without_refolding():
    from maskpre_tf.config import TrainConfig
    from maskpre_tf.models.maskpre import build_maskpre

    cfg = TrainConfig().replace(
        backbone="resnet_small", backbone_weights="none", height=64, width=32, batch_size=4
    )
    model = build_maskpre(cfg, num_train=8, num_replicas=1, ramp_steps=0)
    teacher_map = tf.function(model.teacher_map)  # as inside the compiled training step
    pixels = tf.constant(np.random.default_rng(8).uniform(0, 255, (3, *SHAPE)), tf.float32)
    for seed in (9, 10):  # the teacher moves between steps (EMA); nothing is re-folded
        randomise_batchnorms(model.teacher.backbone, seed=seed)
        kernel = model.teacher.backbone.get_layer("stem_conv").kernel
        kernel.assign(kernel * 1.3)
        want = model.teacher.feature_map(pixels, training=False).numpy()
        got = teacher_map(pixels).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
