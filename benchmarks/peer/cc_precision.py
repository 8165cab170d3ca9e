"""bfloat16 autocast and channels-last inputs for cluster-contrast's trainer and extraction.

Its ``ClusterContrastTrainer._forward`` and ``evaluators.extract_cnn_feature`` are wrapped so
that they read a ``Precision`` at every call; the timing mode flips it between measurements.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass
class Precision:
    """Switches read by the wrappers at every call.

    ``train_bf16``: the model's training forward runs under bfloat16 autocast and hands a
    float32 (N, D) embedding to its ClusterMemory loss (autocast around the memory as well
    fails in its ``CM.backward``). ``extract_bf16``: feature extraction (clustering and
    evaluation) is autocast too; its (N, D) features come back as float32 for faiss.
    """

    train_bf16: bool = False
    extract_bf16: bool = False


def autocast(enabled: bool):
    """``torch.autocast`` to bfloat16 on CPU if ``enabled``, else a no-op context."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def install_precision(prec: Precision, channels_last: bool = False):
    """Wrap its trainer forward and per-batch extraction to follow ``prec``.

    With ``channels_last`` the (N, 3, H, W) training batches are made channels-last
    contiguous (the model is converted where it is built, in ``cc_model``).
    """
    import clustercontrast.evaluators as cc_eval
    import clustercontrast.trainers as cc_trainers

    trainer_cls = cc_trainers.ClusterContrastTrainer
    orig_forward = trainer_cls._forward

    def _forward(self, inputs):
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        if not prec.train_bf16:
            return orig_forward(self, inputs)
        with autocast(True):
            return orig_forward(self, inputs).float()

    trainer_cls._forward = _forward
    orig_cnn = cc_eval.extract_cnn_feature

    def extract_cnn_feature(model, inputs):
        with autocast(prec.extract_bf16):
            out = orig_cnn(model, inputs)
        return out.float()

    cc_eval.extract_cnn_feature = extract_cnn_feature
