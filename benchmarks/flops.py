"""Floating-point operations per image of the measured steps, counted from the models' layers.

Only convolutions and dense layers are counted (2 FLOPs per multiply-add); BatchNorm,
activations, pooling, losses and the memory's logits are element-wise or small beside them.
A training step's backward pass costs twice its forward pass (the gradients of the inputs and
of the weights, each one convolution of the forward's size), so a trained network costs 3x its
forward FLOPs and an inference-only one (the EMA teacher, feature extraction) 1x.
"""

from __future__ import annotations

import math

import keras

DENSE_LIKE = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def layer_flops(layer: keras.layers.Layer) -> int:
    """Forward FLOPs per image of one Conv2D, DepthwiseConv2D or Dense layer (else 0).

    Read from the layer's kernel and its output shape in its functional model:
    2 x output positions x output channels x (kernel height x width x input channels / groups)
    for a convolution, 2 x output positions x channels x kernel area for a depthwise one.
    """
    if not isinstance(layer, DENSE_LIKE) or not getattr(layer, "_inbound_nodes", None):
        return 0
    out_shape = layer.output.shape
    positions = math.prod(int(d) for d in out_shape[1:-1])
    kernel = tuple(int(d) for d in layer.kernel.shape)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        # kernel [kh, kw, C_in, multiplier]: one kh x kw filter per output channel.
        return 2 * positions * kernel[0] * kernel[1] * kernel[2] * kernel[3]
    # Conv2D kernel [kh, kw, C_in / groups, C_out], Dense [C_in, C_out]: one weight per MAC.
    return 2 * positions * math.prod(kernel)


def forward_flops(model: keras.Model) -> int:
    """Forward FLOPs per image of a functional model, nested models included."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer)
        else:
            total += layer_flops(layer)
    return total


def mask_head_flops(cells: int, channels: int, hidden: int, views: int, rate: float) -> int:
    """Forward FLOPs per image of the mask-prediction head as the training step runs it.

    The 1x1 reduction once for both views, the 3x3 context per view, the 1x1 expansion per view
    at the dropped cells only (``rate`` of the ``cells`` of an h x w map).
    """
    reduce = 2 * cells * channels * hidden
    context = 2 * cells * 9 * hidden * hidden
    expand = 2 * round(rate * cells) * hidden * channels
    return reduce + views * (context + expand)


def step_flops(model, drop_rate: float, mask_weight: float, teacher: bool) -> int:
    """FLOPs per image of one MaskPre training step (forward + backward + teacher forward).

    Args:
      model: a built :class:`~maskpre_tf.models.maskpre.MaskPre`.
      drop_rate: the DropBlock rate (0: one view, the plain step).
      mask_weight: 0 when the mask head is off.
      teacher: whether the step runs the teacher's forward (mask or consistency terms on).
    """
    backbone = model.student.backbone
    views = 2 if drop_rate > 0 else 1
    split = model.student_split
    if split is None:  # masked after the last stage: the trunk runs once for both views
        trunk = forward_flops(backbone)
    else:  # masked before the last stage: the last stage runs once per view
        trunk = forward_flops(split.front) + views * forward_flops(split.back)
    total = 3 * trunk
    if mask_weight > 0:
        shape = backbone.output.shape
        cells = int(shape[1]) * int(shape[2])
        head = model.mask_head
        total += 3 * mask_head_flops(cells, head.channels, head.hidden, views, drop_rate)
    if teacher:
        total += forward_flops(model.teacher.backbone)
    return total
