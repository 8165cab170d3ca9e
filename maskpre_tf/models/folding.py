"""Inference copies with BatchNormalization folded into the convolution before it.

In inference a BatchNormalization layer is a per-channel affine map,
``y = (x - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``. When ``x`` is the output of a
convolution that feeds nothing else, the map can be folded into the convolution's weights
(Jacob et al., CVPR 2018, section 3.2): ``kernel' = kernel * s`` per output channel and
``bias' = (bias - mean) * s + beta``. The folded trunk computes the same feature map (to float
round-off) with one pass over each activation instead of three; on MobileNetV2 at 128x64 on a
2-core CPU it embeds about 1.6x as many images per second (``benchmarks/extract_bench.py``).

Training keeps the unfolded trunk: BatchNormalization normalises with batch statistics there.
:class:`FoldedEncoder` is the inference copy of a :class:`~maskpre_tf.models.encoder.ReidEncoder`
for feature extraction (clustering and evaluation): it re-folds the encoder's current weights
whenever a version number (the optimizer's step) has changed since its last call.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from maskpre_tf.models.normalization import normalize_pixels
from maskpre_tf.models.replicated import spread_over_replicas

CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


@keras.saving.register_keras_serializable(package="maskpre_tf")
class FoldedBatchNorm(keras.layers.Layer):
    """Where a BatchNormalization was folded away: passes its input through unchanged."""

    def call(self, inputs, mask=None, training=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def foldable_pairs(model: keras.Model) -> dict[str, str]:
    """{BatchNormalization name: name of the convolution it folds into} of a functional model.

    A BatchNormalization folds when it normalises the last axis and its one input is the output
    of a Conv2D / DepthwiseConv2D (channels last) that feeds nothing else.
    """
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        if layer.axis not in (-1, 3):
            continue
        parents = layer._inbound_nodes[0].parent_nodes
        if len(parents) != 1:
            continue
        conv = parents[0].operation
        if (
            isinstance(conv, CONVOLUTIONS)
            and conv.data_format == "channels_last"
            and len(conv._inbound_nodes) == 1
            and len(conv._outbound_nodes) == 1
        ):
            pairs[layer.name] = conv.name
    return pairs


def folded_kernel_and_bias(
    conv: keras.layers.Layer, bn: keras.layers.BatchNormalization
) -> tuple[tf.Tensor, tf.Tensor]:
    """The kernel and bias of ``conv`` with ``bn``'s inference map folded in (current values).

    Conv2D kernels are [kh, kw, C_in / groups, C_out]; DepthwiseConv2D kernels are
    [kh, kw, C_in, multiplier], output channel ``c * multiplier + m``. Returns float32 tensors
    of the kernel's shape and [C_out]. Graph-safe: reads the variables where it runs (each
    replica its own copy).
    """
    kernel = tf.convert_to_tensor(conv.kernel, tf.float32)
    mean = tf.convert_to_tensor(bn.moving_mean, tf.float32)
    var = tf.convert_to_tensor(bn.moving_variance, tf.float32)
    scale = tf.math.rsqrt(var + bn.epsilon)
    if bn.scale:
        scale *= tf.convert_to_tensor(bn.gamma, tf.float32)
    bias = tf.convert_to_tensor(conv.bias, tf.float32) if conv.use_bias else tf.zeros_like(mean)
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        kernel = kernel * tf.reshape(scale, [1, 1, kernel.shape[2], kernel.shape[3]])
    else:
        kernel = kernel * scale
    folded_bias = (bias - mean) * scale
    if bn.center:
        folded_bias += tf.convert_to_tensor(bn.beta, tf.float32)
    return kernel, folded_bias


def fold_batchnorm(model: keras.Model) -> tuple[keras.Model, dict[str, str]]:
    """A clone of the functional ``model`` with its foldable BatchNormalizations folded.

    Returns (folded model, :func:`foldable_pairs` of ``model``). The folded model holds its own
    weights, set from ``model``'s current ones; :func:`refresh_folded` sets them again.
    """
    pairs = foldable_pairs(model)
    convs = set(pairs.values())

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name in pairs:
            return FoldedBatchNorm(name=layer.name, dtype=layer.dtype_policy)
        config = layer.get_config()
        if layer.name in convs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(model, clone_function=clone_layer)
    refresh_folded(folded, model, pairs)
    return folded, pairs


def folded_state(
    folded: keras.Model, model: keras.Model, pairs: dict[str, str]
) -> list[tuple[keras.Variable, tf.Tensor]]:
    """(variable of ``folded``, its value from ``model``'s current weights) for every weight.

    ``folded`` and ``pairs`` come from :func:`fold_batchnorm` of ``model``. Assigning the values
    is :func:`refresh_folded`; passing the list as a ``keras.StatelessScope`` state mapping runs
    ``folded`` on ``model``'s current weights with nothing assigned (inside a training step).
    """
    folded_into = {conv: bn for bn, conv in pairs.items()}
    state = []
    for layer in model.layers:
        if layer.name in pairs or not layer.weights:
            continue
        target = folded.get_layer(layer.name)
        if layer.name in folded_into:
            kernel, bias = folded_kernel_and_bias(layer, model.get_layer(folded_into[layer.name]))
            state += [(target.kernel, kernel), (target.bias, bias)]
        else:
            state += [
                (mine, tf.convert_to_tensor(theirs))
                for mine, theirs in zip(target.weights, layer.weights, strict=True)
            ]
    return state


def refresh_folded(folded: keras.Model, model: keras.Model, pairs: dict[str, str]) -> None:
    """Set the weights of ``folded`` (from :func:`fold_batchnorm`) from ``model``'s current ones."""
    for variable, value in folded_state(folded, model, pairs):
        variable.assign(tf.cast(value, variable.dtype))


def run_folded(
    folded: keras.Model, model: keras.Model, pairs: dict[str, str], inputs: tf.Tensor
) -> tf.Tensor:
    """``folded(inputs, training=False)`` on ``model``'s current weights, assigning nothing.

    Equals ``model(inputs, training=False)`` to float round-off; the fold costs one elementwise
    pass over the kernels, so it pays when the forward pass is the larger cost (the EMA
    teacher's pass in every training step). Graph- and replica-context-safe.
    """
    with keras.StatelessScope(state_mapping=folded_state(folded, model, pairs)):
        return folded(inputs, training=False)


class FoldedEncoder:
    """Inference with a :class:`ReidEncoder`'s backbone folded: pixels [B, H, W, 3] → [B, C].

    Calling it computes ``encoder(pixels, training=False)`` (to float round-off) with the
    folded backbone and the encoder's own GeM and neck, each batch split over ``strategy``'s
    local devices (:func:`~maskpre_tf.models.replicated.spread_over_replicas`). ``version()``
    numbers the encoder's weights (e.g. the optimizer's step counter): when it differs from the
    one last folded, the call folds the current weights first. The folded copy is built under
    ``strategy``'s scope, so each replica reads its own copy.
    """

    def __init__(
        self,
        encoder: keras.Model,
        version: Callable[[], int],
        strategy: tf.distribute.Strategy | None = None,
    ):
        self.encoder = encoder
        self.version = version
        strategy = strategy or tf.distribute.get_strategy()
        with strategy.scope():
            self.backbone, self.pairs = fold_batchnorm(encoder.backbone)
        self.folded_version = self.version()
        self._embed = spread_over_replicas(strategy, self.forward)

    def forward(self, pixels: tf.Tensor) -> tf.Tensor:
        """One replica's work: RGB pixels [b, H, W, 3] in 0–255 → float32 L2-normalised [b, C]."""
        maps = self.backbone(normalize_pixels(pixels, self.encoder.input_norm), training=False)
        return self.encoder.embed_map(maps, training=False)

    def refresh(self, force: bool = False) -> None:
        """Fold the encoder's weights again if their version has changed (or ``force``)."""
        current = self.version()
        if force or current != self.folded_version:
            refresh_folded(self.backbone, self.encoder.backbone, self.pairs)
            self.folded_version = current

    @property
    def weights(self) -> list:
        """The variables inference reads: the folded backbone's, then GeM's and the neck's."""
        return self.backbone.weights + self.encoder.pool.weights + self.encoder.neck.weights

    def __call__(self, pixels: tf.Tensor, training: bool = False) -> tf.Tensor:
        """RGB pixels [B, H, W, 3] in 0–255 → float32 L2-normalised embeddings [B, C].

        Inference only (the folded trunk has no batch statistics): ``training`` must be False.
        """
        if training:
            raise ValueError("a FoldedEncoder is for inference; train the encoder it folds")
        self.refresh()
        return self._embed(pixels)
