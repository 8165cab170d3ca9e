"""Backbone weights: their origin (input normalisation, layout) and the PyTorch importer.

``python -m maskpre_tf.weights import --arch=resnet50|mobilenet_v2 --src=FILE --out=F.weights.h5``
converts torchvision/timm weights; ``python -m maskpre_tf.weights show FILE`` prints a file's
metadata. :mod:`.origin` decides a run's input normalisation and layout from its weights;
:mod:`.convert` imports PyTorch state dicts (:mod:`.torch_keys` maps their names,
:mod:`.safetensors` reads ``.safetensors`` files without torch).
"""
