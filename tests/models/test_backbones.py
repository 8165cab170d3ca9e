"""Backbones: output strides, splitting at the inner masking stage, freezing early stages."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from maskpre_tf.errors import UserError  # noqa: E402
from maskpre_tf.models.backbones import (  # noqa: E402
    INNER_STAGE,
    STAGE_ENDS,
    build_backbone,
    freeze_stages,
    split_backbone,
)

SHAPE = (64, 32, 3)


@pytest.mark.parametrize(
    "name, last_stride, grid",
    [("resnet_small", 1, (8, 4)), ("mobilenet_v2", 1, (4, 2)), ("mobilenet_v2", 2, (2, 1))],
)
def test_output_grid(name, last_stride, grid):
    model = build_backbone(name, SHAPE, weights="none", last_stride=last_stride)
    assert tuple(model.output.shape[1:3]) == grid


@pytest.mark.parametrize("name", ["resnet_small", "mobilenet_v2"])
def test_split_at_the_inner_stage_composes_to_the_whole(name):
    model = build_backbone(name, SHAPE, weights="none")
    split = split_backbone(model, INNER_STAGE[name])
    front, back = split.front, split.back
    x = np.random.default_rng(0).normal(size=(2, *SHAPE)).astype(np.float32)
    np.testing.assert_allclose(back(front(x)), model(x), rtol=1e-5, atol=1e-5)
    assert tuple(front.output.shape[1:3]) == tuple(model.output.shape[1:3])  # same grid
    assert not back.weights or {id(w) for w in back.weights} <= {id(w) for w in model.weights}


def test_frozen_stages_fix_the_early_layers_only():
    model = build_backbone("resnet_small", SHAPE, weights="none")
    everything = len(model.trainable_weights)
    freeze_stages(model, "resnet_small", 2)
    names = [layer.name for layer in model.layers]
    end = names.index(STAGE_ENDS["resnet_small"][1])
    assert all(not layer.trainable for layer in model.layers[: end + 1])
    assert all(layer.trainable for layer in model.layers[end + 1 :] if layer.weights)
    assert 0 < len(model.trainable_weights) < everything
    with pytest.raises(UserError, match="--frozen_stages=5"):
        freeze_stages(model, "resnet_small", 5)
