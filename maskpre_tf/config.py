"""Training configuration: one frozen dataclass, filled once from absl flags.

Defaults are the field's standard unsupervised re-ID recipe (cluster-contrast, Dai et al. 2021;
MMT, Ge et al., ICLR 2020) plus MaskPre's parts (Yin et al., Pattern Recognition 126, 2022).
Modules never read flags: ``train.py`` defines them with :func:`define_flags` and passes the
:class:`TrainConfig` made by :func:`config_from_flags` down.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from absl import flags

from maskpre_tf.errors import UserError


@dataclass(frozen=True)
class TrainConfig:
    """Every hyper-parameter of a run. Units: pixels, epochs, iterations."""

    # Data.
    dataset: str = "auto"  # auto | market1501 | dukemtmc | msmt17 | folder
    data_dir: str = "data/demo"
    generate_demo: bool = False  # write the generated-pedestrian set to data_dir if missing
    cam_pattern: str = r"_c(\d+)"  # own-folder layout: camera id from the file name
    manifest: str = ""  # own-folder layout: CSV manifest path,camid[,pid]
    query_dir: str = ""  # own-folder layout: labelled query crops for evaluation
    gallery_dir: str = ""  # own-folder layout: labelled gallery crops for evaluation
    source_dataset: str = ""  # domain adaptation: labelled source layout (empty = none)
    source_dir: str = ""  # domain adaptation: labelled source dataset root
    source_epochs: int = 30  # epochs of supervised pre-training on the source
    height: int = 256
    width: int = 128
    pad: int = 10
    erase_prob: float = 0.5
    # Model.
    backbone: str = "resnet50"
    backbone_weights: str = "imagenet"  # imagenet | none | path to a Keras weights file
    last_stride: int = 1
    # MaskPre.
    drop_rate: float = 0.2  # DropBlock target drop rate, reached linearly at the last epoch
    block_size: int = 3
    mask_weight: float = 1.0
    consistency_weight: float = 0.5
    temperature: float = 0.05
    consistency_temperature: float = 0.5  # soft assignments of the consistency term
    proto_momentum: float = 0.1
    ema_momentum: float = 0.999
    # Pseudo labels.
    eps: float = 0.6
    min_samples: int = 4
    k1: int = 30
    k2: int = 6
    outliers: str = "drop"  # drop | instances (each outlier its own cluster, SpCL-style)
    camera_aware: bool = False  # remove per-camera mean features before clustering
    # Sampling and optimisation.
    batch_size: int = 256
    num_instances: int = 16
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    epochs: int = 50
    lr_step: int = 20
    iters: int = 200
    precision: str = "float32"  # float32 | mixed_bfloat16 | mixed_float16
    # Run.
    output_dir: str = "runs/market"
    seed: int = 0
    eval_every: int = 5  # epochs between evaluations on query/gallery (0 = only at the end)
    keep_best: bool = False  # export the best epoch by mAP on --val_dir instead of the last
    val_dir: str = ""  # labelled validation split (Market layout) for --keep_best
    strategy: str = "mirrored"  # mirrored | multi_worker | default

    @property
    def num_ids_per_batch(self) -> int:
        """P of the P x K sampler."""
        return self.batch_size // self.num_instances

    def digest(self) -> str:
        """A short hash of the configuration (recorded with checkpoints and exports)."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def validate(self) -> None:
        """Raise :class:`UserError` for inconsistent settings."""
        if self.batch_size % self.num_instances:
            raise UserError(
                f"--batch_size={self.batch_size} is not a multiple of "
                f"--num_instances={self.num_instances}; the P x K sampler needs P whole identities"
            )
        if not 0.0 <= self.drop_rate < 1.0:
            raise UserError(f"--drop_rate={self.drop_rate}: expected a rate in [0, 1)")
        if self.precision not in ("float32", "mixed_bfloat16", "mixed_float16"):
            raise UserError(
                f"--precision={self.precision}: expected float32, mixed_bfloat16 or mixed_float16"
            )
        if self.outliers not in ("drop", "instances"):
            raise UserError(f"--outliers={self.outliers}: expected drop or instances")
        if self.strategy not in ("mirrored", "multi_worker", "default"):
            raise UserError(f"--strategy={self.strategy}: expected mirrored, multi_worker, default")
        if self.keep_best and not self.val_dir:
            raise UserError("--keep_best needs --val_dir (a labelled validation split); the test "
                            "set is never used to select a model")
        if self.source_dataset and not self.source_dir:
            raise UserError("--source_dataset needs --source_dir (the labelled source root)")
        if self.height % 8 or self.width % 8:
            raise UserError(f"--height/--width {self.height}x{self.width} must be multiples of 8")


_HELP = {
    "dataset": "dataset layout: auto, market1501, dukemtmc, msmt17 or folder",
    "data_dir": "dataset root directory",
    "generate_demo": "generate the demo pedestrian set in --data_dir if it is missing",
    "cam_pattern": "folder layout: regex whose group (or named group cam) is the camera id",
    "manifest": "folder layout: CSV manifest (path,camid[,pid]) instead of file-name parsing",
    "query_dir": "folder layout: labelled query crops (Market-style names) for evaluation",
    "gallery_dir": "folder layout: labelled gallery crops (Market-style names) for evaluation",
    "source_dataset": "labelled source dataset layout for domain adaptation (empty = none)",
    "source_dir": "labelled source dataset root (with --generate_demo: generated if missing)",
    "source_epochs": "epochs of supervised source pre-training (iterations per epoch: --iters)",
    "height": "input height in pixels",
    "width": "input width in pixels",
    "pad": "zero padding before the random crop, pixels",
    "erase_prob": "random-erasing probability",
    "backbone": "resnet50, mobilenet_v2 or resnet_small",
    "backbone_weights": "imagenet (Keras download), none, or a local Keras weights file",
    "last_stride": "stride of the last backbone stage (1 = re-ID standard)",
    "drop_rate": "DropBlock target drop rate, ramped linearly from 0 over training",
    "block_size": "DropBlock block size on the feature map",
    "mask_weight": "weight of the mask-prediction loss (0 disables the head)",
    "consistency_weight": "weight of the cross-view consistency loss (0 disables it)",
    "temperature": "temperature of the cluster-contrastive loss",
    "consistency_temperature": "temperature of the soft assignments in the consistency loss",
    "proto_momentum": "prototype momentum (share of the old prototype kept per update)",
    "ema_momentum": "EMA teacher momentum",
    "eps": "DBSCAN eps on the Jaccard distance",
    "min_samples": "DBSCAN min_samples",
    "k1": "k-reciprocal neighbourhood size",
    "k2": "local query expansion size",
    "outliers": "DBSCAN outliers: drop (standard recipe) or instances (each one its own "
                "cluster, as in SpCL's hybrid memory; lets training start from random weights)",
    "camera_aware": "subtract each camera's mean feature before clustering",
    "batch_size": "global batch size (P x K)",
    "num_instances": "K: instances per pseudo identity in a batch",
    "lr": "Adam learning rate",
    "weight_decay": "L2 weight decay (added to the gradients, as torch Adam does)",
    "epochs": "training epochs",
    "lr_step": "epoch at which the learning rate drops x0.1",
    "iters": "iterations per epoch",
    "precision": "float32, mixed_bfloat16 or mixed_float16",
    "output_dir": "where checkpoints, TensorBoard logs and the summary go",
    "seed": "random seed",
    "eval_every": "evaluate on query/gallery every N epochs (0 = only at the end)",
    "keep_best": "keep the best epoch by mAP on --val_dir (never the test set)",
    "val_dir": "labelled validation split (Market layout) for --keep_best",
    "strategy": "mirrored (all local devices), multi_worker (TF_CONFIG) or default",
}


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Define one absl flag per :class:`TrainConfig` field, with its default."""
    for field in dataclasses.fields(TrainConfig):
        default = field.default
        args = (field.name, default, _HELP[field.name])
        if isinstance(default, bool):
            flags.DEFINE_bool(*args, flag_values=flag_values)
        elif isinstance(default, int):
            flags.DEFINE_integer(*args, flag_values=flag_values)
        elif isinstance(default, float):
            flags.DEFINE_float(*args, flag_values=flag_values)
        else:
            flags.DEFINE_string(*args, flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from parsed flags."""
    values = {f.name: flag_values[f.name].value for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**values)
    config.validate()
    return config
