"""Tests of maskpre_tf.data.sampler: the P×K sampler, its camera preference and singleton cap."""

from __future__ import annotations

import numpy as np
import pytest

from maskpre_tf.data.sampler import PKSampler
from maskpre_tf.errors import UserError


def _labels_and_cams():
    labels = np.repeat(np.arange(8), 6)  # 8 clusters × 6 images
    cams = np.tile(np.arange(6), 8)  # each cluster spans 6 cameras
    labels[[0, 7, 13]] = -1  # outliers
    labels[46:48] = 8  # a small cluster of 2 images
    return labels, cams


def test_sampler_batch_structure_and_outliers():
    labels, cams = _labels_and_cams()
    sampler = PKSampler(labels, cams, batch_size=12, num_instances=4, seed=3)
    assert sampler.num_identities == 9 and sampler.num_pids_per_batch == 3
    indices = sampler.epoch_indices(0, 30)
    assert indices.dtype == np.int64 and indices.shape == (30 * 12,)
    groups = labels[indices].reshape(30, 3, 4)
    assert np.all(groups >= 0)
    assert np.all(groups == groups[:, :, :1])  # K consecutive instances share a label
    for batch in groups[:, :, 0]:
        assert len(set(batch)) == 3  # P distinct identities
    sequence = groups[:, :, 0].reshape(-1)
    # Without replacement: every identity once per cycle of 9.
    assert sorted(sequence[:9]) == list(range(9))
    assert sorted(sequence[9:18]) == list(range(9))


def test_sampler_prefers_distinct_cameras_and_fills_small_clusters():
    labels, cams = _labels_and_cams()
    sampler = PKSampler(labels, cams, batch_size=12, num_instances=4, seed=5)
    groups = sampler.epoch_indices(2, 30).reshape(-1, 4)
    for group in groups:
        label = labels[group[0]]
        if label == 8:  # 2 images: both used, then drawn again with replacement
            assert set(group) == {46, 47}
        else:  # ≥ 4 cameras available → 4 distinct cameras
            assert len(set(cams[group])) == 4 and len(set(group)) == 4
    # Two cameras, K = 4: round-robin gives two images from each camera.
    two_cam = PKSampler(
        np.repeat(np.arange(3), 8), np.tile([0, 0, 0, 0, 0, 0, 1, 1], 3), 8, 4, seed=0
    )
    for group in two_cam.epoch_indices(0, 10).reshape(-1, 4):
        cam_of = np.tile([0, 0, 0, 0, 0, 0, 1, 1], 3)[group]
        assert sorted(cam_of) == [0, 0, 1, 1]


def test_sampler_determinism_and_redriving():
    labels, cams = _labels_and_cams()
    a = PKSampler(labels, cams, 12, 4, seed=1)
    b = PKSampler(labels, cams, 12, 4, seed=1)
    np.testing.assert_array_equal(a.epoch_indices(4, 10), b.epoch_indices(4, 10))
    # A longer epoch extends a shorter one (the pipeline's spare chunks rely on this).
    np.testing.assert_array_equal(a.epoch_indices(4, 25)[: 10 * 12], a.epoch_indices(4, 10))
    assert not np.array_equal(a.epoch_indices(4, 10), a.epoch_indices(5, 10))
    c = PKSampler(labels, cams, 12, 4, seed=2)
    assert not np.array_equal(a.epoch_indices(4, 10), c.epoch_indices(4, 10))
    before = a.epoch_indices(4, 10)
    new_labels = np.arange(labels.size) % 5  # 5 new clusters, no outliers
    a.set_labels(new_labels)
    after = a.epoch_indices(4, 10)
    assert a.num_identities == 5 and not np.array_equal(before, after)
    groups = new_labels[after].reshape(-1, 4)
    assert np.all(groups == groups[:, :1])
    np.testing.assert_array_equal(a.labels, new_labels)


def test_sampler_errors():
    labels, cams = _labels_and_cams()
    with pytest.raises(UserError, match="clustering produced 2 clusters but the batch needs 3"):
        PKSampler(np.where(labels < 2, labels, -1), cams, 12, 4, seed=0)
    sampler = PKSampler(labels, cams, 12, 4, seed=0)
    with pytest.raises(UserError, match="--eps"):
        sampler.set_labels(np.full_like(labels, -1))
    assert sampler.num_identities == 9  # a failed update keeps the old labels
    with pytest.raises(UserError, match="multiple"):
        PKSampler(labels, cams, 10, 4, seed=0)
    with pytest.raises(UserError, match="one entry per training image"):
        sampler.set_labels(labels[:-1])


def test_singletons_do_not_flood_the_batches():
    # 10 real clusters of 6 images and 500 single-image identities (outliers as instances).
    labels = np.concatenate([np.repeat(np.arange(10), 6), 10 + np.arange(500)])
    cams = np.arange(labels.size) % 3
    sampler = PKSampler(labels, cams, batch_size=32, num_instances=4, seed=0)  # P = 8
    groups = labels[sampler.epoch_indices(0, 50)].reshape(50, 8, 4)
    singletons = (groups[:, :, 0] >= 10).sum(axis=1)
    assert singletons.max() <= 2  # at most a quarter of P
    assert singletons.min() == 2  # the share is used, so singletons are still trained on
    for batch in groups:
        assert len(set(batch[:, 0])) == 8  # distinct identities
    # Too few real clusters: singletons fill the batch rather than fail.
    few = np.concatenate([np.repeat(np.arange(3), 6), 3 + np.arange(40)])
    sampler = PKSampler(few, np.arange(few.size) % 2, batch_size=32, num_instances=4, seed=0)
    groups = few[sampler.epoch_indices(0, 5)].reshape(5, 8, 4)
    assert np.all((groups[:, :, 0] >= 3).sum(axis=1) == 5)
