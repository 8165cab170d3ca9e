"""Tests of maskpre_tf.data.pipeline: the training and evaluation datasets and their keys."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from image_files import H, W, solid_index, write_image_files  # noqa: E402

from maskpre_tf.data import pipeline  # noqa: E402
from maskpre_tf.data.sampler import PKSampler  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Solid-colour training images (colour encodes the index) plus broken files."""
    return write_image_files(tmp_path_factory.mktemp("images"))


def _train_setup(paths, labels, erase_prob=0.0, extra_batches=None, input_context=None):
    """(sampler, [epoch], [labels] — the homes the stream reads, dataset)."""
    cams = np.arange(len(paths)) % 3
    sampler = PKSampler(labels, cams, batch_size=8, num_instances=2, seed=0)
    epoch, home = [0], [labels]
    stream = pipeline.TrainStream(
        paths,
        lambda: home[0],
        lambda: epoch[0],
        sampler,
        3,
        H,
        W,
        seed=7,
        pad=2,
        erase_prob=erase_prob,
    )
    dataset = pipeline.make_train_dataset(stream, input_context, extra_batches=extra_batches)
    return sampler, epoch, home, dataset


def test_train_dataset_shapes_labels_and_redriving(files):
    paths = files["solid"]
    labels = np.arange(len(paths)) // 3
    sampler, epoch, home, dataset = _train_setup(paths, labels)
    assert dataset.cardinality().numpy() == 3
    assert dataset.element_spec["image"].shape == (8, H, W, 3)
    assert dataset.element_spec["label"].shape == (8,)
    batches = list(dataset)
    assert len(batches) == 3
    for batch in batches:
        assert batch["image"].shape == (8, H, W, 3) and batch["image"].dtype == tf.float32
        assert batch["index"].dtype == tf.int64 and batch["label"].dtype == tf.int64
        index = batch["index"].numpy()
        np.testing.assert_array_equal(batch["label"].numpy(), labels[index])
        # The pixels come from the indexed file (centre pixel is never padding at pad 2).
        np.testing.assert_array_equal(solid_index(batch["image"].numpy()), index)
    first = np.concatenate([b["index"].numpy() for b in batches])
    np.testing.assert_array_equal(first, sampler.epoch_indices(0, 3 + 4)[:24])
    again = list(dataset)
    for x, y in zip(batches, again, strict=True):
        np.testing.assert_array_equal(x["image"].numpy(), y["image"].numpy())

    epoch[0] = 1
    new_labels = (np.arange(len(paths)) % 4).astype(np.int64)
    home[0] = new_labels  # a clustering wrote the labels' home
    redriven = list(dataset)
    assert len(redriven) == 3
    second = np.concatenate([b["index"].numpy() for b in redriven])
    assert not np.array_equal(first, second)
    for batch in redriven:
        index = batch["index"].numpy()
        np.testing.assert_array_equal(batch["label"].numpy(), new_labels[index])
        groups = batch["label"].numpy().reshape(4, 2)
        assert np.all(groups == groups[:, :1]) and len(set(groups[:, 0])) == 4


def test_train_dataset_survives_corrupt_file(files, capfd):
    paths = list(files["solid"])
    paths[4] = files["truncated_jpeg"]
    paths[9] = files["missing"]
    labels = np.arange(len(paths)) // 2  # 12 clusters of 2: the bad files are drawn every epoch
    _, _, _, dataset = _train_setup(paths, labels, erase_prob=0.5)
    batches = list(dataset)
    assert len(batches) == 3
    for batch in batches:
        index = batch["index"].numpy()
        assert 4 not in index and 9 not in index
        groups = batch["label"].numpy().reshape(4, 2)
        assert np.all(groups == groups[:, :1]) and len(set(groups[:, 0])) == 4
    assert files["truncated_jpeg"] in capfd.readouterr().err  # the skip is reported


def test_train_dataset_refills_from_spare_chunks_then_reports_exhaustion(files):
    paths = list(files["solid"])
    for bad in range(0, 24, 3):  # one image in three is unreadable
        paths[bad] = files["truncated_png"]
    labels = np.arange(len(paths)) // 2
    _, _, _, dataset = _train_setup(paths, labels, extra_batches=1)
    batches = list(dataset)  # needs several 1-batch spare chunks
    assert len(batches) == 3
    index = np.concatenate([b["index"].numpy() for b in batches])
    assert not np.isin(index, np.arange(0, 24, 3)).any()
    all_bad = [files["truncated_png"]] * 24
    _, _, _, dataset = _train_setup(all_bad, labels, extra_batches=1)
    with pytest.raises(tf.errors.OpError, match="ran out of readable images"):
        list(dataset)


def _by_key(batches):
    """{key: (index, label, image)} of every row of the batches."""
    rows = {}
    for batch in batches:
        for i, key in enumerate(batch["key"].numpy()):
            assert key not in rows, "a draw appears twice"
            rows[key] = (batch["index"][i].numpy(), batch["label"][i].numpy(), batch["image"][i])
    return rows


@pytest.mark.parametrize("pipelines, replicas", [(2, 2), (1, 2), (2, 4)])
def test_sharded_pipelines_decode_disjoint_shares_of_the_same_batches(files, pipelines, replicas):
    paths = files["solid"]
    labels = np.arange(len(paths)) // 3
    _, _, _, whole = _train_setup(paths, labels, erase_prob=0.5)
    expected = list(whole)
    shares = []
    for pipeline_id in range(pipelines):
        context = tf.distribute.InputContext(pipelines, pipeline_id, replicas)
        _, _, _, dataset = _train_setup(paths, labels, erase_prob=0.5, input_context=context)
        per_pipeline = replicas // pipelines
        assert dataset.cardinality().numpy() == 3 * per_pipeline
        assert dataset.element_spec["image"].shape == (8 // replicas, H, W, 3)
        shares.append(list(dataset))
    for b, batch in enumerate(expected):  # step b: every pipeline's next replicas' batches
        per_pipeline = replicas // pipelines
        step = [s[b * per_pipeline + r] for s in shares for r in range(per_pipeline)]
        got, want = _by_key(step), _by_key([batch])
        assert got.keys() == want.keys()
        for key, (index, label, image) in want.items():
            assert got[key][0] == index and got[key][1] == label
            np.testing.assert_array_equal(got[key][2].numpy(), image.numpy())


def test_sharded_pipeline_refills_its_own_skipped_group(files, capfd):
    paths = list(files["solid"])
    paths[4] = files["truncated_jpeg"]
    labels = np.arange(len(paths)) // 2
    rows = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(2, pipeline_id, 2)
        _, _, _, dataset = _train_setup(paths, labels, input_context=context)
        batches = list(dataset)
        assert len(batches) == 3
        for batch in batches:
            groups = batch["label"].numpy().reshape(2, 2)
            assert np.all(groups == groups[:, :1])
        rows.append(_by_key(batches))
    assert not rows[0].keys() & rows[1].keys()  # no draw decoded by both pipelines
    every = {k: v for share in rows for k, v in share.items()}
    assert 4 not in {index for index, _, _ in every.values()}
    assert files["truncated_jpeg"] in capfd.readouterr().err


def test_eval_dataset_preserves_order_and_keeps_last_batch(files):
    paths = files["solid"][:7]
    batches = list(pipeline.make_eval_dataset(paths, H, W, batch_size=3))
    assert [b.shape[0] for b in batches] == [3, 3, 1]
    images = np.concatenate([b.numpy() for b in batches])
    assert images.dtype == np.float32 and images.shape == (7, H, W, 3)
    np.testing.assert_array_equal(solid_index(images), np.arange(7))
    colour = np.array([30, 225, 111], np.float32)  # file 3
    np.testing.assert_allclose(images[3], np.broadcast_to(colour, (H, W, 3)), atol=1e-4)


def test_train_keys_are_unique_per_draw_even_for_repeated_images(files):
    paths = files["solid"]
    labels = np.arange(len(paths))  # every image its own identity: each batch repeats them
    _, epoch, _, dataset = _train_setup(paths, labels)
    keys = []
    for e in (0, 1):
        epoch[0] = e
        for batch in dataset:
            index, key = batch["index"].numpy(), batch["key"].numpy()
            assert len(set(index)) < len(index)  # K copies of each image ...
            keys.append(key)
    keys = np.concatenate(keys)
    assert len(set(keys.tolist())) == keys.size  # ... and yet one key per draw, across epochs


def test_pipelines_run_without_the_autotuning_thread(files):
    """No tf.data autotuner: its thread can hold an iterator's teardown for up to a minute."""
    paths = files["solid"][:16]
    _, _, _, train = _train_setup(paths, np.arange(16) // 2)
    evaluation = pipeline.make_eval_dataset(paths, H, W, batch_size=4)
    for dataset in (train, evaluation):
        assert dataset.options().autotune.enabled is False
        assert dataset.options().deterministic is True
