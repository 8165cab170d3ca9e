"""Input normalisation: how 0–255 RGB pixels become a backbone's input, a property of its weights.

Every encoder takes RGB pixels in 0–255 and normalises them itself with :func:`normalize_pixels`,
so training, evaluation, gallery search, the serving graph and the warmup requests all feed the
network through this one function. The convention belongs to the weights, not to the backbone:

* ``caffe`` — the Keras ImageNet ResNet-50 weights (``keras.applications.resnet``'s
  ``preprocess_input``): RGB → BGR, subtract the per-channel ImageNet mean on the 0–255 scale.
* ``tf`` — the Keras ImageNet MobileNetV2 weights (``keras.applications.mobilenet_v2``):
  x / 127.5 − 1, i.e. [−1, 1].
* ``torch`` — torchvision/timm-trained weights (and weights imported from them): x / 255, then
  (x − mean) / std per RGB channel with the ImageNet statistics.

Each is computed with the same float32 operations in the same order as Keras's
``preprocess_input``, so a uint8 image normalises to bit-identical values.
"""

from __future__ import annotations

import tensorflow as tf

from maskpre_tf.config_fields import INPUT_NORMS

# ImageNet channel statistics as Keras's ``imagenet_utils`` states them.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # 0–255 scale, B, G, R
TORCH_MEAN = (0.485, 0.456, 0.406)  # 0–1 scale, R, G, B
TORCH_STD = (0.229, 0.224, 0.225)


def check_input_norm(norm: str) -> str:
    """Return ``norm`` if it names a convention; raise ValueError otherwise."""
    if norm not in INPUT_NORMS:
        raise ValueError(f"input normalisation {norm!r}: expected one of {', '.join(INPUT_NORMS)}")
    return norm


def normalize_pixels(pixels: tf.Tensor, norm: str) -> tf.Tensor:
    """Normalise RGB pixels for a backbone whose weights expect ``norm``.

    Args:
      pixels: float or integer tensor [..., 3], RGB in 0–255 (channels last).
      norm: one of :data:`INPUT_NORMS`.

    Returns:
      float32 tensor of the same shape: BGR minus the mean pixel (``caffe``), [−1, 1] (``tf``)
      or ImageNet-standardised RGB (``torch``).
    """
    x = tf.cast(pixels, tf.float32)
    check_input_norm(norm)
    if norm == "tf":
        return x / 127.5 - 1.0
    if norm == "torch":
        return (x / 255.0 - tf.constant(TORCH_MEAN, tf.float32)) / tf.constant(
            TORCH_STD, tf.float32
        )
    return tf.reverse(x, axis=[-1]) - tf.constant(CAFFE_MEAN_BGR, tf.float32)


def describe(norm: str) -> dict:
    """A JSON-serialisable description of ``norm`` for export metadata and serving clients.

    Returns:
      {"input_norm", "formula", "channel_order", "mean", "std"}; ``mean``/``std`` are on the
      0–255 scale in the order the network receives the channels (``std`` is None for caffe,
      and for tf they express x / 127.5 − 1 as (x − 127.5) / 127.5).
    """
    check_input_norm(norm)
    if norm == "tf":
        return {
            "input_norm": norm,
            "formula": "x / 127.5 - 1",
            "channel_order": "RGB",
            "mean": [127.5] * 3,
            "std": [127.5] * 3,
        }
    if norm == "torch":
        return {
            "input_norm": norm,
            "formula": "(x / 255 - mean) / std",
            "channel_order": "RGB",
            "mean": [255.0 * m for m in TORCH_MEAN],
            "std": [255.0 * s for s in TORCH_STD],
        }
    return {
        "input_norm": norm,
        "formula": "BGR(x) - mean",
        "channel_order": "BGR",
        "mean": list(CAFFE_MEAN_BGR),
        "std": None,
    }
