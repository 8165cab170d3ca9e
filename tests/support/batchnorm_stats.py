"""Give a model's BatchNormalizations statistics and affine maps far from the identity."""

from __future__ import annotations

import keras
import numpy as np


def randomise_batchnorms(model: keras.Model, seed: int) -> None:
    """Moving mean ~ N(0, 0.5), variance ~ U(0.2, 3), gamma ~ U(0.5, 1.5), beta ~ N(0, 0.3).

    Freshly built layers hold mean 0, variance 1, gamma 1, beta 0, which folding would barely
    change; these values make a wrong fold visible.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, c))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, c))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, c))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.3, c))
