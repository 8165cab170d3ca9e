"""BatchNormalization folded into the convolution before it, on the network's current weights.

In inference a BatchNormalization layer is a per-channel affine map,
``y = (x - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``. When ``x`` is the output of a
convolution that feeds nothing else, the map can be folded into the convolution's weights
(Jacob et al., CVPR 2018, section 3.2): ``kernel' = kernel * s`` per output channel and
``bias' = (bias - mean) * s + beta``. The folded trunk computes the same feature map (to float
round-off) with one pass over each activation instead of three; on MobileNetV2 at 128x64 on a
2-core CPU it embeds about 1.6x as many images per second (``benchmarks/extract_bench.py``).

One mechanism serves every use: :class:`FoldedTrunk` holds a clone of a functional backbone with
its foldable BatchNormalizations removed, and runs it *statelessly* on the folded values of the
backbone's current weights (``keras.StatelessScope``): nothing is copied or assigned, so the
result is never stale, however the backbone's weights changed (a training step, a restore, the
source phase). Folding the kernels is one element-wise pass over the weights per call, small
beside a batch's forward pass. The EMA teacher's forward pass in every training step
(:class:`~maskpre_tf.models.maskpre.MaskPre`) and :class:`FoldedEncoder`, the inference copy of
an encoder for feature extraction (clustering, evaluation, search, export), both use it.

Which BatchNormalization folds into which convolution is read from the model's serialised
graph (``model.get_config()``: each layer's inbound nodes name the layers feeding it), the
format Keras saves models in, not from private attributes of the layers.
"""

from __future__ import annotations

from collections import Counter

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


def _history(value: object) -> list[str]:
    """Names of the layers whose output tensors appear in a serialised call's arguments."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return [value["config"]["keras_history"][0]]
        return [name for item in value.values() for name in _history(item)]
    if isinstance(value, list | tuple):
        return [name for item in value for name in _history(item)]
    return []


def graph_links(model: keras.Model) -> tuple[dict[str, list[list[str]]], Counter]:
    """The layer graph of a functional model, from its serialised config.

    Returns:
      (layer name → one list per call of the layer (inbound node) naming the layers whose
      outputs it reads; layer name → how many times its outputs are read, model outputs
      included).
    """
    config = model.get_config()
    calls: dict[str, list[list[str]]] = {}
    uses: Counter = Counter()
    for layer in config["layers"]:
        calls[layer["name"]] = [_history(node) for node in layer["inbound_nodes"]]
        uses.update(name for node in calls[layer["name"]] for name in node)
    outputs = config["output_layers"]
    outputs = [outputs] if outputs and isinstance(outputs[0], str) else outputs
    uses.update(out[0] for out in outputs)
    return calls, uses


def foldable_pairs(model: keras.Model) -> dict[str, str]:
    """{BatchNormalization name: name of the convolution it folds into} of a functional model.

    A BatchNormalization folds when it is called once, normalises the last axis and reads only
    the output of a Conv2D / DepthwiseConv2D (channels last) that is called once and feeds
    nothing else.
    """
    calls, uses = graph_links(model)
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or layer.axis not in (-1, 3):
            continue
        nodes = calls.get(layer.name, [])
        if len(nodes) != 1 or len(nodes[0]) != 1:
            continue
        conv = model.get_layer(nodes[0][0])
        if (
            isinstance(conv, CONVOLUTIONS)
            and conv.data_format == "channels_last"
            and len(calls.get(conv.name, [])) == 1
            and uses[conv.name] == 1
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


def _folded_clone(model: keras.Model, pairs: dict[str, str]) -> keras.Model:
    """A clone of ``model`` with each BatchNormalization of ``pairs`` passed through and each
    convolution it folds into given a bias (the clone's own weights are never read)."""
    convs = set(pairs.values())

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name in pairs:
            return FoldedBatchNorm(name=layer.name, dtype=layer.dtype_policy)
        config = layer.get_config()
        if layer.name in convs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone_layer)


def folded_state(
    folded: keras.Model, model: keras.Model, pairs: dict[str, str]
) -> list[tuple[keras.Variable, tf.Tensor]]:
    """(variable of ``folded``, its value from ``model``'s current weights) for every weight.

    ``folded`` is :func:`_folded_clone` of ``model`` with ``pairs``. Passed as a
    ``keras.StatelessScope`` state mapping, it runs ``folded`` on ``model``'s current weights.
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


class FoldedTrunk:
    """A functional backbone run in inference mode with its BatchNormalizations folded.

    ``trunk(x)`` equals ``backbone(x, training=False)`` to float round-off, computed on the
    backbone's weights as they are at the call (nothing assigned: graph- and
    replica-context-safe, never stale). Not a Keras layer, so a model holding one tracks and
    checkpoints nothing of it.

    Args:
      backbone: a functional Keras model (channels last).
    """

    def __init__(self, backbone: keras.Model):
        self.backbone = backbone
        self.pairs = foldable_pairs(backbone)
        self.folded = _folded_clone(backbone, self.pairs)

    def __call__(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        """The backbone's inference output for ``inputs``, BatchNorm folded (inference only)."""
        if training:
            raise ValueError("a folded trunk is for inference; train the backbone it folds")
        state = folded_state(self.folded, self.backbone, self.pairs)
        with keras.StatelessScope(state_mapping=state):
            return self.folded(inputs, training=False)

    def frozen(self) -> keras.Model:
        """The folded clone with the folded values of the backbone's weights assigned once.

        For a network whose weights no longer change (an export): its variables are the folded
        kernels themselves, so the served graph holds no folding arithmetic.
        """
        for variable, value in folded_state(self.folded, self.backbone, self.pairs):
            variable.assign(tf.cast(value, variable.dtype))
        return self.folded


class FoldedEncoder:
    """Inference with a :class:`ReidEncoder`'s backbone folded: pixels [B, H, W, 3] → [B, C].

    Calling it computes ``encoder(pixels, training=False)`` (to float round-off) with the
    folded backbone (:class:`FoldedTrunk`, on the encoder's current weights) and the encoder's
    own GeM and neck, each batch split over ``strategy``'s local devices
    (:func:`~maskpre_tf.models.replicated.spread_over_replicas`). The folded clone is built
    under ``strategy``'s scope, so each replica reads its own copy of the weights. With
    ``frozen`` the folded weights are computed once, now (:meth:`FoldedTrunk.frozen`): for an
    encoder whose weights no longer change, such as an export.
    """

    def __init__(
        self,
        encoder: keras.Model,
        strategy: tf.distribute.Strategy | None = None,
        frozen: bool = False,
    ):
        self.encoder = encoder
        strategy = strategy or tf.distribute.get_strategy()
        with strategy.scope():
            trunk = FoldedTrunk(encoder.backbone)
            self.trunk = trunk.frozen() if frozen else trunk
        self._embed = spread_over_replicas(strategy, self.forward)

    @property
    def weights(self) -> list:
        """The variables a call reads: the frozen trunk's, GeM's and the neck's, or (not
        frozen) all of the encoder's."""
        if isinstance(self.trunk, FoldedTrunk):
            return self.encoder.weights
        return self.trunk.weights + self.encoder.pool.weights + self.encoder.neck.weights

    def forward(self, pixels: tf.Tensor) -> tf.Tensor:
        """One replica's work: RGB pixels [b, H, W, 3] in 0–255 → float32 L2-normalised [b, C]."""
        maps = self.trunk(normalize_pixels(pixels, self.encoder.input_norm), training=False)
        return self.encoder.embed_map(maps, training=False)

    def __call__(self, pixels: tf.Tensor, training: bool = False) -> tf.Tensor:
        """RGB pixels [B, H, W, 3] in 0–255 → float32 L2-normalised embeddings [B, C].

        Inference only (the folded trunk has no batch statistics): ``training`` must be False.
        """
        if training:
            raise ValueError("a FoldedEncoder is for inference; train the encoder it folds")
        return self._embed(pixels)
