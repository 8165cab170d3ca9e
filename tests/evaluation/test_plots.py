"""Pictures: training curves, CMC, the evaluate program's pictures; no matplotlib."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from absl import flags
from PIL import Image
from search_setup import make_run_dir

from maskpre_tf import evaluate
from maskpre_tf.data import datasets
from maskpre_tf.evaluation import plots
from maskpre_tf.search import render

PNG_HEADER = b"\x89PNG\r\n\x1a\n"
ROW_HEIGHT = render.CELL_HEIGHT + 4 * render.OUTLINE + render.CAPTION_HEIGHT
ROW_WIDTH = (render.CELL_WIDTH + 2 * render.OUTLINE) * (1 + plots.TOP_K)
ROW_WIDTH += render.GAP + 2 * render.OUTLINE


def epochs_file(run_dir) -> None:
    """A hand-written summary_epochs.json: 4 epochs, mAP at epochs 2 and 4 only."""
    epochs = [
        {"epoch": e, "num_clusters": c, "num_outliers": o, "eps": 0.5, "ari": 0.2, "loss": 4 - e}
        for e, c, o in ((1, 27, 41), (2, 30, 33), (3, 31, 30), (4, 33, 25))
    ]
    epochs[1].update(mAP=0.21, val_mAP=0.18)
    epochs[3].update(mAP=0.34, val_mAP=0.30)
    with open(os.path.join(run_dir, "summary_epochs.json"), "w") as f:
        json.dump({"epochs": epochs}, f)


def check_png(path, size: tuple[int, int] | None = None, min_bytes: int = 5000) -> None:
    """``path`` is a PNG (header and decoder agree) of ``size`` pixels and at least min_bytes."""
    with open(path, "rb") as f:
        assert f.read(8) == PNG_HEADER
    assert os.path.getsize(path) >= min_bytes
    with Image.open(path) as img:
        assert img.format == "PNG"
        if size is not None:
            assert img.size == size


def block_matplotlib(monkeypatch) -> None:
    """Make every ``import matplotlib...`` fail, as if the extra were not installed."""
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_training_curves_from_the_epochs_summary(tmp_path):
    epochs_file(tmp_path)
    path = plots.write_training_curves(str(tmp_path))
    assert path == str(tmp_path / plots.TRAINING_CURVES)
    check_png(path, (1000, 700), min_bytes=20_000)
    series = plots.read_epochs(str(tmp_path))
    assert plots.epoch_series(series, "mAP") == ([2, 4], [0.21, 0.34])
    assert plots.map_keys(series) == ["mAP", "val_mAP"]
    assert plots.write_training_curves(str(tmp_path / "nothing")) is None  # no epochs: no file


def test_cmc_of_two_result_sets_and_of_one(tmp_path):
    plain = np.linspace(0.6, 0.95, 50).astype(np.float32)
    reranked = np.minimum(plain + 0.05, 1.0)
    path = plots.write_cmc([plain, reranked], str(tmp_path / "cmc.png"), ["plain", "re-ranked"])
    check_png(path, (640, 480), min_bytes=10_000)
    one = plots.write_cmc(plain[:7], str(tmp_path / "one.png"), "plain")  # a tiny gallery
    check_png(one, (640, 480))
    with pytest.raises(ValueError, match="2 CMC curves but 1 labels"):
        plots.write_cmc([plain, reranked], str(tmp_path / "x.png"), ["plain"])


def test_without_matplotlib_a_note_and_no_picture(tmp_path, monkeypatch, capsys, synth_market):
    epochs_file(tmp_path)
    block_matplotlib(monkeypatch)
    assert plots.write_training_curves(str(tmp_path)) is None
    assert plots.write_cmc(np.ones(20), str(tmp_path / "cmc.png"), "plain") is None
    lines = capsys.readouterr().out.splitlines()
    assert lines == [plots.missing_note("training_curves.png"), plots.missing_note("cmc.png")]
    assert "pip install 'maskpre-tf[plots]'" in lines[0]
    assert not list(tmp_path.glob("*.png"))
    # The evaluation's ranked lists need no matplotlib: they are still drawn.
    data = datasets.load_dataset("market1501", synth_market)
    rng = np.random.default_rng(0)
    qf, gf = (rng.normal(size=(len(s), 8)).astype(np.float32) for s in (data.query, data.gallery))
    capsys.readouterr()  # the dataset's statistics
    out = tmp_path / "pictures"
    written = plots.write_evaluation_pictures(
        str(out), {"plain": np.ones(20)}, qf, gf, data.query, data.gallery
    )
    assert written == [str(out / plots.RANKED_PICTURE)]
    assert capsys.readouterr().out == plots.missing_note("cmc.png") + "\n"


def test_sampled_queries_are_evenly_spaced_scored_queries():
    rec = datasets.Record
    gallery = [rec("g0", 1, 0), rec("g1", 1, 1), rec("g2", 2, 0), rec("g3", 3, 1)]
    query = [rec(f"q{i}", pid, 0) for i, pid in enumerate([1, 2, 1, 3, 1, 1, 3, 1, 1, 1, 1])]
    # pid 2 is only under the query's camera: not scored; the other 10 are.
    assert plots.sample_queries(query, gallery, 4) == [0, 4, 7, 10]
    assert plots.sample_queries(query[:3], gallery, 8) == [0, 2]
    features = np.eye(4, dtype=np.float32)
    matches = plots.ranked_matches(features[0], features, query[0], gallery, top_k=2)
    assert [(p, c) for p, _, c in matches] == [("g1", True), ("g2", False)]  # g0: same camera


def evaluate_flags(*argv: str) -> flags.FlagValues:
    """evaluate's flags parsed from ``argv`` (a fresh FlagValues: the global flags untouched)."""
    values = flags.FlagValues()
    evaluate.define_flags(values)
    values(["evaluate", *argv])
    return values


def test_where_the_pictures_go(tmp_path):
    run = str(tmp_path / "run")
    assert evaluate.plots_folder(evaluate_flags(f"--run_dir={run}")) == ""  # no such run
    os.makedirs(run)
    assert evaluate.plots_folder(evaluate_flags(f"--run_dir={run}")) == f"{run}/evaluation"
    assert evaluate.plots_folder(evaluate_flags(f"--run_dir={run}", "--plots_dir=none")) == ""
    assert evaluate.plots_folder(evaluate_flags(f"--saved_model={run}")) == ""
    mine = str(tmp_path / "mine" / "pics")
    assert evaluate.plots_folder(evaluate_flags(f"--saved_model={run}", f"--plots_dir={mine}"))
    assert os.path.isdir(mine)
    assert "plots_dir" in evaluate.HELP.flag_names()


def test_evaluate_draws_cmc_and_ranked_queries_into_the_run(synth_market, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    run = make_run_dir(tmp_path / "run")
    results = evaluate.evaluate(evaluate_flags(f"--run_dir={run}", f"--data_dir={synth_market}"))
    assert set(results) == {"plain", "re-ranked"}
    folder = os.path.join(run, "evaluation")
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"pictures: {folder} (cmc.png, ranked_queries.png)"
    assert lines[-3].strip().startswith("plain: mAP") and "with re-ranking: mAP" in lines[-2]
    check_png(os.path.join(folder, "cmc.png"), (640, 480))
    ranked = os.path.join(folder, "ranked_queries.png")
    check_png(ranked, min_bytes=20_000)
    with Image.open(ranked) as img:
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.shape[1] == ROW_WIDTH and pixels.shape[0] == plots.SAMPLED_QUERIES * ROW_HEIGHT
    # Each row: the query's frame black, the matches' frames green (same identity) or red.
    first_match = render.OUTLINE + render.CELL_WIDTH + 2 * render.OUTLINE + render.GAP + 1
    frames = {tuple(pixels[row * ROW_HEIGHT + render.OUTLINE + 1, first_match]) for row in range(8)}
    assert frames <= {render.COLOURS[True], render.COLOURS[False]}
    query_frames = {
        tuple(pixels[r * ROW_HEIGHT + render.OUTLINE + 1, render.OUTLINE + 1]) for r in range(8)
    }
    assert query_frames == {render.QUERY_COLOUR}
