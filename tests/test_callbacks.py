"""The callbacks of a run: clustering step, epoch counter, progress and its summary."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from maskpre_tf.config import TrainConfig  # noqa: E402
from maskpre_tf.training.callbacks import EpochCounter, ProgressCallback  # noqa: E402
from maskpre_tf.training.clustering_callback import (  # noqa: E402
    ClusteringCallback,
    TooFewClustersError,
    outliers_as_instances,
)
from maskpre_tf.training.state import RunState  # noqa: E402


def _state(n: int = 4) -> RunState:
    return RunState(
        pseudo_labels=tf.Variable(np.full(n, -1, np.int64)),
        epoch=tf.Variable(0, dtype=tf.int64),
        best_map=tf.Variable(-1.0, dtype=tf.float64),
    )


def test_outliers_become_their_own_clusters_after_the_real_ones():
    out = outliers_as_instances(np.array([1, -1, 0, -1, 1]))
    np.testing.assert_array_equal(out, [1, 2, 0, 3, 1])
    np.testing.assert_array_equal(outliers_as_instances(np.array([-1, -1])), [0, 1])


def test_epoch_counter_counts_finished_epochs():
    state = _state()
    counter = EpochCounter(state)
    counter.on_epoch_end(4)
    assert int(state.epoch) == 5


def _run_epochs(callback, epochs, steps):
    for epoch in epochs:
        callback.on_epoch_begin(epoch)
        for step in range(steps):
            callback.on_train_batch_begin(step)
            callback.on_train_batch_end(step, {"loss": 1.0 / (step + 1)})
        callback.on_epoch_end(epoch, {"loss": 0.5, "cluster_loss": 0.5})


def test_progress_lines_and_a_summary_that_survives_a_resume(tmp_path):
    path = str(tmp_path / "summary_epochs.json")
    lines = []
    state = _state()
    progress = ProgressCallback(state, batch_size=8, steps=10, summary_path=path, log=lines.append)
    assert not progress.interactive  # pytest captures stdout: lines, not a bar
    _run_epochs(progress, [0, 1], steps=10)
    with open(path) as f:
        assert [e["epoch"] for e in json.load(f)["epochs"]] == [1, 2]  # written every epoch
    steps = [line for line in lines if "step" in line]
    assert len(steps) == 8 and steps[0].startswith("epoch 1: step 2/10, loss 0.500")
    assert "img/s, ETA" in steps[0]
    assert any(line.startswith("epoch 2: loss 0.500 (cluster 0.500)") for line in lines)
    # A resumed run (a new process, same file) keeps epochs 1-2 and replaces a repeated epoch 2.
    resumed = ProgressCallback(state, batch_size=8, steps=10, summary_path=path, log=print)
    _run_epochs(resumed, [1, 2], steps=2)
    with open(path) as f:
        epochs = json.load(f)["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert all(e["steps_seconds"] >= 0 and e["images_per_second"] > 0 for e in epochs)


@pytest.fixture(scope="module")
def tiny_model():
    from maskpre_tf.models.maskpre import build_maskpre

    cfg = TrainConfig().replace(
        backbone="resnet_small",
        backbone_weights="none",
        height=32,
        width=16,
        batch_size=8,
        num_instances=2,
    )
    return cfg, build_maskpre(cfg, num_train=61, num_replicas=1, ramp_steps=0)


def _records(synth_market):
    from maskpre_tf.data.datasets import load_dataset

    return load_dataset("market1501", synth_market, verbose=False).train


def test_clustering_sets_labels_memory_and_sampler(synth_market, tiny_model):
    from maskpre_tf.data.sampler import PKSampler

    cfg, model = tiny_model
    train = _records(synth_market)
    cfg = cfg.replace(eps="auto", k1=8, k2=2, min_samples=2, outliers="instances")
    state = _state(len(train))
    sampler = PKSampler(np.arange(len(train)), np.zeros(len(train)), 8, 2, seed=0)
    callback = ClusteringCallback(
        state, train, sampler, cfg, lambda x: model.teacher(x, training=False), log=lambda _: None
    )
    callback.set_model(model)
    callback.on_epoch_begin(0)
    labels = state.pseudo_labels.numpy()
    assert labels.min() == 0  # outliers became instances
    assert int(model.memory.num_active) == labels.max() + 1
    np.testing.assert_array_equal(sampler.labels, labels)
    stats = state.cluster_stats
    assert 0.3 <= stats["eps"] <= 0.8 and "ari" in stats and stats["extract_seconds"] >= 0


def test_too_few_clusters_stop_the_run_with_what_to_try(synth_market, tiny_model):
    from maskpre_tf.data.sampler import PKSampler

    cfg, model = tiny_model
    train = _records(synth_market)
    cfg = cfg.replace(eps="0.3", min_samples=50, outliers="drop")
    state = _state(len(train))
    sampler = PKSampler(np.arange(len(train)), np.zeros(len(train)), 8, 2, seed=0)
    callback = ClusteringCallback(
        state, train, sampler, cfg, lambda x: model.teacher(x, training=False), log=lambda _: None
    )
    callback.set_model(model)
    with pytest.raises(
        TooFewClustersError,
        match=r"eps 0\.300 found 0 clusters and \d+ "
        r"outliers.*--eps=auto",
    ):
        callback.on_epoch_begin(0)
