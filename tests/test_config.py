"""Every shipped flagfile parses into a valid TrainConfig; bad settings are user errors."""

import glob
import os

import pytest
from absl import flags

from maskpre_tf.config import TrainConfig, config_from_flags, define_flags
from maskpre_tf.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(argv: list[str]) -> TrainConfig:
    values = flags.FlagValues()
    define_flags(values)
    values(["prog", *argv])
    return config_from_flags(values)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.flags"))))
def test_flagfiles_parse(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = parse([f"--flagfile={path}"])
    assert cfg.batch_size % cfg.num_instances == 0
    if "2" in os.path.basename(path):  # domain adaptation files name a labelled source
        assert cfg.source_dataset and cfg.source_dir and cfg.source_dataset != cfg.dataset


@pytest.mark.parametrize("argv, message", [
    (["--batch_size=30", "--num_instances=4"], "multiple of"),
    (["--drop_rate=1.5"], "drop_rate"),
    (["--precision=half"], "precision"),
    (["--keep_best"], "val_dir"),
    (["--source_dataset=market1501"], "source_dir"),
    (["--outliers=keep"], "outliers"),
])
def test_inconsistent_settings_are_user_errors(argv, message):
    with pytest.raises(UserError, match=message):
        parse(argv)


def test_digest_tracks_settings():
    assert TrainConfig().digest() == TrainConfig().digest()
    assert TrainConfig().digest() != TrainConfig(eps=0.5).digest()
