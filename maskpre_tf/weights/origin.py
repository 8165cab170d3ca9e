"""Where a backbone's weights come from decides how its input is normalised and laid out.

:func:`resolve_origin` is called once at start-up with ``--backbone``, ``--backbone_weights`` and
``--input_norm``; the result is recorded in the run's ``config.json``, its checkpoints and its
exports. Weights files written by ``python -m maskpre_tf.weights import`` carry their metadata
inside the HDF5 file (root attribute :data:`METADATA_ATTR`, JSON).
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

from maskpre_tf.errors import UserError
from maskpre_tf.models.normalization import INPUT_NORMS

METADATA_ATTR = "maskpre_tf_weights"
# keras.applications ImageNet weights and the preprocess_input they were trained with.
KERAS_IMAGENET_NORM = {"resnet50": "caffe", "mobilenet_v2": "tf"}
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


class WeightsOrigin(NamedTuple):
    """input_norm: one of INPUT_NORMS; layout: "keras" | "torch" (see models.backbones)."""

    input_norm: str
    layout: str


def read_metadata(path: str) -> dict | None:
    """The metadata stored in a weights file by the importer, or None for a plain Keras file.

    Raises:
      UserError: the file is not a readable HDF5 file.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            text = f.attrs.get(METADATA_ATTR)
    except OSError as err:
        raise UserError(
            f"--backbone_weights={path}: not a readable Keras weights file ({err}); "
            "is it truncated? Re-copy it or import it again"
        ) from err
    if text is None:
        return None
    return json.loads(text)


def _check_agrees(flag: str, known: str, why: str) -> None:
    if flag and flag != known:
        raise UserError(
            f"--input_norm={flag} contradicts {why}, which expect {known}; drop "
            "--input_norm (it is decided by the weights)"
        )


def resolve_origin(backbone: str, backbone_weights: str, input_norm: str = "") -> WeightsOrigin:
    """The input normalisation and layout of ``backbone`` with ``backbone_weights``.

    Args:
      backbone: resnet50 | mobilenet_v2 | resnet_small.
      backbone_weights: "imagenet" (Keras), "none" (random), or a weights file.
      input_norm: the explicit ``--input_norm`` ("" = decided by the weights).

    Raises:
      UserError: a file of unknown origin without ``--input_norm``, a PyTorch file that needs
        importing first, a file for another architecture, or a contradicting ``--input_norm``.
    """
    if input_norm and input_norm not in INPUT_NORMS:
        raise UserError(f"--input_norm={input_norm}: expected one of {', '.join(INPUT_NORMS)}")
    if backbone_weights == "none":
        return WeightsOrigin(input_norm or "torch", "keras")
    if backbone_weights == "imagenet":
        if backbone not in KERAS_IMAGENET_NORM:
            raise UserError(
                f"--backbone={backbone} has no ImageNet weights; use --backbone_weights=none"
            )
        norm = KERAS_IMAGENET_NORM[backbone]
        _check_agrees(input_norm, norm, f"Keras's ImageNet {backbone} weights")
        return WeightsOrigin(norm, "keras")
    path = backbone_weights
    if not os.path.isfile(path):
        raise UserError(
            f"--backbone_weights={path}: no such file; expected 'imagenet', 'none' "
            "or a Keras weights file"
        )
    if path.endswith(TORCH_SUFFIXES):
        raise UserError(
            f"--backbone_weights={path} is a PyTorch/safetensors checkpoint; convert "
            f"it first: python -m maskpre_tf.weights import --arch={backbone} "
            f"--src={path} --out=<name>.weights.h5"
        )
    meta = read_metadata(path)
    if meta is None:
        if not input_norm:
            raise UserError(
                f"--backbone_weights={path} does not say how its inputs were normalised; pass "
                "--input_norm=caffe (keras.applications ResNet50 files), --input_norm=tf (Keras "
                "MobileNetV2 files) or --input_norm=torch (torchvision-trained), or import "
                "PyTorch weights with python -m maskpre_tf.weights import"
            )
        return WeightsOrigin(input_norm, "keras")
    if meta.get("arch") != backbone:
        raise UserError(
            f"--backbone_weights={path} holds {meta.get('arch')} weights but "
            f"--backbone={backbone}; pass --backbone={meta.get('arch')} or other "
            "weights"
        )
    _check_agrees(input_norm, meta["input_norm"], f"{path}'s metadata")
    return WeightsOrigin(meta["input_norm"], meta["layout"])
