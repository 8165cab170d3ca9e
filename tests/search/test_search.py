"""Tests of the whole gallery search: ranking, cache, unreadable files, both model kinds, CLI.

The pictures and the HTML page are tested in test_search_render.py, labels in
test_search_files.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from search_setup import ROOT, counting, make_gallery, make_run_dir

from maskpre_tf import inference, search
from maskpre_tf.errors import UserError
from maskpre_tf.search import cache


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run_dir(tmp_path_factory.mktemp("search_run"))


@pytest.fixture(scope="module")
def embedder(run_dir):
    return inference.load_embedder(run_dir)


@pytest.fixture()
def gallery(synth_market, tmp_path):
    """(gallery dir, query dir, picked names): see :func:`search_setup.make_gallery`."""
    return make_gallery(synth_market, tmp_path)


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


def test_damaged_cache_entry_is_rebuilt(embedder, gallery, tmp_path):
    gallery_dir, _, _ = gallery
    model, count = counting(embedder)
    cache_dir = str(tmp_path / "cache")
    first = search.build_gallery_index(model, gallery_dir, cache_dir)
    assert not first.cache_hit and os.path.isfile(first.cache_path + ".json")
    embedded = count[0]
    with open(first.cache_path + ".json", "w") as f:
        f.write("{not json")
    count[0] = 0
    second = search.build_gallery_index(model, gallery_dir, cache_dir)
    assert not second.cache_hit and count[0] == embedded
    assert second.paths == first.paths and second.skipped == first.skipped
    # The rebuilt entry is complete again and read back for the same key.
    key = cache.cache_key(model.identity, gallery_dir, search.list_images(gallery_dir))
    cached = cache.read_entry(second.cache_path, key, gallery_dir)
    assert cached is not None and cached[1] == first.paths
    assert cache.read_entry(second.cache_path, "another key", gallery_dir) is None


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
            f"--run_dir={tmp_path / 'no_model'}",
            f"--gallery={gallery_dir}",
            f"--query={query_dir}",
            f"--results_dir={tmp_path / 'out'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert f"error: --run_dir={tmp_path / 'no_model'}: neither" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_two_searches_writing_one_cache_at_once_both_finish_and_leave_it_whole(
    run_dir, gallery, tmp_path
):
    gallery_dir, query_dir, _ = gallery
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    argv = [sys.executable, "-m", "maskpre_tf.search", f"--run_dir={run_dir}"]
    argv += [f"--gallery={gallery_dir}", f"--query={query_dir}"]
    procs = [
        subprocess.Popen(
            [*argv, f"--results_dir={tmp_path / name}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    cache_dir = os.path.join(gallery_dir, cache.CACHE_DIRNAME)
    entries = [n for n in os.listdir(cache_dir) if n.endswith(".json")]
    assert len(entries) == 1 and not [n for n in os.listdir(cache_dir) if ".tmp" in n]
    with open(os.path.join(cache_dir, entries[0])) as f:
        key = json.load(f)["key"]
    prefix = os.path.join(cache_dir, entries[0][: -len(".json")])
    assert cache.read_entry(prefix, key, gallery_dir) is not None
