"""Training configuration: nested frozen dataclasses, filled once from absl flags.

Defaults are the field's standard unsupervised re-ID recipe (cluster-contrast, Dai et al. 2021;
MMT, Ge et al., ICLR 2020) plus MaskPre's parts (Yin et al., Pattern Recognition 126, 2022).
Each section is what one part of the program needs: ``data`` the readers and input pipeline,
``source`` domain adaptation, ``model`` the encoder, ``maskpre`` the method's heads and losses,
``clustering`` the pseudo labels, ``optim`` sampling and optimisation, ``run`` the run itself.
Every field's help text, its choices and its valid range are written once, as field metadata:
they become the flag's help and :meth:`TrainConfig.validate`'s checks.

Flags stay flat (``--eps``, ``--height``, ...; field names are unique across sections), so
flagfiles read as before. Modules never read flags: ``train.py`` defines them with
:func:`maskpre_tf.config_flags.define_flags` and hands each part the section made by
:func:`maskpre_tf.config_flags.config_from_flags`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

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
    check_value,
    parse_eps,
    setting,
)
from maskpre_tf.errors import UserError


@dataclass(frozen=True)
class DataConfig:
    """The unlabelled training set, its evaluation splits and the input pipeline."""

    dataset: str = setting("auto", "dataset layout: auto, market1501, dukemtmc, msmt17 or folder")
    data_dir: str = setting("data/demo", "dataset root directory")
    generate_demo: bool = setting(
        False, "generate the demo pedestrian set in --data_dir if it is missing"
    )
    cam_pattern: str = setting(
        r"_c(\d+)", "folder layout: regex whose group (or named group cam) is the camera id"
    )
    manifest: str = setting(
        "", "folder layout: CSV manifest (path,camid[,pid]) instead of file-name parsing"
    )
    query_dir: str = setting(
        "", "folder layout: labelled query crops (Market-style names) for evaluation"
    )
    gallery_dir: str = setting(
        "", "folder layout: labelled gallery crops (Market-style names) for evaluation"
    )
    height: int = setting(256, "input height in pixels", check=MULTIPLE_OF_8)
    width: int = setting(128, "input width in pixels", check=MULTIPLE_OF_8)
    pad: int = setting(10, "zero padding before the random crop, pixels")
    erase_prob: float = setting(0.5, "random-erasing probability", check=RATE)


@dataclass(frozen=True)
class SourceConfig:
    """Domain adaptation: a labelled source domain the encoder trains on first."""

    source_dataset: str = setting(
        "", "labelled source dataset layout for domain adaptation (empty = none)"
    )
    source_dir: str = setting(
        "", "labelled source dataset root (with --generate_demo: generated if missing)"
    )
    source_epochs: int = setting(
        30, "epochs of supervised source pre-training (iterations per epoch: --iters)"
    )


@dataclass(frozen=True)
class ModelConfig:
    """The encoder: backbone, its weights and the input normalisation those weights expect."""

    backbone: str = setting("resnet50", "the network", choices=BACKBONES)
    backbone_weights: str = setting(
        "imagenet",
        "imagenet (Keras download), none, or a Keras "
        "weights file (e.g. written by python -m maskpre_tf.weights "
        "import)",
    )
    input_norm: str = setting(
        "",
        "input normalisation the weights expect; empty = decided by --backbone_weights (needed "
        "for a weights file of unknown origin)",
        choices=("", *INPUT_NORMS),
    )
    last_stride: int = setting(1, "stride of the last backbone stage (1 = re-ID standard)")
    frozen_stages: int = setting(
        0,
        "backbone stages kept frozen (0-4: stem, then each "
        "down-sampling stage); fewer gradients, more steps per minute",
    )
    layout: str = setting(
        "keras", "backbone layout (keras or torch), decided by the weights", flag=False
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
        "least similar sample of each cluster)",
        choices=MEMORY_UPDATES,
    )
    camera_memory: bool = setting(
        False,
        "contrast against per-camera proxies of each cluster "
        "(CAP: intra- and inter-camera losses) instead of one "
        "prototype per cluster; needs camera ids",
    )
    camera_temperature: float = setting(
        0.07, "temperature of the camera-proxy losses", check=POSITIVE
    )
    camera_negatives: int = setting(50, "hard negative proxies of the inter-camera loss")
    inter_camera_weight: float = setting(
        0.5, "weight of the inter-camera loss beside the intra-camera one"
    )
    ema_momentum: float = setting(0.999, "EMA teacher momentum")


@dataclass(frozen=True)
class ClusteringConfig:
    """Pseudo labels: k-reciprocal Jaccard distance + DBSCAN, once an epoch."""

    eps: float | str = setting(
        0.6,
        "DBSCAN eps on the Jaccard distance, in (0, 1), or chosen again at every clustering: "
        "auto (the eps with the most clusters) or auto_linked (the eps whose clusters best "
        "match the Jaccard graph's linked pairs); see maskpre_tf.clustering.auto_eps",
        parse=parse_eps,
    )
    eps_tolerance: float = setting(
        0.0,
        "with --eps=auto or auto_linked: take the largest eps whose score stays within this "
        "fraction of the peak (the plateau's right end) instead of the peak itself",
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
        "cluster-contrast does)",
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
    precision: str = setting("float32", "numeric precision of training", choices=PRECISIONS)

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
        "holds it, and evaluate, export, search and the probe load it",
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
        "distribution: mirrored (all local devices), multi_worker (TF_CONFIG) or default",
        choices=STRATEGIES,
    )


SECTIONS = {
    "data": DataConfig,
    "source": SourceConfig,
    "model": ModelConfig,
    "maskpre": MaskPreConfig,
    "clustering": ClusteringConfig,
    "optim": OptimConfig,
    "run": RunConfig,
}


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a run, by section. Units: pixels, epochs, iterations."""

    data: DataConfig = field(default_factory=DataConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    maskpre: MaskPreConfig = field(default_factory=MaskPreConfig)
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        """{section: {field: value}}, JSON-serialisable."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict`; also reads the flat dicts of earlier versions.

        Unknown keys are ignored (a newer setting read by an older version), missing keys take
        their defaults.
        """
        nested = all(isinstance(record.get(name), dict) for name in SECTIONS if name in record)
        nested = nested and any(name in record for name in SECTIONS)
        sections = {}
        for name, section in SECTIONS.items():
            values = dict(record.get(name, {}) if nested else record)
            for f in dataclasses.fields(section):  # a setting recorded under an earlier name
                for alias in f.metadata["aliases"]:
                    if alias in values and f.name not in values:
                        values[f.name] = values.pop(alias)
            known = {f.name for f in dataclasses.fields(section)}
            sections[name] = section(**{k: v for k, v in values.items() if k in known})
        return cls(**sections)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with flat field changes, e.g. ``cfg.replace(eps=0.5, epochs=2)``."""
        by_section: dict[str, dict] = {}
        for key, value in changes.items():
            by_section.setdefault(_section_of(key), {})[key] = value
        return dataclasses.replace(
            self,
            **{
                name: dataclasses.replace(getattr(self, name), **values)
                for name, values in by_section.items()
            },
        )

    def digest(self) -> str:
        """A short hash of the configuration (recorded with checkpoints and exports)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def validate(self) -> None:
        """Raise :class:`UserError` for a bad or inconsistent setting (all checked at start-up).

        Each field's choices and range come from its metadata; the checks below that list are
        the ones that relate several settings.
        """
        from maskpre_tf.data.datasets.loader import check_dataset_name  # no TensorFlow

        for _, f, value in self.fields():
            check_value(f, value)
        d, o, c, r, src = self.data, self.optim, self.clustering, self.run, self.source
        check_dataset_name(d.dataset, "--dataset")
        if src.source_dataset:
            check_dataset_name(src.source_dataset, "--source_dataset")
        if o.num_instances < 1 or o.batch_size % o.num_instances:
            raise UserError(
                f"--batch_size={o.batch_size} is not a multiple of "
                f"--num_instances={o.num_instances}; the P x K sampler needs P whole identities"
            )
        if c.k1 < 1 or not 1 <= c.k2 <= c.k1:
            raise UserError(
                f"--k1={c.k1} --k2={c.k2}: expected 1 <= --k2 <= --k1 (usual: --k1=30 --k2=6)"
            )
        if r.keep_best and not r.val_dir:
            raise UserError(
                "--keep_best needs --val_dir (a labelled validation split); the test "
                "set is never used to select a model"
            )
        if src.source_dataset and not src.source_dir:
            raise UserError("--source_dataset needs --source_dir (the labelled source root)")

    def fields(self) -> list[tuple[str, dataclasses.Field, Any]]:
        """(section name, field, value) of every setting, in declaration order."""
        return [
            (name, f, getattr(getattr(self, name), f.name))
            for name in SECTIONS
            for f in dataclasses.fields(SECTIONS[name])
        ]


def _section_of(name: str) -> str:
    for section, cls in SECTIONS.items():
        if name in {f.name for f in dataclasses.fields(cls)}:
            return section
    raise KeyError(f"no setting named {name!r}")
