"""Tests of the embedding projector files: consistent with each other and read by TensorBoard.

TensorBoard's own projector plugin is loaded on the written folder and its HTTP routes are called
in-process (werkzeug's test client): the same answers the "Projector" tab would get.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins import projector

from maskpre_tf.data.datasets.market1501 import read_market1501
from maskpre_tf.data.datasets.records import Record
from maskpre_tf.errors import UserError
from maskpre_tf.training import projector as proj


@pytest.fixture(scope="module")
def market(synth_market):
    return read_market1501(synth_market, verbose=False)


def features_of(records, dim: int = 8, seed: int = 0) -> np.ndarray:
    """float32 [len(records), dim]: one random centre per identity plus noise."""
    rng = np.random.default_rng(seed)
    centres = {}
    rows = []
    for r in records:
        centre = centres.setdefault(r.pid, rng.normal(size=dim))
        rows.append(centre + 0.1 * rng.normal(size=dim))
    return np.asarray(rows, np.float32)


def read_config(log_dir: str):
    config = projector.ProjectorConfig()
    with open(os.path.join(log_dir, proj.CONFIG_FILE)) as f:
        text_format.Parse(f.read(), config)
    return config


def served_by_tensorboard(log_dir: str) -> dict[str, bytes]:
    """The projector plugin's answers for the run "." of ``log_dir``: route → body."""
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    plugin = ProjectorPlugin(base_plugin.TBContext(logdir=log_dir, data_provider=None))
    apps = plugin.get_plugin_apps()
    out = {}
    for route in ("/info", "/tensor", "/metadata", "/sprite_image"):
        query = "?run=." if route == "/info" else f"?run=.&name={proj.TENSOR_NAME}"
        response = Client(apps[route], Response).get(route + query)
        assert response.status_code == 200, (route, response.data[:300])
        out[route] = response.data
    return out


def test_eval_projector_files_are_consistent_and_served(market, tmp_path):
    query, gallery = market.query, market.gallery
    qf, gf = features_of(query, seed=1), features_of(gallery, seed=2)
    log_dir = str(tmp_path / "logs")
    files = proj.write_eval_projector(log_dir, qf, gf, query, gallery)
    n = files.num_points
    labelled = sum(r.pid > 0 for r in query) + sum(r.pid in {q.pid for q in query} for r in gallery)
    assert n == labelled  # every image of every query identity (the tiny set fits)

    # The checkpoint holds the chosen rows, query first.
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(log_dir))
    np.testing.assert_array_equal(
        reader.get_tensor(proj.TENSOR_NAME), np.concatenate([qf, gf])[files.indices]
    )
    # One metadata row per point after the header, labelled "q/g pid camid".
    with open(files.metadata) as f:
        lines = f.read().splitlines()
    assert lines[0].split("\t") == ["label", "split", "pid", "camid"] and len(lines) == n + 1
    everything = list(query) + list(gallery)
    for line, row in zip(lines[1:], files.indices, strict=True):
        label, split, pid, camid = line.split("\t")
        record = everything[row]
        side = "q" if row < len(query) else "g"
        assert label == f"{side} {record.pid} {record.camid}"
        assert (split[0], int(pid), int(camid)) == (side, record.pid, record.camid)
    # The sprite: a grid of 64x32 thumbnails with a cell for every point.
    rows, columns = files.sprite_grid
    with Image.open(files.sprite) as sprite:
        assert sprite.size == (columns * 32, rows * 64)
        assert rows * columns >= n > (rows - 1) * columns
        first = np.asarray(sprite.crop((0, 0, 32, 64)), np.float32)
    with Image.open(everything[files.indices[0]].path) as img:
        expected = np.asarray(img.convert("RGB").resize((32, 64), Image.BILINEAR), np.float32)
    assert np.abs(first - expected).max() <= 1
    assert files.unreadable == ()
    config = read_config(log_dir)
    (embedding,) = config.embeddings
    assert embedding.tensor_name == proj.TENSOR_NAME
    assert embedding.metadata_path == proj.METADATA_FILE and not os.path.isabs(
        embedding.sprite.image_path
    )
    assert list(embedding.sprite.single_image_dim) == [32, 64]  # width, height

    served = served_by_tensorboard(log_dir)
    assert len(served["/tensor"]) == n * qf.shape[1] * 4  # float32 [n, D]
    assert served["/metadata"].decode().splitlines() == lines
    with open(files.sprite, "rb") as f:
        assert served["/sprite_image"] == f.read()
    assert not [name for name in os.listdir(log_dir) if ".tmp" in name]


def test_projector_subsets_single_column_and_rewrite(tmp_path, market):
    records = market.gallery
    feats = features_of(records)
    labels = [os.path.basename(r.path) for r in records]
    log_dir = str(tmp_path / "logs")
    first = proj.write_projector(log_dir, feats, labels, max_points=10, seed=3)
    assert first.num_points == 10 and first.sprite is None
    assert np.all(np.diff(first.indices) > 0)
    with open(first.metadata) as f:  # one column: no header row
        assert f.read().splitlines() == [labels[i] for i in first.indices]
    # Writing again replaces the projection (one checkpoint kept).
    second = proj.write_projector(log_dir, feats[:5], image_paths=[r.path for r in records[:5]])
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(log_dir))
    assert reader.get_variable_to_shape_map()[proj.TENSOR_NAME] == [5, feats.shape[1]]
    assert not read_config(log_dir).embeddings[0].metadata_path
    assert second.sprite_grid == (2, 4)  # near-square: 4 x 32 by 2 x 64 pixels


def test_unreadable_crops_are_grey_and_bad_arguments_fail(tmp_path):
    feats = np.eye(3, dtype=np.float32)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    missing = str(tmp_path / "missing.png")
    paths = [str(bad), missing, str(bad)]
    files = proj.write_projector(str(tmp_path / "logs"), feats, image_paths=paths)
    assert files.unreadable == (str(bad), missing, str(bad))
    with Image.open(files.sprite) as sprite:
        assert set(sprite.getdata()) == {(128, 128, 128)}
    with pytest.raises(ValueError, match="labels has 2 entries for 3"):
        proj.write_projector(str(tmp_path / "x"), feats, labels=["a", "b"])
    with pytest.raises(ValueError, match="finite"):
        proj.write_projector(str(tmp_path / "x"), np.full((2, 2), np.nan))
    with pytest.raises(UserError, match="lower max_points or the thumbnail size"):
        proj.write_projector(str(tmp_path / "x"), feats, image_paths=paths, thumbnail=(8192, 4096))
    assert not (tmp_path / "x").exists()
    junk = [Record("a.jpg", -1, 0), Record("b.jpg", 0, 1)]
    with pytest.raises(UserError, match="no query identity fits"):
        proj.write_eval_projector(str(tmp_path / "x"), feats[:2], feats[:2], junk, junk)
