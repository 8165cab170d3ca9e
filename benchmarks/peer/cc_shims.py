"""Run-time shims that let cluster-contrast's CUDA-only code run unmodified on a CPU.

Each patch replaces an attribute in memory (its files are not touched) and is described in
``SHIMS``, which the JSON output records. ``install_cpu_shims`` must run before its training
script is imported, since the script binds ``compute_jaccard_distance`` at import.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

SHIMS = {
    "cuda_noop": "torch.Tensor.cuda and torch.nn.Module.cuda return self: the script, trainer, "
    "evaluator and ClusterMemory call .cuda() unconditionally.",
    "faiss_cpu_knn": "compute_jaccard_distance is called with search_option=3 (faiss.IndexFlatL2 "
    "on CPU, exact k-NN as its GPU options compute); the script calls it with the default "
    "search_option=0, which builds faiss.StandardGpuResources, absent in faiss-cpu.",
    "torch_load_numpy_scalar": "numpy's scalar/dtype classes are added to torch's weights_only "
    "safe globals: its checkpoint stores best_mAP as numpy.float64 and its load_checkpoint "
    "uses torch.load's default weights_only=True (PyTorch >= 2.6), which would refuse it when "
    "the script reloads model_best.pth.tar for the final test.",
    "sampler_init_arg": "torch.utils.data.Sampler gets back an __init__(self, data_source=None) "
    "that ignores its argument, as PyTorch < 2.2 had: its RandomMultipleGallerySampler calls "
    "super().__init__(data_source), which newer PyTorch (no Sampler.__init__) rejects with a "
    "TypeError.",
}


def install_cpu_shims():
    """Apply the four patches of ``SHIMS``."""
    import clustercontrast.utils.faiss_rerank as cc_rerank
    from torch.utils.data import Sampler

    # cuda_noop
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self

    # faiss_cpu_knn: search_option 3 = faiss.IndexFlatL2 on CPU.
    orig_jaccard = cc_rerank.compute_jaccard_distance

    @functools.wraps(orig_jaccard)
    def compute_jaccard_distance(*args, **kwargs):
        kwargs["search_option"] = 3
        return orig_jaccard(*args, **kwargs)

    cc_rerank.compute_jaccard_distance = compute_jaccard_distance

    # torch_load_numpy_scalar
    try:
        scalar = np._core.multiarray.scalar  # numpy >= 2
    except AttributeError:
        scalar = np.core.multiarray.scalar
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64)]
    torch.serialization.add_safe_globals([scalar, np.dtype, *dtypes])

    # sampler_init_arg (PyTorch < 2.2 ignored the argument too, bar a deprecation warning)
    if "__init__" not in vars(Sampler):
        Sampler.__init__ = lambda self, data_source=None: None
