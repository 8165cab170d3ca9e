"""Backbone weights: their origin (input normalisation, layout) and the PyTorch importer.

``python -m maskpre_tf.weights import --arch=resnet50|mobilenet_v2 --src=FILE --out=F.weights.h5``
converts torchvision/timm weights; ``python -m maskpre_tf.weights show FILE`` prints a file's
metadata. See :mod:`maskpre_tf.weights.origin` and :mod:`maskpre_tf.weights.convert`.
"""

from maskpre_tf.weights.origin import WeightsOrigin, read_metadata, resolve_origin

__all__ = ["WeightsOrigin", "read_metadata", "resolve_origin"]
