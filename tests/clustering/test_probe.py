"""The eps probe: its table on known clusters, each way of giving it features, and bad input."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from maskpre_tf import runs
from maskpre_tf.clustering.probe import eps_table, format_table, run_features
from maskpre_tf.config import TrainConfig
from maskpre_tf.data import datasets
from maskpre_tf.evaluation.extract import extract_features
from maskpre_tf.models.encoder import build_encoder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPE = (64, 32, 3)


def blobs(ids: int = 12, per_id: int = 20, dim: int = 32, spread: float = 0.15, seed: int = 0):
    """(features [ids * per_id, dim], pids): tight, well separated clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim))
    pids = np.repeat(np.arange(ids), per_id)
    x = centres[pids] + spread * rng.normal(size=(len(pids), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), pids


def probe(*flags: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", "maskpre_tf.clustering.probe", *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_table_finds_the_true_clusters_and_auto_picks_a_good_eps():
    features, pids = blobs()
    rows, auto = eps_table(features, [0.3, 0.5, 0.7], k1=10, k2=3, min_samples=4, pids=pids)
    assert [r["eps"] for r in rows] == [0.3, 0.5, 0.7]
    best = max(rows, key=lambda r: r["ari"])
    assert best["num_clusters"] == 12 and best["ari"] > 0.95
    # Outliers can only fall as eps grows (DBSCAN's neighbourhoods grow).
    outliers = [r["num_outliers"] for r in rows]
    assert outliers == sorted(outliers, reverse=True)
    assert set(auto) == {"auto", "auto_linked"}
    linked = auto["auto_linked"]
    at_linked, _ = eps_table(features, [linked], k1=10, k2=3, min_samples=4, pids=pids)
    assert at_linked[0]["ari"] > 0.95 and 0.5 <= linked <= 0.8
    text = format_table(rows, auto)
    assert text.splitlines()[0].split()[:4] == ["eps", "clusters", "outliers", "largest"]
    assert text.splitlines()[-2:] == [
        f"--eps=auto chooses {auto['auto']:.3f}",
        f"--eps=auto_linked chooses {linked:.3f}",
    ]


def test_features_file_prints_one_row_per_eps_with_scores(tmp_path):
    features, pids = blobs()
    path = str(tmp_path / "f.npz")
    np.savez(path, features=features, pids=pids)
    proc = probe(f"--features={path}", "--eps=0.4,0.6", "--k1=10", "--k2=3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("240 samples, k1 10, k2 3, min_samples 4")
    assert "ARI" in lines[1] and [line.split()[0] for line in lines[2:4]] == ["0.40", "0.60"]
    assert lines[-2].startswith("--eps=auto chooses ")
    assert lines[-1].startswith("--eps=auto_linked chooses ")


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "give exactly one of --run_dir=RUN_DIR, --train_flagfile=FLAGFILE or --features"),
        (["--run_dir=a", "--features=b.npz"], "give exactly one of"),
        (["--features=/no/such.npz"], "--features=/no/such.npz: not an .npz"),
        (["--features=x.npz", "--eps=0.5,1.5"], "every eps must lie in (0, 1)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(flags, message):
    proc = probe(*flags)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]


def tiny_config(synth_market: str, run_dir: str) -> TrainConfig:
    return TrainConfig().replace(
        dataset="market1501",
        data_dir=synth_market,
        backbone="resnet_small",
        backbone_weights="none",
        height=SHAPE[0],
        width=SHAPE[1],
        run_dir=run_dir,
        cluster_network="student",
    )


def test_a_run_is_probed_with_the_network_it_clusters(synth_market, tmp_path):
    run_dir = str(tmp_path / "run")
    cfg = tiny_config(synth_market, run_dir)
    tf.keras.utils.set_random_seed(1)
    student = build_encoder(cfg.model, SHAPE, name="student")
    teacher = build_encoder(cfg.model, SHAPE, name="teacher")  # another random draw
    os.makedirs(run_dir)
    runs.write_config(cfg, run_dir, log=lambda _: None)
    branches = tf.train.Checkpoint(student=student, teacher=teacher)
    tf.train.Checkpoint(model=branches).save(os.path.join(run_dir, runs.CHECKPOINTS, "ckpt"))

    features, pids, camids, _ = run_features(run_dir)
    train = datasets.load_dataset("market1501", synth_market, verbose=False).train
    paths = [r.path for r in train]
    own = extract_features(lambda x: student(x, training=False), paths, *SHAPE[:2])
    other = extract_features(lambda x: teacher(x, training=False), paths, *SHAPE[:2])
    np.testing.assert_allclose(features, own, atol=1e-5)
    assert np.abs(features - other).max() > 1e-2
    assert list(pids) == [r.pid for r in train] and list(camids) == [r.camid for r in train]


def test_a_training_flagfile_is_probed_before_any_run(synth_market, tmp_path):
    flagfile = str(tmp_path / "tiny.flags")
    cfg = tiny_config(synth_market, str(tmp_path / "never_written"))
    with open(flagfile, "w") as f:
        for name in ("dataset", "data_dir", "backbone", "backbone_weights", "height", "width"):
            section = "data" if name in ("dataset", "data_dir", "height", "width") else "model"
            f.write(f"--{name}={getattr(getattr(cfg, section), name)}\n")
        f.write("--k1=8\n--k2=2\n--min_samples=2\n")
    proc = probe(f"--train_flagfile={flagfile}", "--eps=0.5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    num_train = len(datasets.load_dataset("market1501", synth_market, verbose=False).train)
    assert proc.stdout.startswith(f"{num_train} samples, k1 8, k2 2, min_samples 2")
    assert not os.path.exists(tmp_path / "never_written")
