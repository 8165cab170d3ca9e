"""maskpre-tf: unsupervised person re-identification by simultaneous clustering and mask prediction.

A TensorFlow/Keras implementation of MaskPre (Yin, Zhang, Xie, Ma, Guo; Pattern Recognition 126,
2022, 108568): unlabelled person crops in, a re-ID embedding model out.

Embedding images with a trained model (:mod:`maskpre_tf.embedder`)::

    from maskpre_tf import load_embedder
    embedder = load_embedder("runs/market")       # a training run's --run_dir, or a SavedModel
    features = embedder.embed("crops/")           # float32 [N, D], L2-normalised rows
    paths = embedder.image_files("crops/")        # the N files, in the same (sorted) order
    similarity = features @ features.T            # cosine similarity

``load_embedder`` and ``Embedder`` load on first use: importing the package does not import
TensorFlow (:mod:`maskpre_tf.lazy`).
"""

from maskpre_tf.lazy import lazy_attributes

__version__ = "0.1.0"

# Public name -> the submodule that defines it (imported when the name is first used).
_MODULE_OF = {"Embedder": "embedder", "load_embedder": "inference"}

__all__ = ["__version__", *sorted(_MODULE_OF)]
__getattr__, __dir__ = lazy_attributes(__name__, _MODULE_OF)
