"""What the training loop and the epoch's stages need from a model, declared.

:class:`~maskpre_tf.models.maskpre.MaskPre` keeps all three contracts,
:class:`~maskpre_tf.models.supervised.SupervisedReid` (source pre-training) the first. The
models implement them without importing this module (``models/`` imports nothing from
``training/``); tests check them with ``isinstance`` (the protocols are runtime-checkable).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import keras
import numpy as np
import tensorflow as tf

from maskpre_tf.models.step import StepOutput


@runtime_checkable
class TrainableModel(Protocol):
    """A model the :class:`~maskpre_tf.training.loop.Trainer` steps.

    ``train_step`` runs in replica context on one replica's share of the batch;
    ``finish_step`` runs in cross-replica context with the global batch's output (losses summed,
    per-sample fields gathered); ``metrics`` are reset each epoch and read at its end.
    """

    optimizer: keras.optimizers.Optimizer

    @property
    def metrics(self) -> list: ...

    def train_step(self, batch: dict[str, tf.Tensor]) -> StepOutput: ...

    def finish_step(self, out: StepOutput) -> None: ...


@runtime_checkable
class ClusteredModel(TrainableModel, Protocol):
    """A model whose memories the per-epoch clustering resets (under its strategy's scope)."""

    @property
    def distribute_strategy(self) -> tf.distribute.Strategy: ...

    def reset_memories(
        self, features: np.ndarray, labels: np.ndarray, camids: np.ndarray | None = None
    ) -> None: ...


@runtime_checkable
class MonitoredModel(Protocol):
    """What TensorBoard plots of a model besides the epoch's logs."""

    def drop_rate(self) -> tf.Tensor: ...

    def ema_momentum(self) -> tf.Tensor: ...

    def mask_panel(self, pixels: tf.Tensor) -> tf.Tensor: ...
