"""Training configuration: nested frozen dataclasses, filled once from absl flags.

Defaults are the field's standard unsupervised re-ID recipe (cluster-contrast, Dai et al. 2021;
MMT, Ge et al., ICLR 2020) plus MaskPre's parts (Yin et al., Pattern Recognition 126, 2022).
Each section is what one part of the program needs: ``data`` the readers and input pipeline,
``source`` domain adaptation, ``model`` the encoder, ``maskpre`` the method's heads and losses,
``clustering`` the pseudo labels, ``optim`` sampling and optimisation, ``run`` the run itself.
Every field's help text is written once, as field metadata, and becomes the flag's help.

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

from maskpre_tf.errors import UserError

# The two encoders of a run: the EMA teacher and the online (trained) student.
NETWORKS = ("teacher", "student")
# --eps values that choose eps at every clustering (rules in maskpre_tf.clustering.auto_eps).
AUTO_EPS = ("auto", "auto_linked")


def _field(default: Any, help: str, flag: bool = True) -> Any:
    """A dataclass field with its help text; ``flag=False`` fields are resolved, not set."""
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True)
class DataConfig:
    """The unlabelled training set, its evaluation splits and the input pipeline."""

    dataset: str = _field("auto", "dataset layout: auto, market1501, dukemtmc, msmt17 or folder")
    data_dir: str = _field("data/demo", "dataset root directory")
    generate_demo: bool = _field(
        False, "generate the demo pedestrian set in --data_dir if it is missing"
    )
    cam_pattern: str = _field(
        r"_c(\d+)", "folder layout: regex whose group (or named group cam) is the camera id"
    )
    manifest: str = _field(
        "", "folder layout: CSV manifest (path,camid[,pid]) instead of file-name parsing"
    )
    query_dir: str = _field(
        "", "folder layout: labelled query crops (Market-style names) for evaluation"
    )
    gallery_dir: str = _field(
        "", "folder layout: labelled gallery crops (Market-style names) for evaluation"
    )
    height: int = _field(256, "input height in pixels")
    width: int = _field(128, "input width in pixels")
    pad: int = _field(10, "zero padding before the random crop, pixels")
    erase_prob: float = _field(0.5, "random-erasing probability")


@dataclass(frozen=True)
class SourceConfig:
    """Domain adaptation: a labelled source domain the encoder trains on first."""

    source_dataset: str = _field(
        "", "labelled source dataset layout for domain adaptation (empty = none)"
    )
    source_dir: str = _field(
        "", "labelled source dataset root (with --generate_demo: generated if missing)"
    )
    source_epochs: int = _field(
        30, "epochs of supervised source pre-training (iterations per epoch: --iters)"
    )


@dataclass(frozen=True)
class ModelConfig:
    """The encoder: backbone, its weights and the input normalisation those weights expect."""

    backbone: str = _field("resnet50", "resnet50, mobilenet_v2 or resnet_small")
    backbone_weights: str = _field(
        "imagenet",
        "imagenet (Keras download), none, or a Keras "
        "weights file (e.g. written by python -m maskpre_tf.weights "
        "import)",
    )
    input_norm: str = _field(
        "",
        "input normalisation the weights expect: caffe, tf or torch; "
        "empty = decided by --backbone_weights (needed for a weights file "
        "of unknown origin)",
    )
    last_stride: int = _field(1, "stride of the last backbone stage (1 = re-ID standard)")
    frozen_stages: int = _field(
        0,
        "backbone stages kept frozen (0-4: stem, then each "
        "down-sampling stage); fewer gradients, more steps per minute",
    )
    layout: str = _field(
        "keras", "backbone layout (keras or torch), decided by the weights", flag=False
    )


@dataclass(frozen=True)
class MaskPreConfig:
    """MaskPre's parts: DropBlock views, mask prediction, clustering head, EMA teacher."""

    drop_rate: float = _field(
        0.2,
        "DropBlock target drop rate (fraction of feature-map cells "
        "dropped), ramped linearly from 0 at the first step",
    )
    drop_warmup_epochs: int = _field(
        0, "epochs over which the DropBlock rate ramps up to --drop_rate (0 = the whole run)"
    )
    block_size: int = _field(3, "DropBlock block size in feature-map cells")
    mask_stage: str = _field(
        "last",
        "where the views are masked: last (the backbone's output "
        "map) or inner (before the last stage: ResNet-50 conv4, "
        "MobileNetV2 block 13, resnet_small stage 3), so the last stage "
        "must infer the hole",
    )
    mask_weight: float = _field(1.0, "weight of the mask-prediction loss (0 disables the head)")
    consistency_weight: float = _field(
        0.5, "weight of the cross-view consistency loss (0 disables it)"
    )
    temperature: float = _field(0.05, "temperature of the cluster-contrastive loss")
    consistency_temperature: float = _field(
        0.5, "temperature of the views' soft assignments in the consistency loss"
    )
    consistency_teacher_temperature: float = _field(
        0.5,
        "temperature of the teacher's soft "
        "assignment in the consistency loss (lower "
        "= a sharper target)",
    )
    proto_momentum: float = _field(
        0.1, "memory momentum (share of the old prototype kept per update)"
    )
    memory_update: str = _field(
        "mean",
        "prototype update: mean (batch mean per cluster), "
        "instance (one step per sample, cluster-contrast) or hard (the "
        "least similar sample of each cluster)",
    )
    camera_memory: bool = _field(
        False,
        "contrast against per-camera proxies of each cluster "
        "(CAP: intra- and inter-camera losses) instead of one "
        "prototype per cluster; needs camera ids",
    )
    camera_temperature: float = _field(0.07, "temperature of the camera-proxy losses")
    camera_negatives: int = _field(50, "hard negative proxies of the inter-camera loss")
    inter_camera_weight: float = _field(
        0.5, "weight of the inter-camera loss beside the intra-camera one"
    )
    ema_momentum: float = _field(0.999, "EMA teacher momentum")


@dataclass(frozen=True)
class ClusteringConfig:
    """Pseudo labels: k-reciprocal Jaccard distance + DBSCAN, once an epoch."""

    eps: str = _field(
        "0.6",
        "DBSCAN eps on the Jaccard distance, in (0, 1), or chosen again at every clustering: "
        "auto (the eps with the most clusters) or auto_linked (the eps whose clusters best "
        "match the Jaccard graph's linked pairs); see maskpre_tf.clustering.auto_eps",
    )
    eps_tolerance: float = _field(
        0.0,
        "with --eps=auto or auto_linked: take the largest eps whose score stays within this "
        "fraction of the peak (the plateau's right end) instead of the peak itself",
    )
    min_samples: int = _field(4, "DBSCAN min_samples (>= 1)")
    k1: int = _field(30, "k-reciprocal neighbourhood size")
    k2: int = _field(6, "local query expansion size (<= --k1)")
    outliers: str = _field(
        "drop",
        "DBSCAN outliers: drop (standard recipe) or instances (each "
        "one its own cluster, as in SpCL's hybrid memory)",
    )
    camera_aware: bool = _field(False, "subtract each camera's mean feature before clustering")
    cluster_network: str = _field(
        "teacher",
        "whose features are clustered each epoch: teacher "
        "(the EMA model, MMT-style) or student (the online model, as "
        "cluster-contrast does)",
    )
    image_cache_mib: int = _field(
        2048,
        "memory for the training crops decoded once and kept for the clustering extraction of "
        "every epoch (8-bit RGB at the input size: Market-1501 at 128x64 needs 303 MiB, at "
        "256x128 1,213 MiB); a larger set is decoded again each epoch; 0 never keeps them",
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

    batch_size: int = _field(256, "global batch size (P x K)")
    num_instances: int = _field(16, "K: instances per pseudo identity in a batch")
    lr: float = _field(3.5e-4, "Adam learning rate")
    weight_decay: float = _field(
        5e-4, "L2 weight decay (added to the gradients, as torch Adam does)"
    )
    epochs: int = _field(50, "training epochs")
    lr_step: int = _field(20, "epoch at which the learning rate drops x0.1")
    iters: int = _field(200, "iterations per epoch")
    precision: str = _field("float32", "float32, mixed_bfloat16 or mixed_float16")

    @property
    def num_ids_per_batch(self) -> int:
        """P of the P x K sampler."""
        return self.batch_size // self.num_instances


@dataclass(frozen=True)
class RunConfig:
    """Where the run writes, its seed, evaluation cadence, model selection, distribution."""

    output_dir: str = _field(
        "runs/market", "where checkpoints, TensorBoard logs and the summary go"
    )
    seed: int = _field(0, "random seed")
    eval_every: int = _field(5, "evaluate on query/gallery every N epochs (0 = only at the end)")
    deploy_network: str = _field(
        "teacher",
        "the encoder the run delivers: teacher (the EMA model) or student (the online "
        "model); its figures are the run's result, --keep_best keeps it, encoder.weights.h5 "
        "holds it, and evaluate, export, search and the probe load it",
    )
    eval_other: bool = _field(
        False,
        "also evaluate the encoder not deployed (the student beside a deployed teacher or the "
        "teacher beside a deployed student), logged with its name as prefix (student_mAP)",
    )
    keep_best: bool = _field(False, "keep the best epoch by mAP on --val_dir (never the test set)")
    val_dir: str = _field("", "labelled validation split (Market layout) for --keep_best")
    steps_per_loop: int = _field(
        1,
        "training steps per tf.function call (fewer host round "
        "trips; progress, losses and the NaN check per loop)",
    )
    strategy: str = _field(
        "mirrored", "mirrored (all local devices), multi_worker (TF_CONFIG) or default"
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
            values = record.get(name, {}) if nested else record
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
        """Raise :class:`UserError` for inconsistent settings (all checked at start-up)."""
        from maskpre_tf.data.datasets.loader import check_dataset_name  # no TensorFlow

        d, o, m, c, r = self.data, self.optim, self.maskpre, self.clustering, self.run
        check_dataset_name(d.dataset, "--dataset")
        if self.source.source_dataset:
            check_dataset_name(self.source.source_dataset, "--source_dataset")
        if o.num_instances < 1 or o.batch_size % o.num_instances:
            raise UserError(
                f"--batch_size={o.batch_size} is not a multiple of "
                f"--num_instances={o.num_instances}; the P x K sampler needs P whole identities"
            )
        if not 0.0 <= m.drop_rate < 1.0:
            raise UserError(f"--drop_rate={m.drop_rate}: expected a rate in [0, 1)")
        if m.mask_stage not in ("last", "inner"):
            raise UserError(f"--mask_stage={m.mask_stage}: expected last or inner")
        if m.memory_update not in ("mean", "instance", "hard"):
            raise UserError(f"--memory_update={m.memory_update}: expected mean, instance or hard")
        if (
            min(
                m.temperature,
                m.consistency_temperature,
                m.consistency_teacher_temperature,
                m.camera_temperature,
            )
            <= 0
        ):
            raise UserError(
                "temperatures (--temperature, --consistency_temperature, "
                "--consistency_teacher_temperature, --camera_temperature) must be "
                "positive"
            )
        if o.precision not in ("float32", "mixed_bfloat16", "mixed_float16"):
            raise UserError(
                f"--precision={o.precision}: expected float32, mixed_bfloat16 or mixed_float16"
            )
        if c.eps not in AUTO_EPS and not 0.0 < _number(c.eps) < 1.0:
            raise UserError(
                f"--eps={c.eps}: expected auto, auto_linked or a Jaccard distance in (0, 1); "
                "typical values are 0.4-0.7 (pairs with no k-reciprocal overlap are at 1)"
            )
        if not 0.0 <= c.eps_tolerance < 1.0:
            raise UserError(
                f"--eps_tolerance={c.eps_tolerance}: expected a fraction in [0, 1), e.g. 0.02"
            )
        if c.image_cache_mib < 0:
            raise UserError(
                f"--image_cache_mib={c.image_cache_mib}: expected >= 0 (0 decodes the training "
                "crops every epoch)"
            )
        if c.min_samples < 1:
            raise UserError(f"--min_samples={c.min_samples}: expected >= 1 (the usual value is 4)")
        if c.k1 < 1 or not 1 <= c.k2 <= c.k1:
            raise UserError(
                f"--k1={c.k1} --k2={c.k2}: expected 1 <= --k2 <= --k1 (usual: --k1=30 --k2=6)"
            )
        if c.cluster_network not in NETWORKS:
            raise UserError(f"--cluster_network={c.cluster_network}: expected teacher or student")
        if c.outliers not in ("drop", "instances"):
            raise UserError(f"--outliers={c.outliers}: expected drop or instances")
        if r.deploy_network not in NETWORKS:
            raise UserError(f"--deploy_network={r.deploy_network}: expected teacher or student")
        if r.strategy not in ("mirrored", "multi_worker", "default"):
            raise UserError(f"--strategy={r.strategy}: expected mirrored, multi_worker, default")
        if r.keep_best and not r.val_dir:
            raise UserError(
                "--keep_best needs --val_dir (a labelled validation split); the test "
                "set is never used to select a model"
            )
        if self.source.source_dataset and not self.source.source_dir:
            raise UserError("--source_dataset needs --source_dir (the labelled source root)")
        if d.height % 8 or d.width % 8:
            raise UserError(f"--height/--width {d.height}x{d.width} must be multiples of 8")
        if r.steps_per_loop < 1:
            raise UserError(f"--steps_per_loop={r.steps_per_loop}: expected >= 1")
        if o.epochs < 1 or o.iters < 1:
            raise UserError(f"--epochs={o.epochs} --iters={o.iters}: both must be >= 1")


def _number(text: str) -> float:
    """float(text), or NaN when it is not a number (then every range check fails)."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _section_of(name: str) -> str:
    for section, cls in SECTIONS.items():
        if name in {f.name for f in dataclasses.fields(cls)}:
            return section
    raise KeyError(f"no setting named {name!r}")
