"""Tests of gallery search: ranking, cache, unreadable files, pictures, HTML, both model kinds."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from maskpre_tf import inference, runs, search
from maskpre_tf.config import TrainConfig
from maskpre_tf.errors import UserError
from maskpre_tf.models.maskpre import build_encoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Gallery files copied as queries (different identities, different cameras).
QUERY_PICKS = (0, 9, 21, 33)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A training run's output layout with a tiny seeded teacher (64x32 resnet_small)."""
    import keras

    keras.utils.set_random_seed(3)
    out = tmp_path_factory.mktemp("search_run")
    cfg = TrainConfig().replace(
        backbone="resnet_small", backbone_weights="none", height=64, width=32, output_dir=str(out)
    )
    teacher = build_encoder(cfg.model, (64, 32, 3), name="teacher")
    runs.write_config(cfg, str(out))
    teacher.save_weights(str(out / runs.TEACHER_WEIGHTS))
    return str(out)


@pytest.fixture(scope="module")
def embedder(run_dir):
    return inference.load_embedder(run_dir)


@pytest.fixture()
def gallery(synth_market, tmp_path):
    """(gallery dir with 2 bad files, query dir with copies of gallery files + 1 bad file)."""
    gallery_dir = tmp_path / "gallery"
    shutil.copytree(os.path.join(synth_market, "bounding_box_test"), gallery_dir)
    names = sorted(n for n in os.listdir(gallery_dir) if int(n.split("_")[0]) > 0)
    good = names[0]
    (gallery_dir / "0099_c1s1_000001_01.jpg").write_bytes(b"definitely not a JPEG")
    data = (gallery_dir / good).read_bytes()
    (gallery_dir / "0098_c1s1_000001_01.jpg").write_bytes(data[: len(data) // 2])
    query_dir = tmp_path / "query"
    query_dir.mkdir()
    for i in QUERY_PICKS:
        shutil.copy(gallery_dir / names[i], query_dir / names[i])
    (query_dir / "0097_c1s1_000001_01.png").write_bytes(b"")
    return str(gallery_dir), str(query_dir), [names[i] for i in QUERY_PICKS]


def counting(inner: inference.Embedder) -> tuple[inference.Embedder, list[int]]:
    """The same embedder, counting the images it embeds (to observe the cache)."""
    count = [0]

    def embed(files):
        count[0] += len(files)
        return inner.embed_bytes(files)

    return dataclasses.replace(inner, embed_bytes=embed), count


def test_labels():
    assert search.parse_label("/x/0002_c3s1_000451_03.jpg") == (2, 2)
    assert search.parse_label("/x/-1_c1s1_000001_00.jpg") == (-1, 0)
    assert search.parse_label("/x/person.jpg") is None
    assert search.is_match((2, 0), (2, 1)) is True
    assert search.is_match((2, 0), (3, 0)) is False
    assert search.is_match((2, 0), (0, 1)) is False  # distractor
    assert search.is_match(None, (2, 1)) is None


def test_search_finds_the_same_image_first(embedder, gallery, tmp_path, capsys):
    gallery_dir, query_dir, picks = gallery
    out = tmp_path / "out"
    report = search.run_search(embedder, gallery_dir, query_dir, str(out), top_k=5, batch_size=16)
    # Every readable query ranks its own copy in the gallery first.
    assert [os.path.basename(r["query"]) for r in report.rankings] == sorted(picks)
    for ranking in report.rankings:
        top = ranking["matches"][0]
        assert os.path.basename(top["path"]) == os.path.basename(ranking["query"])
        assert top["similarity"] > 0.999 and top["correct"] is True
        sims = [m["similarity"] for m in ranking["matches"]]
        assert len(sims) == 5 and sims == sorted(sims, reverse=True)
        for match in ranking["matches"]:
            q_pid = int(os.path.basename(ranking["query"]).split("_")[0])
            g_pid = int(os.path.basename(match["path"]).split("_")[0])
            assert match["correct"] == (g_pid == q_pid and g_pid > 0)
    # Unreadable files are reported and skipped, not fatal.
    skipped = {os.path.basename(p): why for p, why in report.skipped_gallery}
    assert skipped == {
        "0099_c1s1_000001_01.jpg": "not a JPEG or PNG file",
        "0098_c1s1_000001_01.jpg": "truncated JPEG (no end marker)",
    }
    assert [os.path.basename(p) for p, _ in report.skipped_query] == ["0097_c1s1_000001_01.png"]
    err = capsys.readouterr().err
    assert "skipped 2 unreadable gallery file(s)" in err
    assert "skipped 1 unreadable query file(s)" in err
    assert report.gallery_size == len(os.listdir(gallery_dir)) - 2 - 1  # minus bad, cache dir
    saved = json.loads((out / "rankings.json").read_text())
    assert saved["rankings"][0]["matches"][0]["path"] == report.rankings[0]["matches"][0]["path"]


def test_ranked_list_png_and_html(embedder, gallery, tmp_path):
    gallery_dir, query_dir, picks = gallery
    out = tmp_path / "out"
    report = search.run_search(embedder, gallery_dir, query_dir, str(out), top_k=3, verbose=False)
    ranking = report.rankings[0]
    png = out / ranking["picture"]
    with Image.open(png) as img:
        img.verify()
    with Image.open(png) as img:
        assert img.format == "PNG"
        pixels = np.asarray(img.convert("RGB"))
    frame_w = search.CELL_WIDTH + 2 * search.OUTLINE
    assert pixels.shape[1] == frame_w * 4 + search.GAP + 2 * search.OUTLINE
    # Query frame black, then one outline per match in its colour (top-left corner pixel).
    corners = [search.OUTLINE + i * frame_w + (search.GAP if i else 0) for i in range(4)]
    assert tuple(pixels[search.OUTLINE + 1, corners[0] + 1]) == (0, 0, 0)
    for corner, match in zip(corners[1:], ranking["matches"], strict=True):
        assert tuple(pixels[search.OUTLINE + 1, corner + 1]) == search.COLOURS[match["correct"]]
    # The thumbnail inside the first match frame is the query's own image (same pixels).
    inner = pixels[2 * search.OUTLINE : 2 * search.OUTLINE + search.CELL_HEIGHT]
    query_cell = inner[:, corners[0] + search.OUTLINE : corners[0] + search.OUTLINE + 64]
    match_cell = inner[:, corners[1] + search.OUTLINE : corners[1] + search.OUTLINE + 64]
    assert np.array_equal(query_cell, match_cell) and query_cell.std() > 5
    page = (out / "index.html").read_text()
    for r in report.rankings:
        assert f"<img src='{r['picture']}'" in page
        assert (out / r["picture"]).is_file()
    assert "top-1 correct 100.0%" in page


def test_gallery_cache_reused_and_invalidated(embedder, gallery, tmp_path):
    gallery_dir, query_dir, _ = gallery
    model, count = counting(embedder)
    first = search.run_search(model, gallery_dir, query_dir, str(tmp_path / "a"), verbose=False)
    embedded_first = count[0]
    assert not first.cache_hit and os.path.isdir(os.path.join(gallery_dir, ".maskpre_cache"))
    count[0] = 0
    second = search.run_search(model, gallery_dir, query_dir, str(tmp_path / "b"), verbose=False)
    # Only the queries are embedded the second time.
    assert second.cache_hit and count[0] == len(os.listdir(query_dir)) - 1
    assert embedded_first > count[0]
    assert second.rankings[0]["matches"] == first.rankings[0]["matches"]
    assert second.skipped_gallery == first.skipped_gallery
    # A new gallery file changes the key: the gallery is embedded again and the file is found.
    src = os.path.join(query_dir, sorted(os.listdir(query_dir))[1])
    shutil.copy(src, os.path.join(gallery_dir, "0001_c9s9_999999_99.jpg"))
    count[0] = 0
    third = search.run_search(model, gallery_dir, query_dir, str(tmp_path / "c"), verbose=False)
    assert not third.cache_hit and third.gallery_size == first.gallery_size + 1
    assert count[0] > embedded_first


def test_query_inside_gallery_is_not_its_own_match(embedder, gallery, tmp_path):
    gallery_dir, _, picks = gallery
    query = os.path.join(gallery_dir, picks[0])
    report = search.run_search(
        embedder, gallery_dir, query, str(tmp_path / "o"), top_k=4, verbose=False
    )
    paths = [m["path"] for m in report.rankings[0]["matches"]]
    assert len(paths) == 4 and query not in paths


def test_saved_model_and_run_dir_give_the_same_ranking(run_dir, embedder, gallery, tmp_path):
    from maskpre_tf.export import export_run

    base = tmp_path / "models" / "maskpre"
    export_run(run_dir, str(base), warmup_batch_sizes=())
    export_run(run_dir, str(base), warmup_batch_sizes=())
    assert inference.find_saved_model(str(base)) == str(base / "2")
    exported = inference.load_embedder(str(base))
    assert (exported.height, exported.width) == (64, 32)
    assert exported.identity != embedder.identity
    gallery_dir, query_dir, _ = gallery
    files = [os.path.join(query_dir, n) for n in sorted(os.listdir(query_dir))]
    a, kept_a, _ = search.embed_files(embedder, files)
    b, kept_b, _ = search.embed_files(exported, files)
    assert kept_a == kept_b and len(kept_a) == len(files) - 1
    assert np.abs(a - b).max() <= 1e-4


def test_user_errors(embedder, gallery, tmp_path):
    gallery_dir, query_dir, _ = gallery
    with pytest.raises(UserError, match="neither a training run directory"):
        inference.load_embedder(str(tmp_path))
    with pytest.raises(UserError, match="--query=.*no such file"):
        search.run_search(embedder, gallery_dir, str(tmp_path / "nope"), str(tmp_path / "o"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="--gallery=.*no .jpg"):
        search.run_search(embedder, str(empty), query_dir, str(tmp_path / "o"))
    with pytest.raises(UserError, match="--top_k=0"):
        search.run_search(embedder, gallery_dir, query_dir, str(tmp_path / "o"), top_k=0)


def test_cli_exit_code_2_on_user_error(gallery, tmp_path):
    gallery_dir, query_dir, _ = gallery
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "maskpre_tf.search",
            f"--model={tmp_path / 'no_model'}",
            f"--gallery={gallery_dir}",
            f"--query={query_dir}",
            f"--output_dir={tmp_path / 'out'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert f"error: --model={tmp_path / 'no_model'}: neither" in proc.stderr
    assert "Traceback" not in proc.stderr
