"""Every shipped flagfile trains end to end: one epoch of 2 steps on generated data.

Data, weights and size are overridden (and the budget, the BatchNorm groups and the neighbourhood
sizes and eps of the clustering: untrained weights put 61 generated crops into one or two groups
at any eps the automatic rule would take, so a fixed eps and outliers as clusters of their own
fill a batch); everything else is as shipped,
so a flagfile whose settings stop parsing, validating or fitting together fails here before a
user meets it. The MobileNetV2 recipe represents the rest in the default suite (BatchNorm groups
are overridden on for it too); ``pytest -m slow`` runs them all.
"""

from __future__ import annotations

import glob
import os

import pytest
from train_runs import ROOT, run_train

from maskpre_tf.config_flags import config_from_argv

# What a run on the generated set must override: its data, weights, size and budget.
OVERRIDES = {
    "dataset": "market1501",
    "backbone_weights": "none",
    "input_norm": "torch",
    "height": 64,
    "width": 32,
    "pad": 2,
    "batch_size": 16,
    "bn_group_size": 8,
    "epochs": 1,
    "iters": 2,
    "eval_every": 1,
    "generate_demo": "false",
    "k1": 8,
    "k2": 2,
    "min_samples": 2,
    "outliers": "instances",
    "eps": 0.2,
}
FLAGFILES = sorted(
    os.path.relpath(p, ROOT)
    for p in glob.glob(os.path.join(ROOT, "configs", "*.flags"))
    if not p.endswith("recipe.flags")  # included by the others
)
DEFAULT = {"configs/market_cpu.flags"}


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory) -> str:
    """A MobileNetV2 weights file with random weights and BatchNorm statistics: with Keras's
    fresh statistics its features are nearly equal for every crop and cluster into one group."""
    import keras
    from batchnorm_stats import randomise_batchnorms

    model = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(OVERRIDES["height"], OVERRIDES["width"], 3)
    )
    randomise_batchnorms(model, seed=0)
    path = str(tmp_path_factory.mktemp("weights") / "mobilenet_v2_random.weights.h5")
    model.save_weights(path)
    return path


def overrides(flagfile: str, data_dir: str, run_dir: str, mobilenet: str) -> list[str]:
    """The command line of a flagfile's smoke run on the generated set."""
    cfg = config_from_argv([f"--flagfile={flagfile}"], resolve_weights=False)
    flags = {**OVERRIDES, "data_dir": data_dir, "run_dir": run_dir}
    if cfg.model.backbone == "mobilenet_v2":
        flags["backbone_weights"] = mobilenet
    if cfg.source.source_dataset:
        flags.update(source_dataset="market1501", source_dir=data_dir, source_epochs=1)
    return [f"--flagfile={flagfile}", *(f"--{k}={v}" for k, v in flags.items())]


@pytest.mark.parametrize(
    "flagfile",
    [f if f in DEFAULT else pytest.param(f, marks=pytest.mark.slow) for f in FLAGFILES],
)
def test_every_shipped_flagfile_trains_on_generated_data(
    flagfile, synth_market, tmp_path, mobilenet_weights
):
    run_dir = str(tmp_path / "run")
    proc = run_train(overrides(flagfile, synth_market, run_dir, mobilenet_weights))
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-2500:]
    assert os.path.isfile(os.path.join(run_dir, "encoder.weights.h5"))
    assert "after training: mAP" in proc.stdout


def test_the_flagfiles_share_one_recipe():
    """Every flagfile's method settings equal the recipe's; only scale knobs differ."""
    recipe = config_from_argv(["--flagfile=configs/recipe.flags"], resolve_weights=False)
    for flagfile in FLAGFILES:
        cfg = config_from_argv([f"--flagfile={flagfile}"], resolve_weights=False)
        assert cfg.maskpre == recipe.maskpre, flagfile
        assert cfg.clustering == recipe.clustering, flagfile
        assert cfg.optim.num_instances == recipe.optim.num_instances, flagfile
        assert cfg.run.deploy_network == recipe.run.deploy_network, flagfile
