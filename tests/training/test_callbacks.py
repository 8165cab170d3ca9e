"""The epoch's stages and observers: their order, the pseudo-label stage, commit, progress."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from maskpre_tf.config import TrainConfig  # noqa: E402
from maskpre_tf.training.clustering_callback import (  # noqa: E402
    ClusteringCallback,
    TooFewClustersError,
    outliers_as_instances,
)
from maskpre_tf.training.commit import CommitCallback  # noqa: E402
from maskpre_tf.training.contracts import (  # noqa: E402
    ClusteredModel,
    MonitoredModel,
    TrainableModel,
)
from maskpre_tf.training.epoch import Epoch  # noqa: E402
from maskpre_tf.training.progress import ProgressCallback  # noqa: E402
from maskpre_tf.training.state import RunState  # noqa: E402
from maskpre_tf.training.tensorboard import epoch_scalars  # noqa: E402


def test_outliers_become_their_own_clusters_after_the_real_ones():
    out = outliers_as_instances(np.array([1, -1, 0, -1, 1]))
    np.testing.assert_array_equal(out, [1, 2, 0, 3, 1])
    np.testing.assert_array_equal(outliers_as_instances(np.array([-1, -1])), [0, 1])


class Spy(keras.callbacks.Callback):
    """Records its hook calls in a shared list; a stage writes into the logs it gets."""

    def __init__(self, name: str, calls: list, writes: dict | None = None):
        super().__init__()
        self.name, self.calls, self.writes = name, calls, writes or {}

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append((self.name, "begin"))
        if self.writes:
            logs.update(self.writes)

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append((self.name, "batch"))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append((self.name, "end", dict(logs)))
        if self.writes:
            logs.update(self.writes)


class FakeTrainer:
    model = None

    def __init__(self, calls):
        self.calls = calls

    def train_epoch(self, epoch, observers):
        self.calls.append(("steps", epoch))
        for observer in observers:
            observer.on_train_batch_end(0, {"loss": 1.0})
        return {"loss": 1.0}


def test_the_epoch_runs_its_stages_in_the_declared_order_and_observers_only_read():
    calls: list = []
    labels = Spy("pseudo_labels", calls, {"eps": 0.5})
    evaluation = Spy("evaluation", calls, {"mAP": 0.3})
    observers = [Spy("progress", calls), Spy("tensorboard", calls)]
    commit = Spy("commit", calls)
    epoch = Epoch(FakeTrainer(calls), commit, labels, evaluation, observers)
    assert epoch.callbacks == [labels, evaluation, *observers, commit]
    logs = epoch.run(0)
    names = [c[:2] for c in calls]
    assert names == [
        ("progress", "begin"),
        ("tensorboard", "begin"),
        ("pseudo_labels", "begin"),
        ("steps", 0),
        ("progress", "batch"),
        ("tensorboard", "batch"),
        ("evaluation", "end"),
        ("progress", "end"),
        ("tensorboard", "end"),
        ("commit", "end"),
    ]
    # What a stage measured reaches every callback after it, through the epoch's logs.
    assert calls[-1][2] == {"eps": 0.5, "loss": 1.0, "mAP": 0.3}
    assert logs == {"eps": 0.5, "loss": 1.0, "mAP": 0.3}
    # Observers get a read-only view: one that tries to write fails loudly.
    writer = Spy("writer", [], {"oops": 1})
    with pytest.raises(AttributeError):  # a mappingproxy has no update
        Epoch(FakeTrainer([]), Spy("commit", []), observers=[writer]).run(0)


def _state(n: int = 4) -> RunState:
    return RunState.create(np.full(n, -1), track_best=True)


def test_commit_counts_the_epoch_then_checkpoints(tmp_path):
    state = _state()
    checkpoint = tf.train.Checkpoint(epoch=state.epoch)
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=2)
    CommitCallback(state, manager).on_epoch_end(4)
    assert int(state.epoch) == 5
    assert manager.latest_checkpoint.endswith("ckpt-5")
    reader = tf.train.load_checkpoint(manager.latest_checkpoint)
    assert reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 5


def _run_epochs(callback, epochs, steps):
    for epoch in epochs:
        callback.on_epoch_begin(epoch)
        for step in range(steps):
            callback.on_train_batch_begin(step)
            callback.on_train_batch_end(step, {"loss": 1.0 / (step + 1)})
        callback.on_epoch_end(epoch, {"loss": 0.5, "cluster_loss": 0.5, "eps": 0.4, "x": "s"})


def test_progress_lines_and_a_summary_that_survives_a_resume(tmp_path):
    path = str(tmp_path / "summary_epochs.json")
    lines = []
    progress = ProgressCallback(batch_size=8, steps=10, summary_path=path, log=lines.append)
    assert not progress.interactive  # pytest captures stdout: lines, not a bar
    _run_epochs(progress, [0, 1], steps=10)
    with open(path) as f:
        epochs = json.load(f)["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]  # written every epoch
    assert epochs[0]["eps"] == 0.4 and "x" not in epochs[0]  # the logs' numbers only
    steps = [line for line in lines if "step" in line]
    assert len(steps) == 8 and steps[0].startswith("epoch 1: step 2/10, loss 0.500")
    assert "img/s, ETA" in steps[0]
    assert any(line.startswith("epoch 2: loss 0.500 (cluster 0.500)") for line in lines)
    # A resumed run (a new process, same file) keeps epochs 1-2 and replaces a repeated epoch 2.
    resumed = ProgressCallback(batch_size=8, steps=10, summary_path=path, log=print)
    _run_epochs(resumed, [1, 2], steps=2)
    with open(path) as f:
        epochs = json.load(f)["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert all(e["steps_seconds"] >= 0 and e["images_per_second"] > 0 for e in epochs)


def test_tensorboard_tags_of_the_epoch_logs():
    logs = {"loss": 1.0, "cluster_loss": 0.5, "eps": 0.5, "ari": 0.3, "mAP": 0.2}
    logs.update(student_mAP=0.25, nearest_jaccard_distance=np.zeros(3), eval_seconds=2.0)
    assert epoch_scalars(logs) == {
        "loss": 1.0,
        "cluster_loss": 0.5,
        "clustering/eps": 0.5,
        "clustering/ari": 0.3,
        "eval/mAP": 0.2,
        "eval/student_mAP": 0.25,
        "eval/eval_seconds": 2.0,
    }


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


def test_the_models_keep_the_declared_contracts(tiny_model):
    from maskpre_tf.models.supervised import SupervisedReid

    _, model = tiny_model
    assert isinstance(model, TrainableModel)
    assert isinstance(model, ClusteredModel) and isinstance(model, MonitoredModel)
    supervised = SupervisedReid(model.student, num_ids=3, global_batch_size=8)
    supervised.compile(optimizer="adam")  # as the source phase builds it
    assert isinstance(supervised, TrainableModel)
    assert not isinstance(supervised, ClusteredModel)


def _records(synth_market):
    from maskpre_tf.data.datasets import load_dataset

    return load_dataset("market1501", synth_market, verbose=False).train


def _stage(cfg, model, train, state):
    embed = lambda x: model.teacher(x, training=False)  # noqa: E731
    size = (cfg.data.height, cfg.data.width)
    stage = ClusteringCallback(
        state, train, cfg.clustering, size, cfg.optim.num_ids_per_batch, embed, log=lambda _: None
    )
    stage.set_model(model)
    return stage


def test_the_pseudo_label_stage_writes_the_labels_home_and_the_memories(synth_market, tiny_model):
    cfg, model = tiny_model
    train = _records(synth_market)
    cfg = cfg.replace(eps="auto", k1=8, k2=2, min_samples=2, outliers="instances")
    state = _state(len(train))
    logs: dict = {}
    _stage(cfg, model, train, state).on_epoch_begin(0, logs)
    labels = state.labels.numpy()
    assert labels.min() == 0  # outliers became instances
    assert int(model.memory.num_active) == labels.max() + 1
    assert 0.3 <= logs["eps"] <= 0.8 and "ari" in logs and logs["extract_seconds"] >= 0
    assert logs["nearest_jaccard_distance"].shape == (len(train),)


def test_too_few_clusters_stop_the_run_with_what_to_try(synth_market, tiny_model):
    cfg, model = tiny_model
    train = _records(synth_market)
    cfg = cfg.replace(eps=0.3, min_samples=50, outliers="drop")
    state = _state(len(train))
    with pytest.raises(
        TooFewClustersError,
        match=r"eps 0\.300 found 0 clusters and \d+ outliers.*--eps=auto",
    ):
        _stage(cfg, model, train, state).on_epoch_begin(0, {})
    assert (state.labels.numpy() == -1).all()  # nothing written
