"""Every shipped flagfile parses into a valid TrainConfig; bad settings are user errors."""

import glob
import os

import pytest
from absl import flags

from maskpre_tf.config import TrainConfig
from maskpre_tf.config_flags import config_from_flags, define_flags
from maskpre_tf.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse(argv: list[str], resolve_weights: bool = True) -> TrainConfig:
    values = flags.FlagValues()
    define_flags(values)
    values(["prog", *argv])
    return config_from_flags(values, resolve_weights=resolve_weights)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.flags"))))
def test_flagfiles_parse(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    # Weights files named by the CPU protocols exist only where a user imported them.
    cfg = parse([f"--flagfile={path}"], resolve_weights=False)
    assert cfg.optim.batch_size % cfg.optim.num_instances == 0
    if "2" in os.path.basename(path):  # domain adaptation files name a labelled source
        source = cfg.source
        assert source.source_dataset and source.source_dir
        assert source.source_dataset != cfg.data.dataset


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch_size=30", "--num_instances=4"], "multiple of"),
        (["--drop_rate=1.5"], "drop_rate"),
        (["--precision=half"], "precision"),
        (["--keep_best"], "val_dir"),
        (["--source_dataset=market1501"], "source_dir"),
        (["--outliers=keep"], "outliers"),
        (["--deploy_network=ema"], "--deploy_network=ema: expected teacher or student"),
        (["--cluster_network=both"], "--cluster_network=both"),
        (["--eps=-0.1"], "--eps=-0.1"),
        (["--eps=1.2"], "--eps=1.2"),
        (["--eps=automatic"], "expected auto, auto_linked or a Jaccard distance"),
        (["--k1=5", "--k2=6"], "--k2 <= --k1"),
        (["--min_samples=0"], "--min_samples=0"),
        (["--input_norm=imagenet", "--backbone_weights=none"], "--input_norm=imagenet"),
        (["--backbone=resnet_small"], "no ImageNet weights"),
        (["--backbone_weights=/no/such.weights.h5"], "no such file"),
    ],
)
def test_inconsistent_settings_are_user_errors(argv, message):
    with pytest.raises(UserError, match=message):
        parse(argv)


def test_digest_tracks_settings():
    assert TrainConfig().digest() == TrainConfig().digest()
    assert TrainConfig().digest() != TrainConfig().replace(eps=0.5).digest()


def test_sections_and_flat_replace():
    cfg = TrainConfig().replace(eps=0.45, height=128, backbone="mobilenet_v2")
    assert cfg.clustering.eps == 0.45 and cfg.data.height == 128
    assert cfg.model.backbone == "mobilenet_v2" and cfg.optim == TrainConfig().optim
    with pytest.raises(KeyError):
        TrainConfig().replace(no_such_setting=1)


def test_dict_round_trip_and_flat_records_of_earlier_versions():
    cfg = TrainConfig().replace(eps=0.5, backbone="resnet_small", seed=3)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    flat = {k: v for section in cfg.to_dict().values() for k, v in section.items()}
    flat["removed_setting"] = 1  # unknown keys are ignored
    assert TrainConfig.from_dict(flat) == cfg


def test_weights_origin_is_resolved_at_start_up():
    assert parse(["--backbone=resnet50"]).model.input_norm == "caffe"
    assert parse(["--backbone=mobilenet_v2"]).model.input_norm == "tf"
    random = parse(["--backbone=resnet_small", "--backbone_weights=none"]).model
    assert (random.input_norm, random.layout) == ("torch", "keras")


def test_help_is_written_once_as_field_metadata():
    values = flags.FlagValues()
    define_flags(values)
    assert values["drop_rate"].help.startswith("DropBlock target drop rate")
    assert "layout" not in values  # resolved from the weights, not a flag
