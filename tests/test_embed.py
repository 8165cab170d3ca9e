"""Tests of the embedding API (``maskpre_tf.load_embedder``) and ``python -m maskpre_tf.embed``.

One tiny run and its export (tests/export_setup.py) and a folder of generated crops: five
Market-named JPEGs of the generated set in a sub-folder, and PNGs of random pixel arrays of odd
sizes (unlabelled names). Every feature is compared with what the exported SavedModel's
``serving_default`` returns for the same file bytes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from export_setup import ROOT, export_with_samples, read_bytes
from PIL import Image

from maskpre_tf import embedder as embedder_module
from maskpre_tf import inference
from maskpre_tf.errors import UserError

TOLERANCE = 1e-5
# (height, width) of the random-pixel crops: the model's size, taller, tiny, larger.
ARRAY_SIZES = ((64, 32), (100, 41), (7, 5), (300, 120))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, synth_market):
    """(run folder, SavedModel version folder) of one tiny run."""
    tmp = tmp_path_factory.mktemp("embed_export")
    _, _, version_dir, _ = export_with_samples(tmp, synth_market, warmup_batch_sizes=())
    return str(tmp / "run"), version_dir


@pytest.fixture(scope="module")
def crops(tmp_path_factory, synth_market):
    """(crops folder, {file name: uint8 array} of its PNGs of random pixels)."""
    root = tmp_path_factory.mktemp("embed_crops") / "crops"
    (root / "market").mkdir(parents=True)
    query = os.path.join(synth_market, "query")
    for name in sorted(os.listdir(query))[:5]:
        shutil.copy(os.path.join(query, name), root / "market" / name)
    rng = np.random.default_rng(7)
    arrays = {}
    for i, (height, width) in enumerate(ARRAY_SIZES):
        name = f"odd_{i}.png"
        arrays[name] = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(arrays[name]).save(root / name)
    (root / "notes.txt").write_text("not an image")
    return str(root), arrays


@pytest.fixture(scope="module")
def served(exported):
    """files → the SavedModel's serving_default embeddings float32 [n, D]."""
    signature = tf.saved_model.load(exported[1]).signatures["serving_default"]
    return lambda files: signature(image_bytes=tf.constant(read_bytes(files)))["embedding"].numpy()


@pytest.fixture(scope="module")
def run_embedder(exported):
    from maskpre_tf import load_embedder

    return load_embedder(exported[0])


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


def test_importing_the_package_does_not_import_tensorflow():
    code = (
        "import maskpre_tf, sys\n"
        "assert 'tensorflow' not in sys.modules\n"
        "assert {'load_embedder', 'Embedder'} <= set(dir(maskpre_tf))\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
    from maskpre_tf import Embedder, load_embedder

    assert load_embedder is inference.load_embedder and Embedder is inference.Embedder


def test_folder_files_and_arrays_match_the_saved_model(run_embedder, crops, served):
    root, arrays = crops
    files = run_embedder.image_files(root)
    names = [os.path.relpath(p, root) for p in files]
    assert names == sorted(names) and len(names) == 9 and names[-1] == "odd_3.png"
    reference = served(files)
    by_folder = run_embedder.embed(root, batch_size=4)
    assert by_folder.dtype == np.float32 and by_folder.shape == (9, 256)
    np.testing.assert_allclose(np.linalg.norm(by_folder, axis=1), 1.0, atol=1e-5)
    assert max_diff(by_folder, reference) <= TOLERANCE
    assert max_diff(run_embedder.embed([Path(p) for p in files]), reference) <= TOLERANCE
    assert max_diff(run_embedder.embed(files[0]), reference[:1]) <= TOLERANCE
    png_rows = [names.index(name) for name in arrays]
    by_arrays = run_embedder.embed(list(arrays.values()), batch_size=3)
    assert max_diff(by_arrays, reference[png_rows]) <= TOLERANCE
    single = run_embedder.embed_arrays(arrays["odd_2.png"])
    assert max_diff(single, reference[png_rows[2] : png_rows[2] + 1]) <= TOLERANCE
    batch = np.stack([arrays["odd_1.png"]] * 3)
    assert max_diff(run_embedder.embed(batch), reference[[png_rows[1]] * 3]) <= TOLERANCE


def test_a_saved_model_embeds_the_same(exported, crops, run_embedder):
    from maskpre_tf import load_embedder

    from_export = load_embedder(os.path.dirname(exported[1]))
    root, arrays = crops
    assert max_diff(from_export.embed(root), run_embedder.embed(root)) <= TOLERANCE
    pixels = list(arrays.values())
    assert max_diff(from_export.embed(pixels), run_embedder.embed(pixels)) <= TOLERANCE


def test_progress_every_tenth_above_the_threshold(run_embedder, monkeypatch, capsys):
    pixels = np.full((10, 8, 4, 3), 120, np.uint8)
    run_embedder.embed(pixels, batch_size=4)
    assert capsys.readouterr().err == ""  # 10 images: below the threshold
    monkeypatch.setattr(embedder_module, "PROGRESS_MIN_IMAGES", 5)
    run_embedder.embed(pixels, batch_size=4)
    assert capsys.readouterr().err.splitlines() == [
        "embedded 4/10 images (40%)",
        "embedded 8/10 images (80%)",
        "embedded 10/10 images (100%)",
    ]
    run_embedder.embed(pixels, batch_size=1, progress=False)
    assert capsys.readouterr().err == ""


def test_bad_inputs_are_user_errors_naming_the_problem(run_embedder, crops, tmp_path):
    root, _ = crops
    cases = [
        (np.zeros((2, 8, 4, 3), np.float32), "dtype float32: expected uint8"),
        (np.zeros((8, 4, 4), np.uint8), r"shape \(8, 4, 4\): expected \[h, w, 3\]"),
        (np.zeros((8, 0, 3), np.uint8), r"shape \(8, 0, 3\)"),
        ([], "no images given"),
        (str(tmp_path / "missing.jpg"), "missing.jpg: cannot read it"),
        (os.path.join(root, "notes.txt"), "notes.txt: not a usable JPEG/PNG file"),
        (str(tmp_path), "no .jpg/.jpeg/.png files found"),
    ]
    for images, message in cases:
        with pytest.raises(UserError, match=message):
            run_embedder.embed(images)
    with pytest.raises(UserError, match="no such directory"):
        run_embedder.embed_folder(tmp_path / "missing")
    with pytest.raises(UserError, match="batch_size=0"):
        run_embedder.embed(root, batch_size=0)


def run_cli(*args: str) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(
        [sys.executable, "-m", "maskpre_tf.embed", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of a finished ``run_cli`` process."""
    stdout, stderr = proc.communicate(timeout=180)
    return proc.returncode, stdout, stderr


@pytest.fixture(scope="module")
def program_runs(exported, crops, tmp_path_factory):
    """{"good": (status, stdout, stderr, out), "missing_run": ...}: two runs of the program,
    started side by side (each spends most of its time importing TensorFlow)."""
    root, _ = crops
    tmp = tmp_path_factory.mktemp("embed_cli")
    good, missing = tmp / "new_folder" / "features.npz", tmp / "missing.npz"
    procs = {
        "good": (run_cli(f"--run_dir={exported[0]}", f"--images={root}", f"--out={good}"), good),
        "missing_run": (
            run_cli(f"--run_dir={tmp / 'missing'}", f"--images={root}", f"--out={missing}"),
            missing,
        ),
    }
    return {name: (*finish(proc), out) for name, (proc, out) in procs.items()}


def test_cli_writes_paths_features_and_labels(program_runs, crops, served):
    root, arrays = crops
    status, stdout, stderr, out = program_runs["good"]
    assert status == 0, stderr
    summary = rf"embedded 9 images of {re.escape(root)} into 256-d features in [0-9.]+ s; wrote "
    assert re.fullmatch(summary + re.escape(str(out)) + "\n", stdout), stdout
    assert stderr == ""
    with np.load(out) as saved:
        assert sorted(saved.files) == ["camids", "features", "paths", "pids"]
        paths, features = saved["paths"], saved["features"]
        pids, camids = saved["pids"], saved["camids"]
    market = sorted(os.listdir(os.path.join(root, "market")))
    assert list(paths) == [f"market/{name}" for name in market] + sorted(arrays)
    assert features.dtype == np.float32 and features.shape == (9, 256)
    reference = served([os.path.join(root, p) for p in paths])
    assert max_diff(features, reference) <= TOLERANCE
    expected = [(int(n[:4]), int(n.split("_c")[1][0]) - 1) for n in market]
    expected += [(-1, -1)] * len(arrays)
    assert list(zip(pids.tolist(), camids.tolist(), strict=True)) == expected
    assert pids.dtype == camids.dtype == np.int64


def test_bad_program_inputs_exit_2_with_one_line(exported, crops, tmp_path, capsys):
    """Each bad input through the program's error path (run_main)."""
    from maskpre_tf.embed import write_features
    from maskpre_tf.errors import run_main

    root, _ = crops
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("")
    run, out = exported[0], str(tmp_path / "features.npz")
    missing, empty = str(tmp_path / "missing"), str(tmp_path / "empty")
    under_a_file = str(tmp_path / "a_file" / "f.npz")
    cases = [
        ((missing, root, out), f"--run_dir={missing}: no such directory; pass the --run_dir"),
        ((run, empty, out), f"--images={empty}: no .jpg/.jpeg/.png files found"),
        (
            (run, root, under_a_file),
            f"--out={under_a_file}: {tmp_path / 'a_file'} is a file, not a folder",
        ),
        ((run, root, str(tmp_path)), f"--out={tmp_path} is a folder; pass a file name"),
        ((str(tmp_path / "a_file"), root, out), f"--run_dir={tmp_path / 'a_file'}: no such"),
        ((root, root, out), f"--run_dir={root}: neither a training run directory"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as stopped:
            run_main(lambda argv, args=args: print(write_features(*args)), [])
        captured = capsys.readouterr()
        assert stopped.value.code == 2 and captured.out == "", captured
        assert captured.err.startswith(f"error: {message}") and captured.err.count("\n") == 1
    assert not os.path.exists(out)


def test_the_program_exits_2_with_one_line(program_runs):
    status, stdout, stderr, out = program_runs["missing_run"]
    assert status == 2 and stdout == "" and "Traceback" not in stderr
    missing = os.path.join(os.path.dirname(out), "missing")
    assert stderr.splitlines() == [
        f"error: --run_dir={missing}: no such directory; pass the --run_dir of a "
        "maskpre_tf.train run (or an exported SavedModel folder)"
    ]
    assert not out.exists()


def test_unusable_files_are_skipped_and_unlabelled_names_carry_no_labels(
    exported, crops, capsys, tmp_path
):
    from maskpre_tf.embed import write_features

    root, _ = crops
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(os.path.join(root, "odd_0.png"), folder / "a.png")
    (folder / "b.jpg").write_bytes(b"not a JPEG")
    out = tmp_path / "f.npz"
    summary = write_features(exported[0], str(folder), str(out), progress=False)
    assert "embedded 1 images" in summary and "1 unusable file(s) skipped" in summary
    warning = capsys.readouterr().err
    assert warning.startswith("warning: skipped 1 unreadable image file(s)") and "b.jpg" in warning
    with np.load(out) as saved:
        assert sorted(saved.files) == ["features", "paths"] and list(saved["paths"]) == ["a.png"]
        assert saved["features"].shape == (1, 256)
