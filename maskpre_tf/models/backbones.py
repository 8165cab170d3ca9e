"""Backbones: convolutional trunks that map images to a region-level feature map.

Every builder returns a functional ``keras.Model`` from ``[B, H, W, 3]`` normalised images to a
``[B, H/s, W/s, C]`` feature map, where ``s`` is the total stride (16 for ResNet-50 with last
stride 1, so a 256x128 crop gives a 16x8 map, the re-ID standard of Luo et al., "Bag of Tricks",
CVPRW 2019).

- ``resnet50``: ``keras.applications.ResNet50`` with the stride of stage 5 set to 1; 2048 channels.
- ``mobilenet_v2``: ``keras.applications.MobileNetV2`` with the stride of its last down-sampling
  block set to 1; 1280 channels.
- ``resnet_small``: a narrow ResNet of basic blocks (He et al., CVPR 2016), total stride 8, for CPU
  work and the demo; 256 channels.

Weights: ``"imagenet"`` uses Keras's own download (cached in ``~/.keras/models``; needs network),
a file path loads a local Keras weights file of the unmodified application model (e.g. the
``*_notop.h5`` file Keras would download), ``"none"`` starts from random initialisation. Under more
than one replica BatchNormalization is synchronised across replicas (``sync_bn=True``).
"""

from __future__ import annotations

import os

import keras

from maskpre_tf.errors import UserError

BACKBONES = ("resnet50", "mobilenet_v2", "resnet_small")


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
            "access pass --backbone_weights=/path/to/the_keras_notop_weights.h5 or "
            "--backbone_weights=none"
        ) from err
    if weights not in ("imagenet", "none"):
        if not os.path.isfile(weights):
            raise UserError(
                f"--backbone_weights={weights}: no such file; expected a Keras weights file of "
                f"the {name} application without top, 'imagenet' or 'none'"
            )
        try:
            model.load_weights(weights, skip_mismatch=False)
        except Exception as err:
            raise UserError(
                f"--backbone_weights={weights} does not fit keras.applications {name} "
                f"(include_top=False): {err}"
            ) from err
    return model


def _restride(model: keras.Model, stride_one: set[str], repad: dict[str, tuple],
              sync_bn: bool) -> keras.Model:
    """Clone ``model`` with some strides set to 1, some paddings replaced and synced BN.

    Strides and padding hold no weights, so the clone takes the original's weights unchanged.
    """

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if layer.name in stride_one:
            config["strides"] = (1, 1)
        if layer.name in repad:
            config["padding"] = repad[layer.name]
        if sync_bn and isinstance(layer, keras.layers.BatchNormalization):
            config["synchronized"] = True
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone


def _basic_block(x, filters: int, stride: int, name: str, bn):
    """ResNet basic block: two 3x3 convs with a projection shortcut when the shape changes."""
    shortcut = x
    y = keras.layers.Conv2D(filters, 3, stride, padding="same", use_bias=False,
                            name=f"{name}_conv1")(x)
    y = bn(f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(filters, 3, 1, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = bn(f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, stride, use_bias=False,
                                       name=f"{name}_proj")(x)
        shortcut = bn(f"{name}_proj_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet_small(input_shape: tuple[int, int, int], sync_bn: bool = False,
                 widths: tuple[int, ...] = (32, 64, 128, 256),
                 blocks: tuple[int, ...] = (1, 1, 1, 1)) -> keras.Model:
    """A narrow ResNet of basic blocks with total stride 8 (stem 2, stages 1, 2, 2, 1).

    Args:
      input_shape: (H, W, 3).
      sync_bn: synchronise BatchNormalization across replicas.
      widths: channels of the four stages; the output has ``widths[-1]`` channels.
      blocks: basic blocks per stage.
    Returns:
      A model from [B, H, W, 3] to [B, H/8, W/8, widths[-1]].
    """

    def bn(name):
        return keras.layers.BatchNormalization(synchronized=sync_bn, name=name)

    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(widths[0], 3, 2, padding="same", use_bias=False,
                            name="stem_conv")(inputs)
    x = bn("stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    strides = (1, 2, 2, 1)
    for stage, (filters, depth, stride) in enumerate(zip(widths, blocks, strides, strict=True)):
        for block in range(depth):
            x = _basic_block(x, filters, stride if block == 0 else 1,
                             f"stage{stage + 1}_block{block + 1}", bn)
    return keras.Model(inputs, x, name="resnet_small")


def build_backbone(name: str, input_shape: tuple[int, int, int], weights: str = "none",
                   last_stride: int = 1, sync_bn: bool = False) -> keras.Model:
    """Build a backbone trunk; see the module docstring for the choices.

    Args:
      name: one of ``BACKBONES``.
      input_shape: (H, W, 3) of the normalised input.
      weights: "imagenet", "none", or a path to a Keras weights file.
      last_stride: 1 (re-ID standard) or 2 (the ImageNet trunk as it is).
      sync_bn: synchronise BatchNormalization across replicas.
    Returns:
      A functional model from [B, H, W, 3] to the feature map [B, h, w, C].
    """
    if name not in BACKBONES:
        raise UserError(f"--backbone={name} is unknown; choose one of {', '.join(BACKBONES)}")
    if last_stride not in (1, 2):
        raise UserError(f"--last_stride={last_stride}: expected 1 or 2")
    if name == "resnet_small":
        if weights != "none":
            raise UserError("resnet_small has no pre-trained weights; use --backbone_weights=none")
        return resnet_small(input_shape, sync_bn=sync_bn)
    model = _application(name, input_shape, weights)
    stride_one: set[str] = set()
    repad: dict[str, tuple] = {}
    if last_stride == 1 and name == "resnet50":
        stride_one = {"conv5_block1_1_conv", "conv5_block1_0_conv"}
    if last_stride == 1 and name == "mobilenet_v2":
        # block_13 pads (0,1),(0,1) then runs a valid 3x3 depthwise conv with stride 2; with
        # stride 1 it needs symmetric padding to keep the map size.
        stride_one = {"block_13_depthwise"}
        repad = {"block_13_pad": ((1, 1), (1, 1))}
    if not (stride_one or sync_bn):
        return model
    return _restride(model, stride_one, repad, sync_bn)
