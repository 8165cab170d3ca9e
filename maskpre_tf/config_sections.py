"""The sections of a run's configuration: one frozen dataclass per part of the program.

``data`` the readers and input pipeline, ``source`` domain adaptation, ``model`` the encoder,
``maskpre`` the method's heads and losses, ``clustering`` the pseudo labels, ``optim`` sampling
and optimisation, ``run`` the run itself. Each field is declared with
:func:`~maskpre_tf.config_fields.setting` (help, choices, range); defaults are the measured
recipe at the published scale (see :mod:`maskpre_tf.config`).
"""

from __future__ import annotations

from dataclasses import dataclass

from maskpre_tf.config_fields import (
    AUTO_EPS,
    BACKBONES,
    INPUT_NORMS,
    MASK_STAGES,
    MEMORY_UPDATES,
    MULTIPLE_OF_8,
    NETWORKS,
    OUTLIER_MODES,
    POSITIVE,
    PRECISIONS,
    RATE,
    STRATEGIES,
    at_least,
    parse_eps,
    setting,
)


@dataclass(frozen=True)
class DataConfig:
    """The unlabelled training set, its evaluation splits and the input pipeline."""

    dataset: str = setting(
        "auto", "dataset layout: auto, market1501, dukemtmc, msmt17 or folder", resume=False
    )
    data_dir: str = setting("data/demo", "dataset root directory", resume=False)
    generate_demo: bool = setting(
        False, "generate the demo pedestrian set in --data_dir if it is missing"
    )
    cam_pattern: str = setting(
        r"_c(\d+)",
        "folder layout: regex whose group (or named group cam) is the camera id",
        resume=False,
    )
    manifest: str = setting(
        "",
        "folder layout: CSV manifest (path,camid[,pid]) instead of file-name parsing",
        resume=False,
    )
    query_dir: str = setting(
        "", "folder layout: labelled query crops (Market-style names) for evaluation"
    )
    gallery_dir: str = setting(
        "", "folder layout: labelled gallery crops (Market-style names) for evaluation"
    )
    height: int = setting(256, "input height in pixels", check=MULTIPLE_OF_8, resume=False)
    width: int = setting(128, "input width in pixels", check=MULTIPLE_OF_8, resume=False)
    pad: int = setting(10, "zero padding before the random crop, pixels")
    erase_prob: float = setting(0.5, "random-erasing probability", check=RATE)


@dataclass(frozen=True)
class SourceConfig:
    """Domain adaptation: a labelled source domain the encoder trains on first."""

    source_dataset: str = setting(
        "",
        "labelled source dataset layout for domain adaptation (empty = none)",
        resume=False,
    )
    source_dir: str = setting(
        "",
        "labelled source dataset root (with --generate_demo: generated if missing)",
        resume=False,
    )
    source_epochs: int = setting(
        30,
        "epochs of supervised source pre-training (iterations per epoch: --iters)",
        resume=False,
    )


@dataclass(frozen=True)
class ModelConfig:
    """The encoder: backbone, its weights and the input normalisation those weights expect."""

    backbone: str = setting("resnet50", "the network", choices=BACKBONES, resume=False)
    backbone_weights: str = setting(
        "imagenet",
        "imagenet (Keras download), none, or a Keras "
        "weights file (e.g. written by python -m maskpre_tf.weights "
        "import)",
        resume=False,
    )
    input_norm: str = setting(
        "",
        "input normalisation the weights expect; empty = decided by --backbone_weights (needed "
        "for a weights file of unknown origin)",
        choices=("", *INPUT_NORMS),
        resume=False,
    )
    last_stride: int = setting(
        1, "stride of the last backbone stage (1 = re-ID standard)", resume=False
    )
    frozen_stages: int = setting(
        0,
        "backbone stages kept frozen (0-4: stem, then each "
        "down-sampling stage); fewer gradients, more steps per minute",
        resume=False,
    )
    bn_group_size: int = setting(
        0,
        "ghost BatchNorm: the backbone's training-mode statistics over groups of this many "
        "images of each replica's batch, so they do not depend on the device count (0: the "
        "whole replica batch, synchronised across replicas); the published recipes' GPUs each "
        "saw 64",
        check=at_least(0),
    )
    layout: str = setting(
        "keras",
        "backbone layout (keras or torch), decided by the weights",
        flag=False,
        resume=False,
    )


@dataclass(frozen=True)
class MaskPreConfig:
    """MaskPre's parts: DropBlock views, mask prediction, clustering head, EMA teacher."""

    drop_rate: float = setting(
        0.2,
        "DropBlock target drop rate (fraction of feature-map cells "
        "dropped), ramped linearly from 0 at the first step",
        check=RATE,
    )
    drop_warmup_epochs: int = setting(
        0, "epochs over which the DropBlock rate ramps up to --drop_rate (0 = the whole run)"
    )
    block_size: int = setting(3, "DropBlock block size in feature-map cells")
    mask_stage: str = setting(
        "last",
        "where the views are masked: last (the backbone's output "
        "map) or inner (before the last stage: ResNet-50 conv4, "
        "MobileNetV2 block 13, resnet_small stage 3), so the last stage "
        "must infer the hole",
        choices=MASK_STAGES,
        resume=False,
    )
    anchor_weight: float = setting(
        0.0,
        "weight of the clustering loss on the unmasked view (the anchor) beside the two masked "
        "views': the embedding that is clustered and deployed is then trained as such, and the "
        "memory moves towards it (0: the masked views only, as the paper; no effect without "
        "DropBlock)",
        check=at_least(0),
    )
    mask_weight: float = setting(1.0, "weight of the mask-prediction loss (0 disables the head)")
    consistency_weight: float = setting(
        0.5, "weight of the cross-view consistency loss (0 disables it)"
    )
    temperature: float = setting(
        0.05, "temperature of the cluster-contrastive loss", check=POSITIVE
    )
    consistency_temperature: float = setting(
        0.5, "temperature of the views' soft assignments in the consistency loss", check=POSITIVE
    )
    consistency_teacher_temperature: float = setting(
        0.5,
        "temperature of the teacher's soft "
        "assignment in the consistency loss (lower "
        "= a sharper target)",
        check=POSITIVE,
    )
    proto_momentum: float = setting(
        0.1, "memory momentum (share of the old prototype kept per update)"
    )
    memory_update: str = setting(
        "mean",
        "prototype update: mean (batch mean per cluster), "
        "instance (one step per sample, cluster-contrast) or hard (the "
        "least similar sample of each cluster); the shipped recipe uses instance "
        "(configs/market_cpu.flags)",
        choices=MEMORY_UPDATES,
    )
    camera_memory: bool = setting(
        False,
        "contrast against per-camera proxies of each cluster "
        "(CAP: intra- and inter-camera losses) instead of one "
        "prototype per cluster; needs camera ids; the shipped recipe turns it on",
        resume=False,
    )
    camera_temperature: float = setting(
        0.07, "temperature of the camera-proxy losses", check=POSITIVE
    )
    camera_negatives: int = setting(50, "hard negative proxies of the inter-camera loss")
    inter_camera_weight: float = setting(
        0.5, "weight of the inter-camera loss beside the intra-camera one"
    )
    ema_momentum: float = setting(
        0.999,
        "EMA teacher momentum (MMT's value); the shipped recipe uses 0.99: the teacher gives only "
        "mask targets and the consistency target there, and a slow one lagged its short run",
    )


@dataclass(frozen=True)
class ClusteringConfig:
    """Pseudo labels: k-reciprocal Jaccard distance + DBSCAN, once an epoch."""

    eps: float | str = setting(
        0.6,
        "DBSCAN eps on the Jaccard distance, in (0, 1), or chosen again at every clustering: "
        "auto (the eps with the most clusters) or auto_linked (the eps whose clusters best "
        "match the Jaccard graph's linked pairs); see maskpre_tf.clustering.auto_eps. The "
        "default 0.6 is cluster-contrast's value for ResNet-50 on Market-1501; the shipped "
        "recipe uses auto: eps depends on the data (on a small real set 0.6 put 892 of 992 "
        "images into 12 clusters)",
        parse=parse_eps,
    )
    eps_tolerance: float = setting(
        0.0,
        "with --eps=auto or auto_linked: take the largest eps whose score stays within this "
        "fraction of the peak (the plateau's right end) instead of the peak itself; the "
        "shipped recipe uses 0.02",
        check=RATE,
    )
    min_samples: int = setting(4, "DBSCAN min_samples", check=at_least(1))
    k1: int = setting(30, "k-reciprocal neighbourhood size")
    k2: int = setting(6, "local query expansion size (<= --k1)")
    outliers: str = setting(
        "drop",
        "DBSCAN outliers: drop (standard recipe) or instances (each "
        "one its own cluster, as in SpCL's hybrid memory)",
        choices=OUTLIER_MODES,
    )
    camera_aware: bool = setting(False, "subtract each camera's mean feature before clustering")
    cluster_network: str = setting(
        "teacher",
        "whose features are clustered each epoch: teacher "
        "(the EMA model, MMT-style) or student (the online model, as "
        "cluster-contrast does); the shipped recipe clusters the student",
        choices=NETWORKS,
    )
    image_cache_mib: int = setting(
        2048,
        "memory for the training crops decoded once and kept for the clustering extraction of "
        "every epoch (8-bit RGB at the input size: Market-1501 at 128x64 needs 303 MiB, at "
        "256x128 1,213 MiB); a larger set is decoded again each epoch; 0 never keeps them",
        check=at_least(0),
    )

    @property
    def fixed_eps(self) -> float | None:
        """--eps as a number, or None when a rule chooses it (``auto_rule``)."""
        return None if self.eps in AUTO_EPS else float(self.eps)

    @property
    def auto_rule(self) -> str:
        """The rule that chooses eps when ``fixed_eps`` is None (auto or auto_linked)."""
        return self.eps if self.eps in AUTO_EPS else "auto"


@dataclass(frozen=True)
class OptimConfig:
    """P x K sampling, Adam with a step schedule, precision."""

    batch_size: int = setting(256, "global batch size (P x K)")
    num_instances: int = setting(16, "K: instances per pseudo identity in a batch")
    lr: float = setting(3.5e-4, "Adam learning rate")
    weight_decay: float = setting(
        5e-4, "L2 weight decay (added to the gradients, as torch Adam does)"
    )
    epochs: int = setting(50, "training epochs", check=at_least(1))
    lr_step: int = setting(20, "epoch at which the learning rate drops x0.1")
    iters: int = setting(200, "iterations per epoch", check=at_least(1))
    precision: str = setting(
        "float32", "numeric precision of training", choices=PRECISIONS, resume=False
    )

    @property
    def num_ids_per_batch(self) -> int:
        """P of the P x K sampler."""
        return self.batch_size // self.num_instances


@dataclass(frozen=True)
class RunConfig:
    """Where the run writes, its seed, evaluation cadence, model selection, distribution."""

    run_dir: str = setting(
        "runs/market",
        "the run's folder: checkpoints, TensorBoard logs, summaries and the delivered weights "
        "(every program that reads a run takes it as --run_dir)",
        aliases=("output_dir",),
    )
    seed: int = setting(0, "random seed")
    eval_every: int = setting(5, "evaluate on query/gallery every N epochs (0 = only at the end)")
    deploy_network: str = setting(
        "teacher",
        "the encoder the run delivers: teacher (the EMA model) or student (the online "
        "model); its figures are the run's result, --keep_best keeps it, encoder.weights.h5 "
        "holds it, and evaluate, export and search load it; the shipped recipe "
        "delivers the student, which led the teacher at every evaluation on real Market-1501",
        choices=NETWORKS,
    )
    eval_other: bool = setting(
        False,
        "also evaluate the encoder not deployed (the student beside a deployed teacher or the "
        "teacher beside a deployed student), logged with its name as prefix (student_mAP)",
    )
    keep_best: bool = setting(False, "keep the best epoch by mAP on --val_dir (never the test set)")
    val_dir: str = setting("", "labelled validation split (Market layout) for --keep_best")
    steps_per_loop: int = setting(
        1,
        "training steps per tf.function call (fewer host round "
        "trips; progress, losses and the NaN check per loop)",
        check=at_least(1),
    )
    strategy: str = setting(
        "mirrored",
        "distribution: mirrored (all local GPUs; on one device, the default strategy), "
        "multi_worker (TF_CONFIG) or default",
        choices=STRATEGIES,
    )
