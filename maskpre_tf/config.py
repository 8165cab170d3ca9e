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

from maskpre_tf.config_fields import AUTO_EPS, NETWORKS, check_value
from maskpre_tf.config_sections import (
    ClusteringConfig,
    DataConfig,
    MaskPreConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    SourceConfig,
)
from maskpre_tf.errors import UserError

__all__ = [
    "AUTO_EPS",
    "NETWORKS",
    "SECTIONS",
    "ClusteringConfig",
    "DataConfig",
    "MaskPreConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SourceConfig",
    "TrainConfig",
]

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
            section, name = _section_of(key)
            by_section.setdefault(section, {})[name] = value
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


def _section_of(name: str) -> tuple[str, str]:
    """(section, setting) of a setting's name or one of its earlier names."""
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if name == f.name or name in f.metadata["aliases"]:
                return section, f.name
    raise KeyError(f"no setting named {name!r}")
