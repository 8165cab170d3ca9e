"""The MaskPre model: an online encoder, an EMA teacher, DropBlock views, and the two heads.

Method (Yin, Zhang, Xie, Ma, Guo; Pattern Recognition 126, 2022), as this project defines it:

1. The online backbone maps an image to a region-level map ``F`` [B, h, w, C] (or, with the
   inner masking stage, the map before its last stage); the EMA teacher maps the same
   (unmasked) image to its final map ``T`` (no gradient; BatchNorm folded into its
   convolutions, which is exact in inference mode and cheaper).
2. A dynamic DropBlock masks ``F`` twice with different per-draw keys: views ``F1``, ``F2``
   (the inner stage then runs the last stage on each view, which must infer the holes).
3. The clustering head: each view is pooled (GeM + BN neck + L2) and contrasted with the
   memory (one prototype per cluster, Cluster Contrast, Dai et al. 2021; or per-camera proxies,
   CAP), so both views are pulled into their image's pseudo-identity; a consistency term
   matches each view's soft assignment to the teacher's. With ``--anchor_weight`` the unmasked
   map (the embedding the run clusters and deploys) is contrasted too, and the memory follows it.
4. The mask-prediction head predicts ``T`` at the dropped positions of each view from its masked
   map (1 - cosine), i.e. visual consistency within an image and, because ``T`` comes from the
   moving average, temporal consistency across training.
5. After every optimizer step, in cross-replica context: the memories move towards the batch
   features and the teacher towards the online encoder (EMA), on every replica's own copy.

``train_step`` runs in replica context (one call per replica through ``strategy.run``);
:meth:`MaskPre.finish_step` runs in cross-replica context with the gathered global batch.
Inference (``call``) is the teacher's embedding; which encoder a run evaluates and exports is
the run's choice (``--deploy_network``, :mod:`maskpre_tf.training.train_lib`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from maskpre_tf import losses
from maskpre_tf.config import MaskPreConfig, TrainConfig
from maskpre_tf.models.backbones import INNER_STAGE, split_backbone
from maskpre_tf.models.encoder import ReidEncoder, build_encoder
from maskpre_tf.models.folding import FoldedTrunk
from maskpre_tf.models.heads import MaskPredictionHead
from maskpre_tf.models.layers import DropBlock, apply_keep, linear_drop_rate
from maskpre_tf.models.memory import CameraMemory, ClusterMemory, update_rows
from maskpre_tf.models.normalization import normalize_pixels
from maskpre_tf.models.optimizer import apply_gradients_with_l2, make_optimizer
from maskpre_tf.models.replicated import update_each_copy
from maskpre_tf.models.step import STATE_CHECK, StepOutput, state_check


class MaskPre(keras.Model):
    """The training model: online encoder, EMA teacher, DropBlock, mask head, memories.

    Args:
      student: the online encoder (trained).
      teacher: an encoder of the same architecture (EMA of the student, never trained).
      num_train: N, the number of training images (bounds clusters and camera proxies).
      ramp_steps: optimizer steps over which the DropBlock rate ramps up to its target.
      global_batch_size: batch size summed over replicas (losses average over it).
      config: the method's settings (``MaskPreConfig``).
      weight_decay: L2 added to the gradients (``OptimConfig.weight_decay``).
      mask_layer: the backbone layer after which the views are masked (None: its output).
    """

    def __init__(
        self,
        student: ReidEncoder,
        teacher: ReidEncoder,
        num_train: int,
        ramp_steps: int,
        global_batch_size: int,
        config: MaskPreConfig,
        weight_decay: float = 5e-4,
        mask_layer: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.num_train = int(num_train)
        self.ramp_steps = int(ramp_steps)
        self.global_batch_size = int(global_batch_size)
        self.cfg = config
        self.weight_decay = float(weight_decay)
        channels = student.channels
        self.dropblock = DropBlock(block_size=config.block_size, name="dropblock")
        self.mask_head = MaskPredictionHead(channels, name="mask_head")
        self.memory = ClusterMemory(self.num_train, channels)
        self.camera_memory = (
            CameraMemory(self.num_train, channels, self.num_train) if config.camera_memory else None
        )
        # The student's backbone split at the masking stage (None: masked after its last stage)
        # and the teacher's trunk with BatchNorm folded, run on the teacher's current weights:
        # plain objects, so nothing is tracked or checkpointed twice.
        self.student_split = split_backbone(student.backbone, mask_layer) if mask_layer else None
        self.teacher_trunk = FoldedTrunk(teacher.backbone)
        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", "cluster_loss", "mask_loss", "consistency_loss")
        }

    @property
    def metrics(self) -> list:
        return list(self.trackers.values())

    @property
    def num_views(self) -> int:
        """2 when the views can differ (DropBlock on), else 1: identical views cost once."""
        return 2 if self.cfg.drop_rate > 0 else 1

    def build_all(self, image_shape: tuple[int, int, int]) -> None:
        """Create every variable (call once under the strategy scope, before training)."""
        images = tf.zeros((2, *image_shape))
        fmap = self.student.feature_map(images)
        self.student.embed_map(fmap)
        self.teacher(images)
        self.mask_head(fmap)
        self.dropblock(fmap, tf.zeros([2], tf.int64), 0.0)
        shapes = [tuple(v.shape) for v in self.student.weights]
        if shapes != [tuple(v.shape) for v in self.teacher.weights]:
            raise ValueError("teacher and student encoders differ in architecture")
        self.copy_student_to_teacher()

    def call(self, pixels: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Inference: the teacher's L2-normalised embedding [B, C] of RGB pixels in 0–255."""
        return self.teacher(pixels, training=False)

    def copy_student_to_teacher(self) -> None:
        """Set the teacher's weights (and BN statistics) equal to the student's."""
        for t_var, s_var in zip(self.teacher.weights, self.student.weights, strict=True):
            t_var.assign(s_var)

    def drop_rate(self) -> tf.Tensor:
        """Current DropBlock rate: linear ramp from 0 to ``cfg.drop_rate`` over ramp_steps."""
        return linear_drop_rate(self.optimizer.iterations, self.ramp_steps, self.cfg.drop_rate)

    @staticmethod
    def view_keys(keys: tf.Tensor, view: int) -> tf.Tensor:
        """DropBlock keys of one view: int64 [B] from the batch's per-draw keys [B].

        The pipeline's keys are unique per drawn sample (epoch, stream position), so two copies
        of one image in a batch, and the two views of each, get different masks.
        """
        return 2 * tf.cast(keys, tf.int64) + view

    def masking_map(self, images: tf.Tensor, training: bool) -> tf.Tensor:
        """The student's map at the masking stage [b, h, w, c] of RGB pixels in 0–255."""
        x = normalize_pixels(images, self.student.input_norm)
        if self.student_split is None:
            return self.student.backbone(x, training=training)
        return self.student_split.front(x, training=training)

    def teacher_map(self, images: tf.Tensor) -> tf.Tensor:
        """The teacher's final map [b, h, w, C] of RGB pixels in 0–255 (inference mode).

        Equals ``teacher.feature_map(images)`` to float round-off; computed by the folded trunk
        on the teacher's current weights (:class:`~maskpre_tf.models.folding.FoldedTrunk`).
        """
        return self.teacher_trunk(normalize_pixels(images, self.teacher.input_norm))

    def finish_map(self, masked: tf.Tensor, training: bool) -> tf.Tensor:
        """The rest of the student's backbone after the masking stage: → [b, h, w, C]."""
        if self.student_split is None:
            return masked
        return self.student_split.back(masked, training=training)

    def mask_panel(self, pixels: tf.Tensor) -> tf.Tensor:
        """Each input beside its two masked views (dropped cells dark), for TensorBoard.

        Args:
          pixels: float32 [n, H, W, 3] RGB in 0–255.
        Returns:
          uint8 [n, H, 3W, 3], at the target drop rate (or the current one, if higher).
        """
        pixels = tf.convert_to_tensor(pixels, tf.float32)
        fmap = self.masking_map(pixels, training=False)
        rate = tf.maximum(self.drop_rate(), self.cfg.drop_rate)
        keys = tf.range(tf.shape(pixels)[0], dtype=tf.int64)
        panels = [pixels]
        for view in (0, 1):
            _, keep = self.dropblock(fmap, self.view_keys(keys, view), rate, training=True)
            keep = tf.image.resize(
                tf.cast(keep, tf.float32), tf.shape(pixels)[1:3], method="nearest"
            )
            panels.append(pixels * (0.25 + 0.75 * keep))
        return tf.cast(tf.clip_by_value(tf.concat(panels, axis=2), 0, 255), tf.uint8)

    def cluster_losses(self, emb: tf.Tensor, labels: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
        """Per-sample clustering loss [b] of one view's embedding against the memory."""
        cfg = self.cfg
        if self.camera_memory is not None:
            intra, inter = self.camera_memory.losses(
                emb, index, cfg.camera_temperature, cfg.camera_negatives
            )
            return intra + cfg.inter_camera_weight * inter
        logits = self.memory.logits(emb, cfg.temperature)
        return losses.cluster_contrast_loss(logits, labels)

    def mask_losses(self, context: tf.Tensor, teacher_map: tf.Tensor, keep: tf.Tensor):
        """Per-sample mask-prediction loss [b] of one view, predicted at its dropped cells only.

        Args:
          context: [b, h, w, hidden] the head's features of the view (``context_features``).
          teacher_map: [b, h, w, C] the teacher's map. keep: float32 [b, h, w, 1] the view's mask.
        """
        cells = losses.dropped_cells(keep)
        predicted = self.mask_head.predict_cells(context, cells)
        target = tf.gather_nd(teacher_map, cells)
        return losses.mask_prediction_loss(predicted, target, cells[:, 0], tf.shape(keep)[0])

    def compute_losses(
        self,
        images: tf.Tensor,
        labels: tf.Tensor,
        index: tf.Tensor,
        keys: tf.Tensor,
        training: bool = True,
    ) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """Forward pass and per-replica losses (already scaled by the global batch).

        Args:
          images: float32 [b, H, W, 3] RGB pixels in 0–255 (b = this replica's share).
          labels: int [b] pseudo labels in [0, num_clusters), -1 = outlier.
          index: int [b] rows of the images in the training set (camera proxies).
          keys: int [b] per-draw keys (DropBlock masks).
        Returns:
          (scalar losses, "loss" being the weighted sum; features [b, C] for the memory update,
          detached: the unmasked view's embedding with ``--anchor_weight``, else the mean of the
          views' embeddings).
        """
        cfg = self.cfg
        if cfg.mask_weight > 0 or cfg.consistency_weight > 0:  # the teacher's view is needed
            teacher_map = tf.stop_gradient(self.teacher_map(images))
            teacher_emb = self.teacher.embed_map(teacher_map, training=False)
            teacher_logits = self.memory.logits(teacher_emb, cfg.consistency_teacher_temperature)
        front = self.masking_map(images, training)
        rate = self.drop_rate()
        # Masking after the last stage: both views' mask head share one 1x1 reduction.
        shared = None
        if cfg.mask_weight > 0 and self.student_split is None:
            shared = self.mask_head.reduce(front)
        per_example = {"cluster_loss": 0.0, "mask_loss": 0.0, "consistency_loss": 0.0}
        features = 0.0
        share = 1.0 / self.num_views
        anchor = None
        if cfg.anchor_weight > 0 and self.num_views == 2:
            anchor = self.student.embed_map(self.finish_map(front, training), training=training)
            per_example["cluster_loss"] += cfg.anchor_weight * self.cluster_losses(
                anchor, labels, index
            )
        for view in range(self.num_views):
            masked, keep = self.dropblock(
                front, self.view_keys(keys, view), rate, training=training
            )
            fmap = self.finish_map(masked, training)
            emb = self.student.embed_map(fmap, training=training)
            features += share * emb
            per_example["cluster_loss"] += share * self.cluster_losses(emb, labels, index)
            if cfg.mask_weight > 0:
                if shared is None:
                    reduced = self.mask_head.reduce(fmap)
                else:
                    reduced = apply_keep(shared, keep)
                per_example["mask_loss"] += share * self.mask_losses(
                    self.mask_head.context_features(reduced, training=training), teacher_map, keep
                )
            if cfg.consistency_weight > 0:
                student_logits = self.memory.logits(emb, cfg.consistency_temperature)
                per_example["consistency_loss"] += share * losses.cross_view_consistency_loss(
                    student_logits, teacher_logits
                )
        result = {
            name: tf.nn.compute_average_loss(
                value + tf.zeros_like(index, tf.float32), global_batch_size=self.global_batch_size
            )
            for name, value in per_example.items()
        }
        if anchor is not None:  # the memory follows the embedding that is clustered
            features = anchor
        result["loss"] = (
            result["cluster_loss"]
            + cfg.mask_weight * result["mask_loss"]
            + cfg.consistency_weight * result["consistency_loss"]
        )
        return result, tf.stop_gradient(features)

    def train_step(self, batch: dict[str, tf.Tensor]) -> StepOutput:
        """One optimisation step on this replica's share of the batch (replica context)."""
        variables = self.student.trainable_variables + self.mask_head.trainable_variables
        with tf.GradientTape() as tape:
            losses_, features = self.compute_losses(
                batch["image"], batch["label"], batch["index"], batch["key"]
            )
            scaled = self.optimizer.scale_loss(losses_["loss"])
        grads = tape.gradient(scaled, variables)
        apply_gradients_with_l2(self.optimizer, grads, variables, self.weight_decay)
        losses_[STATE_CHECK] = state_check(self.student)
        return StepOutput(losses_, features, batch["label"], batch["index"])

    def finish_step(self, out: StepOutput) -> None:
        """Cross-replica updates after each step: memories, EMA teacher, metric trackers.

        Args:
          out: the global batch's output (losses summed over replicas, per-sample fields
            gathered).
        """
        cfg = self.cfg
        update_rows(
            self.memory.table, out.features, out.labels, cfg.proto_momentum, cfg.memory_update
        )
        if self.camera_memory is not None:
            self.camera_memory.update(out.features, out.index, cfg.proto_momentum)
        self.update_teacher()
        for name, tracker in self.trackers.items():
            tracker.update_state(out.losses[name])

    def ema_momentum(self) -> tf.Tensor:
        """EMA momentum with MMT's warm-up: min(1 - 1/(step + 1), m) (Ge et al., ICLR 2020)."""
        step = tf.cast(self.optimizer.iterations, tf.float32)
        return tf.minimum(1.0 - 1.0 / (step + 1.0), self.cfg.ema_momentum)

    def update_teacher(self) -> None:
        """θ_t ← m·θ_t + (1 − m)·θ_s for every teacher weight and BN statistic.

        Each replica updates its own copy from its own copy of the student (no broadcast).
        """
        m = self.ema_momentum()

        def ema(teacher, student, m):
            teacher.assign(m * teacher + (1.0 - m) * tf.cast(student, teacher.dtype))

        for t_var, s_var in zip(self.teacher.weights, self.student.weights, strict=True):
            update_each_copy(t_var, ema, s_var, m)

    def reset_memories(self, features, labels, camids=None) -> None:
        """After a clustering: prototypes (and camera proxies) ← centroids of the clusters.

        Args:
          features: float [N, D] the clustered features. labels: int [N], -1 = outlier,
          clusters numbered 0..K-1. camids: int [N] (needed with the camera memory).
        """
        self.memory.reset(cluster_centroids(features, labels))
        if self.camera_memory is not None:
            self.camera_memory.reset(features, labels, camids)


def cluster_centroids(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean feature of each cluster: features [N, D], labels [N] in -1..K-1 → [K, D]."""
    num = int(labels.max()) + 1
    keep = labels >= 0
    sums = np.zeros((num, features.shape[1]), np.float64)
    np.add.at(sums, labels[keep], features[keep])
    counts = np.bincount(labels[keep], minlength=num)[:, None]
    return (sums / np.maximum(counts, 1)).astype(np.float32)


def build_maskpre(
    cfg: TrainConfig, num_train: int, num_replicas: int, ramp_steps: int | None = None
) -> MaskPre:
    """The MaskPre model of ``cfg`` with every variable and the optimizer's slots created.

    Call under the strategy's scope. The backbones' BatchNormalization is synchronised when there
    is more than one replica, unless ``--bn_group_size`` groups it (ghost BatchNorm).
    ``ramp_steps`` (the DropBlock ramp) defaults to ``--drop_warmup_epochs`` (or ``--epochs``)
    times ``--iters``.
    """
    sync_bn = num_replicas > 1 and not cfg.model.bn_group_size
    shape = (cfg.data.height, cfg.data.width, 3)
    student = build_encoder(cfg.model, shape, sync_bn=sync_bn, name="student")
    teacher = build_encoder(cfg.model, shape, sync_bn=sync_bn, weights="none", name="teacher")
    optim, method = cfg.optim, cfg.maskpre
    if ramp_steps is None:
        ramp_steps = (method.drop_warmup_epochs or optim.epochs) * optim.iters
    mask_layer = INNER_STAGE[cfg.model.backbone] if method.mask_stage == "inner" else None
    model = MaskPre(
        student,
        teacher,
        num_train=num_train,
        ramp_steps=ramp_steps,
        global_batch_size=optim.batch_size,
        config=method,
        weight_decay=optim.weight_decay,
        mask_layer=mask_layer,
        name="maskpre",
    )
    model.build_all(shape)
    model.compile(optimizer=make_optimizer(optim))
    model.optimizer.build(student.trainable_variables + model.mask_head.trainable_variables)
    return model
