"""Supervised pre-training on a labelled source domain (the start of domain adaptation).

The strong re-ID baseline of Luo et al. (CVPRW 2019) as MMT and SpCL use it for their source
models: the encoder's BN-neck feature feeds an identity classifier trained with label-smoothed
cross-entropy (ε = 0.1), and the pooled feature before the neck gets a batch-hard triplet loss
(margin 0.3; Hermans et al., 2017). The encoder is shared with the MaskPre model, so what it
learns here is where unsupervised training on the target starts.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from maskpre_tf import losses
from maskpre_tf.models.encoder import ReidEncoder
from maskpre_tf.models.optimizer import apply_gradients_with_l2
from maskpre_tf.models.step import STATE_CHECK, StepOutput, state_check


class SupervisedReid(keras.Model):
    """Encoder + identity classifier for labelled pre-training.

    Args:
      encoder: the (student) encoder to train; shared, not copied.
      num_ids: number of source identities (labels in 0..num_ids-1).
      global_batch_size: batch size over all replicas.
      weight_decay: L2 added to the gradients (split over replicas).
    """

    def __init__(
        self,
        encoder: ReidEncoder,
        num_ids: int,
        global_batch_size: int,
        weight_decay: float = 5e-4,
        margin: float = 0.3,
        epsilon: float = 0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.classifier = keras.layers.Dense(
            num_ids, use_bias=False, name="classifier", dtype="float32"
        )
        self.global_batch_size = int(global_batch_size)
        self.weight_decay = weight_decay
        self.margin = margin
        self.epsilon = epsilon
        self.trackers = {
            name: keras.metrics.Mean(name=name) for name in ("loss", "ce_loss", "triplet_loss")
        }

    @property
    def metrics(self) -> list:
        return list(self.trackers.values())

    def build_all(self, image_shape: tuple[int, int, int]) -> None:
        """Create every variable (call under the strategy scope)."""
        self.classifier(tf.zeros((1, self.encoder.channels)))

    def train_step(self, batch: dict[str, tf.Tensor]) -> StepOutput:
        """One labelled step (replica context); losses scaled by the global batch."""
        labels = batch["label"]
        variables = self.encoder.trainable_variables + self.classifier.trainable_variables
        size = self.global_batch_size
        with tf.GradientTape() as tape:
            fmap = self.encoder.feature_map(batch["image"], training=True)
            pooled = self.encoder.pool(fmap)
            neck = tf.cast(self.encoder.neck(pooled, training=True), tf.float32)
            ce = losses.cross_entropy_label_smoothing(self.classifier(neck), labels, self.epsilon)
            triplet = losses.batch_hard_triplet_loss(
                tf.cast(pooled, tf.float32), labels, self.margin
            )
            out = {
                "ce_loss": tf.nn.compute_average_loss(ce, global_batch_size=size),
                "triplet_loss": tf.nn.compute_average_loss(triplet, global_batch_size=size),
            }
            out["loss"] = out["ce_loss"] + out["triplet_loss"]
            scaled = self.optimizer.scale_loss(out["loss"])
        grads = tape.gradient(scaled, variables)
        apply_gradients_with_l2(self.optimizer, grads, variables, self.weight_decay)
        out[STATE_CHECK] = state_check(self.encoder)
        features = tf.math.l2_normalize(tf.stop_gradient(neck), axis=-1)
        return StepOutput(out, features, labels, batch["index"])

    def finish_step(self, out: StepOutput) -> None:
        """Cross-replica bookkeeping after each step: the metric trackers."""
        for name, tracker in self.trackers.items():
            tracker.update_state(out.losses[name])
