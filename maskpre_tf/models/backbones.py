"""Backbones: convolutional trunks that map images to a region-level feature map.

Every builder returns a functional ``keras.Model`` from ``[B, H, W, 3]`` normalised images to a
``[B, H/s, W/s, C]`` feature map, where ``s`` is the total stride (16 for ResNet-50 with last
stride 1, so a 256x128 crop gives a 16x8 map, the re-ID standard of Luo et al., "Bag of Tricks",
CVPRW 2019).

- ``resnet50``: ResNet-50 with the stride of stage 5 set to 1; 2048 channels.
- ``mobilenet_v2``: MobileNetV2 (width 1.0) with the stride of its last down-sampling block set
  to 1; 1280 channels.
- ``resnet_small``: a narrow ResNet of basic blocks (He et al., CVPR 2016), total stride 8, for CPU
  work and the demo; 256 channels.

Layouts. The two ImageNet trunks are ``keras.applications`` models; their weights come from Keras
(``"imagenet"``, cached in ``~/.keras/models``; needs network) or from a local Keras weights file
of the unmodified application model (see :mod:`maskpre_tf.weights`). ``layout="keras"`` keeps
the Keras architecture. ``layout="torch"`` rebuilds the trunk the way PyTorch computes it, for
weights imported from torchvision/timm: stride-2 convolutions pad symmetrically (PyTorch's
``padding=k // 2``; Keras's "same" pads bottom/right only), BatchNorm epsilon 1e-5, and for
ResNet-50 the stride of each stage's first bottleneck sits on its 3x3 convolution
(torchvision's "ResNet v1.5"; Keras's ResNet50 strides the first 1x1). Neither change alters the
weights' shapes or order, so both layouts load the same weights file. Under more than one
replica BatchNormalization is synchronised across replicas (``sync_bn=True``); otherwise its
training pass runs fused (:mod:`maskpre_tf.models.batchnorm`).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from maskpre_tf.errors import UserError
from maskpre_tf.models.batchnorm import batch_normalization
from maskpre_tf.models.layers import BN_MOMENTUM

BACKBONES = ("resnet50", "mobilenet_v2", "resnet_small")
# The last layer of each trunk's stages 1-4 (stem, then each down-sampling stage): what
# ``--frozen_stages`` freezes.
STAGE_ENDS = {
    "resnet50": ("pool1_pool", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out"),
    "mobilenet_v2": ("expanded_conv_project_BN", "block_2_add", "block_5_add", "block_12_add"),
    "resnet_small": ("stem_relu", "stage1_block1_out", "stage2_block1_out", "stage3_block1_out"),
}
# The layer whose output is the "inner" masking stage: the map before each trunk's last stage
# (same grid as the output when the last stride is 1).
INNER_STAGE = {
    "resnet50": "conv4_block6_out",
    "mobilenet_v2": "block_13_project_BN",
    "resnet_small": "stage3_block1_out",
}
LAYOUTS = ("keras", "torch")
TORCH_BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d's default


@keras.saving.register_keras_serializable(package="maskpre_tf")
class SymmetricPadConv2D(keras.layers.Conv2D):
    """Conv2D with PyTorch's zero padding: ``dilation * (k - 1) // 2`` cells on every side.

    Keras's ``padding="same"`` with stride 2 on an even input pads only the bottom/right, which
    shifts every output cell by half a pixel against a PyTorch convolution with
    ``padding=k // 2``; this layer pads both sides and then convolves "valid". Same weights as a
    Conv2D of the same configuration. [B, H, W, C] → [B, H', W', filters].
    """

    def __init__(self, *args, **kwargs):
        kwargs["padding"] = "valid"
        super().__init__(*args, **kwargs)

    def _pads(self) -> tuple[int, int]:
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation_rate
        return dh * (kh - 1) // 2, dw * (kw - 1) // 2

    def call(self, inputs):
        ph, pw = self._pads()
        padded = keras.ops.pad(inputs, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
        return super().call(padded)

    def compute_output_shape(self, input_shape):
        ph, pw = self._pads()
        b, h, w, c = input_shape
        padded = (b, None if h is None else h + 2 * ph, None if w is None else w + 2 * pw, c)
        return super().compute_output_shape(padded)


def _application(name: str, input_shape: tuple[int, int, int], weights: str) -> keras.Model:
    """The unmodified keras.applications trunk (no top), with weights loaded."""
    builders = {
        "resnet50": keras.applications.ResNet50,
        "mobilenet_v2": keras.applications.MobileNetV2,
    }
    keras_weights = "imagenet" if weights == "imagenet" else None
    try:
        model = builders[name](include_top=False, weights=keras_weights, input_shape=input_shape)
    except Exception as err:  # download failures surface as many exception types
        if keras_weights != "imagenet":
            raise
        raise UserError(
            f"could not obtain ImageNet weights for {name} ({err}); on a machine without network "
            "access pass --backbone_weights=/path/to/the_keras_notop_weights.h5 (with "
            "--input_norm), a file written by python -m maskpre_tf.weights import, or "
            "--backbone_weights=none"
        ) from err
    if weights not in ("imagenet", "none"):
        try:
            model.load_weights(weights, skip_mismatch=False)
        except Exception as err:
            raise UserError(
                f"--backbone_weights={weights} does not fit keras.applications {name} "
                f"(include_top=False): {err}; pass a weights file of that architecture"
            ) from err
    return model


def _rebuild(
    model: keras.Model, name: str, last_stride: int, layout: str, sync_bn: bool, bn_group: int
) -> keras.Model:
    """Clone an application trunk with the re-ID last stride, the layout and BN settings.

    Strides, padding and epsilons hold no weights, so the clone takes the original's weights
    unchanged (same variables in the same order).
    """
    strides: dict[str, tuple[int, int]] = {}
    repad: dict[str, tuple] = {}
    torch = layout == "torch"
    if name == "resnet50":
        # conv{3,4,5}_block1 down-sample: Keras strides the first 1x1, torchvision the 3x3.
        for stage in (3, 4, 5):
            stride = (1, 1) if stage == 5 and last_stride == 1 else (2, 2)
            prefix = f"conv{stage}_block1"
            strides[f"{prefix}_0_conv"] = stride
            if torch:
                strides[f"{prefix}_1_conv"] = (1, 1)
                strides[f"{prefix}_2_conv"] = stride
            else:
                strides[f"{prefix}_1_conv"] = stride
    else:  # mobilenet_v2: ZeroPadding2D + "valid" depthwise convs down-sample
        if torch:
            repad = {n: ((1, 1), (1, 1)) for n in ("block_1_pad", "block_3_pad", "block_6_pad")}
        if last_stride == 1:
            # With stride 1 the 3x3 depthwise conv needs symmetric padding to keep the map size.
            strides["block_13_depthwise"] = (1, 1)
            repad["block_13_pad"] = ((1, 1), (1, 1))
        elif torch:
            repad["block_13_pad"] = ((1, 1), (1, 1))

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if layer.name in strides:
            config["strides"] = strides[layer.name]
        if layer.name in repad:
            config["padding"] = repad[layer.name]
        if isinstance(layer, keras.layers.BatchNormalization):
            config["momentum"] = BN_MOMENTUM
            if torch:
                config["epsilon"] = TORCH_BN_EPSILON
            return batch_normalization(**{**config, "synchronized": sync_bn}, group_size=bn_group)
        if (
            torch
            and type(layer) is keras.layers.Conv2D
            and config["padding"] == "same"
            and tuple(config["strides"]) != (1, 1)
        ):
            return SymmetricPadConv2D.from_config(config)
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone


def _basic_block(x, filters: int, stride: int, name: str, bn):
    """ResNet basic block: two 3x3 convs with a projection shortcut when the shape changes."""
    shortcut = x
    y = keras.layers.Conv2D(
        filters, 3, stride, padding="same", use_bias=False, name=f"{name}_conv1"
    )(x)
    y = bn(f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(filters, 3, 1, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = bn(f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, stride, use_bias=False, name=f"{name}_proj")(x)
        shortcut = bn(f"{name}_proj_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet_small(
    input_shape: tuple[int, int, int],
    sync_bn: bool = False,
    bn_group: int = 0,
    widths: tuple[int, ...] = (32, 64, 128, 256),
    blocks: tuple[int, ...] = (1, 1, 1, 1),
) -> keras.Model:
    """A narrow ResNet of basic blocks with total stride 8 (stem 2, stages 1, 2, 2, 1).

    Args:
      input_shape: (H, W, 3).
      sync_bn: synchronise BatchNormalization across replicas.
      bn_group: BatchNorm statistics over groups of this many images (0: the whole batch).
      widths: channels of the four stages; the output has ``widths[-1]`` channels.
      blocks: basic blocks per stage.
    Returns:
      A model from [B, H, W, 3] to [B, H/8, W/8, widths[-1]].
    """

    def bn(name):
        return batch_normalization(
            momentum=BN_MOMENTUM, synchronized=sync_bn, group_size=bn_group, name=name
        )

    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(widths[0], 3, 2, padding="same", use_bias=False, name="stem_conv")(
        inputs
    )
    x = bn("stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    strides = (1, 2, 2, 1)
    for stage, (filters, depth, stride) in enumerate(zip(widths, blocks, strides, strict=True)):
        for block in range(depth):
            x = _basic_block(
                x, filters, stride if block == 0 else 1, f"stage{stage + 1}_block{block + 1}", bn
            )
    return keras.Model(inputs, x, name="resnet_small")


def build_backbone(
    name: str,
    input_shape: tuple[int, int, int],
    weights: str = "none",
    last_stride: int = 1,
    sync_bn: bool = False,
    layout: str = "keras",
    bn_group: int = 0,
) -> keras.Model:
    """Build a backbone trunk; see the module docstring for the choices.

    Args:
      name: one of ``BACKBONES``.
      input_shape: (H, W, 3) of the normalised input.
      weights: "imagenet", "none", or a path to a Keras weights file of the application model.
      last_stride: 1 (re-ID standard) or 2 (the ImageNet trunk as it is).
      sync_bn: synchronise BatchNormalization across replicas.
      layout: "keras" or "torch" (how the weights were trained; see the module docstring).
      bn_group: BatchNorm statistics over groups of this many images (0: the whole batch;
        grouping replaces synchronising).
    Returns:
      A functional model from [B, H, W, 3] to the feature map [B, h, w, C].
    """
    if name not in BACKBONES:
        raise UserError(f"--backbone={name} is unknown; choose one of {', '.join(BACKBONES)}")
    if last_stride not in (1, 2):
        raise UserError(f"--last_stride={last_stride}: expected 1 or 2")
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    if name == "resnet_small":
        if weights != "none":
            raise UserError("resnet_small has no pre-trained weights; use --backbone_weights=none")
        return resnet_small(input_shape, sync_bn=sync_bn, bn_group=bn_group)
    model = _application(name, input_shape, weights)
    return _rebuild(model, name, last_stride, layout, sync_bn, bn_group)


@dataclass(frozen=True)
class SplitBackbone:
    """A backbone cut after one layer: ``back(front(x))`` equals ``backbone(x)``.

    The two functional models share the backbone's layers and hold no weights of their own; a
    plain object, so a Keras model holding one tracks (and checkpoints) nothing twice.
    """

    front: keras.Model
    back: keras.Model


def split_backbone(backbone: keras.Model, layer: str) -> SplitBackbone:
    """The backbone cut after ``layer``: input → ``layer`` (front), ``layer`` → output (back)."""
    middle = backbone.get_layer(layer).output
    return SplitBackbone(
        keras.Model(backbone.input, middle, name=f"{backbone.name}_front"),
        keras.Model(middle, backbone.output, name=f"{backbone.name}_back"),
    )


def freeze_stages(backbone: keras.Model, name: str, stages: int) -> None:
    """Freeze the first ``stages`` stages of a trunk (weights fixed, BatchNorm in inference mode).

    Fine-tuning from ImageNet changes the early, generic layers least, and they are the most
    expensive to back-propagate through at high resolution; freezing them buys steps per minute.
    """
    if not 0 <= stages <= len(STAGE_ENDS[name]):
        raise UserError(f"--frozen_stages={stages}: expected 0..{len(STAGE_ENDS[name])}")
    if stages == 0:
        return
    end = STAGE_ENDS[name][stages - 1]
    for layer in backbone.layers:
        layer.trainable = False
        if layer.name == end:
            return
    raise ValueError(f"{name} has no layer {end!r}")
