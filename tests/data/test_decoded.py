"""Crops decoded once: equal to the evaluation pipeline's, and kept by the clustering step."""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from maskpre_tf.config import ClusteringConfig, TrainConfig  # noqa: E402
from maskpre_tf.data.datasets import load_dataset  # noqa: E402
from maskpre_tf.data.decoded import decode_images, decoded_mib  # noqa: E402
from maskpre_tf.data.pipeline import make_eval_dataset  # noqa: E402
from maskpre_tf.errors import UserError  # noqa: E402
from maskpre_tf.evaluation.extract import extract_features  # noqa: E402
from maskpre_tf.training.clustering_callback import ClusteringCallback  # noqa: E402
from maskpre_tf.training.distribute import WorkerInfo  # noqa: E402

NATIVE = (128, 64)  # the generated crops' own size


def _paths(root: str, count: int = 12) -> list[str]:
    return [r.path for r in load_dataset("market1501", root, verbose=False).train[:count]]


def _pipeline(paths: list[str], height: int, width: int) -> np.ndarray:
    return np.concatenate([b.numpy() for b in make_eval_dataset(paths, height, width, 5)])


def _embed(pixels: tf.Tensor) -> tf.Tensor:
    """A fixed projection of the pixels: any change of a pixel changes the embedding."""
    flat = tf.reshape(pixels, [tf.shape(pixels)[0], -1])
    weights = tf.random.stateless_normal([flat.shape[1], 16], seed=[1, 2])
    return flat @ weights


def test_decoded_crops_equal_the_pipelines_at_their_own_size_and_round_when_resized(
    synth_market,
):
    paths = _paths(synth_market)
    native = decode_images(paths, *NATIVE, batch_size=5)
    assert native.dtype == np.uint8 and native.shape == (len(paths), *NATIVE, 3)
    np.testing.assert_array_equal(native, _pipeline(paths, *NATIVE))
    resized = decode_images(paths, 40, 20, batch_size=5).astype(np.float32)
    gap = np.abs(resized - _pipeline(paths, 40, 20))
    assert gap.max() <= 0.5 and gap.mean() > 0  # rounded, not truncated or left as is
    assert decoded_mib(12_936, 128, 64) == pytest.approx(303.2, abs=0.1)


def test_features_from_decoded_crops_equal_those_from_the_files(synth_market):
    paths = _paths(synth_market)
    from_files = extract_features(_embed, paths, *NATIVE, batch_size=5)
    from_memory = extract_features(_embed, decode_images(paths, *NATIVE), *NATIVE, batch_size=5)
    assert from_files.shape == (len(paths), 16)
    np.testing.assert_allclose(from_memory, from_files, atol=1e-6)


def _callback(root: str, cache_mib: int, lines: list[str]) -> ClusteringCallback:
    train = load_dataset("market1501", root, verbose=False).train
    cfg = ClusteringConfig(image_cache_mib=cache_mib)
    return ClusteringCallback(None, train, cfg, NATIVE, 1, _embed, log=lines.append)


@pytest.mark.parametrize("cache_mib", [2048, 0, 1])
def test_clustering_decodes_the_training_crops_once_when_they_fit(
    synth_market, tmp_path, cache_mib
):
    root = str(tmp_path / "set")
    shutil.copytree(synth_market, root)
    lines: list[str] = []
    callback = _callback(root, cache_mib, lines)
    strategy, worker = tf.distribute.get_strategy(), WorkerInfo()
    first = callback.features(strategy, worker)
    shutil.rmtree(os.path.join(root, "bounding_box_train"))  # the files are gone
    if cache_mib == 2048:  # kept in memory: the next epoch needs no file
        np.testing.assert_array_equal(callback.features(strategy, worker), first)
        assert any("decoded once" in line for line in lines)
    else:  # decoded every epoch: the next epoch reads the files again
        with pytest.raises((tf.errors.NotFoundError, UserError)):
            callback.features(strategy, worker)
        assert any("--image_cache_mib" in line for line in lines) == (cache_mib == 1)


def test_a_negative_image_cache_is_refused():
    with pytest.raises(UserError, match=r"--image_cache_mib=-1: expected >= 0"):
        TrainConfig().replace(image_cache_mib=-1).validate()
