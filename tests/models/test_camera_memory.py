"""Tests for maskpre_tf.models.memory's camera-aware part: camera_proxies and CameraMemory.

The camera losses are checked against a direct NumPy transcription of CAP's formulas (Wang et
al., AAAI 2021); the cluster memory and the row updates are tested in test_memory.py.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from memory_reference import normalize, step, unit  # noqa: E402

from maskpre_tf.models.memory import CameraMemory, camera_proxies  # noqa: E402

# 7 images: clusters 0, 0, 0, 1, 1, 2 and an outlier; camera ids need not be contiguous.
LABELS = np.array([0, 0, 0, 1, 1, 2, -1])
CAMIDS = np.array([5, 2, 2, 5, 7, 5, 2])
# Proxies by (cluster, camera): (0, 2) = 0, (0, 5) = 1, (1, 5) = 2, (1, 7) = 3, (2, 5) = 4.
PROXY_OF = [1, 0, 0, 2, 3, 4, -1]


def test_camera_proxies_number_the_cluster_camera_pairs():
    proxy_of, clusters, cameras = camera_proxies(LABELS, CAMIDS)
    np.testing.assert_array_equal(proxy_of, PROXY_OF)
    np.testing.assert_array_equal(clusters, [0, 0, 1, 1, 2])
    np.testing.assert_array_equal(cameras, [2, 5, 5, 7, 5])
    proxy_of, clusters, cameras = camera_proxies([-1, -1], [0, 1])
    np.testing.assert_array_equal(proxy_of, [-1, -1])
    assert len(clusters) == 0 and len(cameras) == 0


def _camera_memory(features=None, capacity=8):
    if features is None:
        features = np.array(
            [
                unit(10.0),
                unit(80.0),
                unit(100.0),
                unit(200.0),
                unit(250.0),
                unit(300.0),
                unit(45.0),
            ],
            np.float32,
        )
    memory = CameraMemory(capacity=capacity, dim=features.shape[1], num_train=len(LABELS))
    memory.reset(features, LABELS, CAMIDS)
    return memory


def test_camera_memory_reset_holds_one_centroid_per_cluster_and_camera():
    memory = _camera_memory()
    assert int(memory.num_active) == 5
    table = memory.table.numpy()
    # (0, 2): images at 80 and 100 degrees -> 90; every other pair has one image
    np.testing.assert_allclose(table[0], unit(90.0), atol=1e-6)
    for proxy, angle in ((1, 10.0), (2, 200.0), (3, 250.0), (4, 300.0)):
        np.testing.assert_allclose(table[proxy], unit(angle), atol=1e-6)
    assert not table[5:].any()  # the outlier (45 degrees) is in no proxy
    np.testing.assert_array_equal(memory.proxy_cluster.numpy(), [0, 0, 1, 1, 2, -1, -1, -1])
    np.testing.assert_array_equal(memory.proxy_camera.numpy(), [2, 5, 5, 7, 5, -1, -1, -1])
    np.testing.assert_array_equal(memory.sample_proxy.numpy(), PROXY_OF)


def _cap_losses(features, index, table, temperature, hard_negatives):
    """CAP's intra- and inter-camera losses, straight from their formulas (NumPy, float64)."""
    _, clusters, cameras = camera_proxies(LABELS, CAMIDS)
    proxy_of = np.asarray(PROXY_OF)[index]
    scores = normalize(features) @ np.asarray(table, np.float64)[: len(clusters)].T / temperature
    intra, inter = np.zeros(len(index)), np.zeros(len(index))
    for i, own in enumerate(proxy_of):
        if own < 0:
            continue
        s = scores[i]
        same_camera = np.flatnonzero(cameras == cameras[own])
        intra[i] = -(s[own] - np.log(np.exp(s[same_camera]).sum()))
        positives = np.flatnonzero(clusters == clusters[own])
        others = np.flatnonzero(clusters != clusters[own])
        hardest = others[np.argsort(-s[others])[:hard_negatives]]
        norm = np.exp(s[positives]).sum() + np.exp(s[hardest]).sum()
        inter[i] = np.mean([-np.log(np.exp(s[p]) / norm) for p in positives])
    return intra, inter


@pytest.mark.parametrize("hard_negatives", [1, 2, 50])
def test_camera_memory_losses_match_cap_formulas(hard_negatives):
    rng = np.random.default_rng(hard_negatives)
    memory = _camera_memory(rng.normal(size=(7, 4)).astype(np.float32))
    index = np.array([0, 6, 3, 1, 4, 5, 2, 6])  # every image once, the outlier twice
    features = rng.normal(size=(len(index), 4)).astype(np.float32)
    intra, inter = memory.losses(tf.constant(features), tf.constant(index), 0.5, hard_negatives)
    expected_intra, expected_inter = _cap_losses(
        features, index, memory.table.numpy(), 0.5, hard_negatives
    )
    np.testing.assert_allclose(intra.numpy(), expected_intra, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inter.numpy(), expected_inter, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(intra.numpy()[[1, 7]], 0.0)  # the outlier
    np.testing.assert_array_equal(inter.numpy()[[1, 7]], 0.0)
    assert intra.dtype == tf.float32 and intra.shape == (len(index),)


def test_camera_memory_losses_hand_values():
    memory = _camera_memory()
    # Image 3 (cluster 1, camera 5) at 200 degrees, scored with temperature 1 against the
    # proxies at 90, 10, 200, 250 and 300 degrees.
    feature = tf.constant([unit(200.0)])
    intra, inter = memory.losses(feature, tf.constant([3]), 1.0, 1)
    s = np.cos(np.radians([110.0, 190.0, 0.0, 50.0, 100.0]))
    # intra: softmax over the camera-5 proxies 1, 2, 4, at its own proxy 2
    expected_intra = -s[2] + np.log(np.exp(s[[1, 2, 4]]).sum())
    # inter: positives 2 and 3, the hardest other-cluster proxy is 4 (cos 100 > cos 110, cos 190)
    log_norm = np.log(np.exp(s[[2, 3, 4]]).sum())
    expected_inter = np.mean([log_norm - s[p] for p in (2, 3)])
    np.testing.assert_allclose(intra.numpy(), [expected_intra], rtol=1e-5)
    np.testing.assert_allclose(inter.numpy(), [expected_inter], rtol=1e-5)
    # Image 4 (cluster 1, camera 7) is alone in camera 7: its intra-camera softmax is certain.
    intra, _ = memory.losses(tf.constant([unit(123.0)]), tf.constant([4]), 0.07, 50)
    np.testing.assert_allclose(intra.numpy(), [0.0], atol=1e-6)


def test_camera_memory_inter_loss_without_other_clusters_spreads_over_positives():
    labels, camids = np.array([0, 0, 0]), np.array([1, 2, 1])
    memory = CameraMemory(capacity=3, dim=2, num_train=3)
    memory.reset(np.array([unit(0.0), unit(90.0), unit(30.0)], np.float32), labels, camids)
    # Proxies: (cluster 0, camera 1) at 15 degrees, (cluster 0, camera 2) at 90 degrees.
    intra, inter = memory.losses(tf.constant([unit(45.0)] * 3), tf.constant([0, 1, 2]), 0.1, 50)
    s = np.cos(np.radians([30.0, 45.0])) / 0.1  # no negatives: a softmax over the 2 positives
    expected = np.log(np.exp(s).sum()) - s.mean()
    np.testing.assert_allclose(inter.numpy(), expected, rtol=1e-5)
    assert np.all(np.isfinite(intra.numpy()))


def test_camera_memory_losses_give_gradients_to_features_only():
    memory = _camera_memory()
    features = tf.Variable([unit(200.0), unit(20.0)])
    with tf.GradientTape() as tape:
        tape.watch(memory.table)
        intra, inter = memory.losses(features, tf.constant([3, 0]), 0.07, 50)
        total = tf.reduce_sum(intra + inter)
    grad_features, grad_table = tape.gradient(total, [features, memory.table])
    assert grad_table is None
    assert np.all(np.isfinite(grad_features.numpy())) and np.abs(grad_features.numpy()).sum() > 0


def test_camera_memory_update_steps_each_sample_proxy_in_order():
    memory = _camera_memory()
    table0 = memory.table.numpy()
    features = np.array([unit(0.0), unit(30.0), unit(60.0), unit(5.0)], np.float32)
    index = tf.constant([1, 6, 2, 3])  # proxies 0, none (outlier), 0, 2
    memory.update(tf.constant(features), index, momentum=0.5)
    expected = table0.astype(np.float64)
    expected[0] = step(step(table0[0], features[0], 0.5), features[2], 0.5)
    expected[2] = step(table0[2], features[3], 0.5)
    np.testing.assert_allclose(memory.table.numpy(), expected, rtol=1e-5, atol=1e-6)
    # proxy 0 at 90 degrees: -> 45 (with 0 degrees) -> 52.5 (with 60 degrees)
    np.testing.assert_allclose(memory.table.numpy()[0], unit(52.5), atol=1e-6)
