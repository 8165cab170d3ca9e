"""The re-ID encoder: normalisation, backbone, GeM pooling and BN neck, and its builder.

Student and teacher of :class:`~maskpre_tf.models.maskpre.MaskPre`, the supervised source model
and every embedder (evaluation, search, export) are instances of :class:`ReidEncoder`.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from maskpre_tf.config import ModelConfig
from maskpre_tf.models.layers import BN_MOMENTUM, GeMPooling
from maskpre_tf.models.normalization import check_input_norm, normalize_pixels


class ReidEncoder(keras.Model):
    """Normalisation + backbone + GeM + BN neck: RGB pixels [B, H, W, 3] in 0–255 → [B, C].

    The encoder normalises its input itself (``input_norm``, the convention of the backbone's
    weights; see :mod:`maskpre_tf.models.normalization`), so every caller feeds plain pixels.
    The BN neck (Luo et al., CVPRW 2019) normalises the pooled feature; its shift is frozen
    (``center=False``), as in the bag-of-tricks neck. The embedding is L2-normalised.
    """

    def __init__(
        self,
        backbone: keras.Model,
        input_norm: str = "torch",
        sync_bn: bool = False,
        gem_p: float = 3.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.input_norm = check_input_norm(input_norm)
        self.pool = GeMPooling(p=gem_p, name="gem")
        self.neck = keras.layers.BatchNormalization(
            center=False, momentum=BN_MOMENTUM, synchronized=sync_bn, name="bn_neck"
        )

    @property
    def channels(self) -> int:
        """C: channels of the feature map and dimension of the embedding."""
        return int(self.backbone.output.shape[-1])

    def feature_map(self, pixels: tf.Tensor, training: bool = False) -> tf.Tensor:
        """RGB pixels [B, H, W, 3] in 0–255 → the backbone's region-level map [B, h, w, C]."""
        return self.backbone(normalize_pixels(pixels, self.input_norm), training=training)

    def embed_map(self, feature_map: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Feature map [B, h, w, C] → float32 L2-normalised embedding [B, C]."""
        pooled = self.neck(self.pool(feature_map), training=training)
        return tf.math.l2_normalize(tf.cast(pooled, tf.float32), axis=-1)

    def call(self, pixels: tf.Tensor, training: bool = False) -> tf.Tensor:
        """RGB pixels [B, H, W, 3] in 0–255 → float32 L2-normalised embeddings [B, C]."""
        return self.embed_map(self.feature_map(pixels, training=training), training=training)


def build_encoder(
    model: ModelConfig,
    image_shape: tuple[int, int, int],
    sync_bn: bool = False,
    weights: str | None = None,
    name: str = "encoder",
) -> ReidEncoder:
    """A :class:`ReidEncoder` for ``model`` (backbone, weights, layout, input norm), built.

    Args:
      model: the model section of the run's configuration; an empty ``input_norm`` (a config
        built in code, not from flags) is resolved from the weights first.
      image_shape: (H, W, 3) of the input.
      sync_bn: synchronise BatchNormalization across replicas.
      weights: override ``model.backbone_weights`` (e.g. "none" for a teacher that is
        overwritten).
      name: model name.
    """
    from maskpre_tf.models.backbones import build_backbone, freeze_stages

    if not model.input_norm:
        from maskpre_tf.weights.origin import resolve_origin

        origin = resolve_origin(model.backbone, model.backbone_weights)
        model = dataclasses.replace(model, input_norm=origin.input_norm, layout=origin.layout)
    backbone = build_backbone(
        model.backbone,
        image_shape,
        weights=model.backbone_weights if weights is None else weights,
        last_stride=model.last_stride,
        sync_bn=sync_bn,
        layout=model.layout,
        bn_group=model.bn_group_size,
    )
    freeze_stages(backbone, model.backbone, model.frozen_stages)
    encoder = ReidEncoder(backbone, input_norm=model.input_norm, sync_bn=sync_bn, name=name)
    encoder(tf.zeros((1, *image_shape)))
    return encoder
