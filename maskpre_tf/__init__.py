"""maskpre-tf: unsupervised person re-identification by simultaneous clustering and mask prediction.

A TensorFlow/Keras implementation of MaskPre (Yin, Zhang, Xie, Ma, Guo; Pattern Recognition 126,
2022, 108568): unlabelled person crops in, a re-ID embedding model out.
"""

__version__ = "0.1.0"
