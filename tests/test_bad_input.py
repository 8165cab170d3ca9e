"""Bad input, more of it: every case ends in one ``error:`` line naming the flag or file and the
fix, exit status 2, no traceback; the serving graph refuses bad images and keeps serving.

In-process tests cover the variants; one subprocess per program checks the wiring (exit code,
a single line on stderr). Serving is checked on an in-process :class:`ServingModule` and on the
exported SavedModel's ``serving_default`` signature.
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
from absl import flags
from export_setup import HEIGHT, ROOT, WIDTH, make_run
from image_files import encoded, jpeg_bomb, png_bomb

from maskpre_tf import export, inference, search
from maskpre_tf.config_flags import config_from_flags, define_flags
from maskpre_tf.data import datasets
from maskpre_tf.data.images import (
    MAX_IMAGE_PIXELS,
    decode_image,
    encoded_image_size,
    validate_images,
)
from maskpre_tf.errors import EXIT_USER_ERROR, UserError, flag_error_message
from maskpre_tf.training.distribute import make_strategy, tf_config_problem


def run_cli(module: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``python -m module args`` from the repository root, with extra environment variables."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env),
        cwd=ROOT,
        timeout=120,
    )


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2, no traceback, exactly one ``error:`` line holding every needle."""
    assert proc.returncode == EXIT_USER_ERROR, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def parse(argv: list[str]):
    """A validated TrainConfig from a command line (weights not resolved: no file needed)."""
    values = flags.FlagValues()
    define_flags(values)
    values(["prog", *argv])
    return config_from_flags(values, resolve_weights=False)


# ------------------------------------------------------------- 1, 4: settings and flags


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--eps=-0.1"], ["--eps=-0.1", "(0, 1)"]),
        (["--eps=1.5"], ["--eps=1.5", "(0, 1)"]),
        (["--eps=loose"], ["--eps=loose", "auto"]),
        (["--k1=5", "--k2=6"], ["--k1=5 --k2=6", "--k2 <= --k1"]),
        (["--min_samples=0"], ["--min_samples=0", ">= 1"]),
        (["--dataset=marked1501"], ["--dataset=marked1501", "market1501", "folder"]),
        (
            ["--source_dataset=nope", "--source_dir=/x"],
            ["--source_dataset=nope", "unknown dataset", "dukemtmc"],
        ),
    ],
)
def test_bad_settings_are_rejected_by_validate(argv, needles):
    with pytest.raises(UserError) as err:
        parse(argv)
    for needle in needles:
        assert needle in str(err.value)


def test_good_spellings_stay_valid():
    assert parse(["--eps=auto"]).clustering.fixed_eps is None
    linked = parse(["--eps=auto_linked"]).clustering
    assert linked.fixed_eps is None and linked.auto_rule == "auto_linked"
    assert parse(["--eps=0.45"]).clustering.auto_rule == "auto"  # unused with a fixed eps
    assert parse(["--eps=0.5", "--k1=6", "--k2=6", "--min_samples=1"]).clustering.k2 == 6
    assert parse(["--dataset=Market-1501", "--source_dataset=duke", "--source_dir=/x"])


def test_cli_rejects_bad_eps_before_reading_data(tmp_path):
    proc = run_cli("maskpre_tf.train", "--eps=1.5", f"--data_dir={tmp_path / 'absent'}")
    assert_user_error(proc, "--eps=1.5", "auto, auto_linked or a Jaccard distance in (0, 1)")


# ---------------------------------------------------------------------- 2: flagfile


def test_missing_flagfile_is_one_line_exit_2():
    line = assert_user_error(run_cli("maskpre_tf.train", "--flagfile=nope.flags"))
    assert line.startswith("error: --flagfile=nope.flags: no such file or directory")
    assert f"relative paths are read from {ROOT}" in line and "configs/*.flags" in line


def test_flag_parsing_errors_read_as_one_line(tmp_path):
    nested = tmp_path / "outer.flags"
    nested.write_text(f"--flagfile={tmp_path / 'inner.flags'}\n")
    values = flags.FlagValues()
    define_flags(values)
    for argv, start in [
        ([f"--flagfile={nested}"], f"--flagfile={tmp_path / 'inner.flags'}: no such file"),
        (["--epochs=many"], "flag --epochs=many: invalid literal"),
        (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    ]:
        with pytest.raises(flags.Error) as err:
            values(["prog", *argv])
        message = flag_error_message(err.value)
        assert message.startswith(start) and "\n" not in message


# -------------------------------------------------------------------- 3: TF_CONFIG


@pytest.mark.parametrize(
    "text, needle",
    [
        ("{bad json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"task": {"type": "worker", "index": 0}}', 'no usable "cluster"'),
        (
            '{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}',
            'no usable "cluster"',
        ),
        ('{"cluster": {"worker": ["h:1"]}}', 'no usable "task"'),
        (
            '{"cluster": {"worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}',
            '"task" type "chief" is not a task type of "cluster" (worker)',
        ),
        ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 1}}', "0..0"),
    ],
)
def test_malformed_tf_config_is_explained(text, needle, monkeypatch):
    assert needle in tf_config_problem(text)
    monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(UserError, match="TF_CONFIG .*--strategy=multi_worker.*--strategy=mirrored"):
        make_strategy("multi_worker")


def test_well_formed_or_unset_tf_config_passes():
    assert tf_config_problem("") is None
    cluster = '{"chief": ["a:1"], "worker": ["b:1", "c:1"]}'
    assert (
        tf_config_problem(f'{{"cluster": {cluster}, "task": {{"type": "worker", "index": 1}}}}')
        is None
    )


def test_cli_reports_a_malformed_tf_config(tmp_path):
    proc = run_cli(
        "maskpre_tf.train",
        "--strategy=multi_worker",
        "--backbone=resnet_small",
        "--backbone_weights=none",
        f"--data_dir={tmp_path / 'absent'}",
        f"--run_dir={tmp_path / 'run'}",
        TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:1"]}',
    )
    assert_user_error(proc, "TF_CONFIG (read by --strategy=multi_worker): not valid JSON")


# ------------------------------------------------------------ 4, 5: evaluate's input


def test_evaluate_rejects_an_unknown_dataset(synth_market, tmp_path):
    proc = run_cli(
        "maskpre_tf.evaluate",
        "--dataset=nosuch",
        f"--data_dir={synth_market}",
        f"--saved_model={tmp_path}",
    )
    assert_user_error(proc, "--dataset=nosuch: unknown dataset; expected one of auto, market1501")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(teacher, version_dir) of one export of a tiny run (no warmup file)."""
    tmp = tmp_path_factory.mktemp("bad_input_export")
    teacher, _ = make_run(str(tmp / "run"))
    version_dir = export.export_run(
        str(tmp / "run"), str(tmp / "models" / "maskpre"), warmup_batch_sizes=[]
    )
    return teacher, version_dir


def corrupt_saved_models(root: Path, version_dir: str) -> dict[str, str]:
    """Folders that look like SavedModels but are not: name → path."""
    kinds = {
        "empty dir": None,
        "garbage pb": os.urandom(600),
        "zero-byte pb": b"",
        "no variables": Path(version_dir, "saved_model.pb").read_bytes(),
    }
    out = {}
    for name, pb in kinds.items():
        folder = root / name.replace(" ", "_")
        folder.mkdir()
        if pb is not None:
            (folder / "saved_model.pb").write_bytes(pb)
        out[name] = str(folder)
    return out


def test_corrupt_saved_models_are_one_line_user_errors(exported, tmp_path):
    for name, path in corrupt_saved_models(tmp_path, exported[1]).items():
        with pytest.raises(UserError) as err:
            inference.load_embedder(path, flag="--saved_model")
        message = str(err.value)
        assert message.startswith(f"--saved_model={path}: "), name
        assert "\n" not in message and "maskpre_tf.export" in message, name


def test_evaluate_cli_reports_a_corrupt_saved_model(exported, synth_market, tmp_path):
    path = corrupt_saved_models(tmp_path, exported[1])["garbage pb"]
    proc = run_cli("maskpre_tf.evaluate", f"--saved_model={path}", f"--data_dir={synth_market}")
    assert_user_error(proc, f"--saved_model={path}: not a complete SavedModel", "export the run")


def test_evaluate_names_an_unusable_query_image(exported, synth_market, tmp_path):
    data = tmp_path / "market"
    shutil.copytree(synth_market, data)
    (data / "query" / "0001_c1s1_009999_00.jpg").write_text("not a picture")
    proc = run_cli("maskpre_tf.evaluate", f"--saved_model={exported[1]}", f"--data_dir={data}")
    assert_user_error(proc, "0001_c1s1_009999_00.jpg (not a JPEG or PNG file)", "re-copy or delete")


# ------------------------------------------------------------- 5, 6: search's input


def test_search_reports_corrupt_models_and_image_less_queries(exported, synth_market, tmp_path):
    gallery = os.path.join(synth_market, "bounding_box_test")
    query = os.path.join(synth_market, "query")
    for path in corrupt_saved_models(tmp_path, exported[1]).values():
        with pytest.raises(UserError, match=f"^{re.escape(f'--saved_model={path}: ')}"):
            search.run_search(path, gallery, query, str(tmp_path / "out"))
    no_images = tmp_path / "no_images"
    no_images.mkdir()
    (no_images / "notes.txt").write_text("crops go here")
    with pytest.raises(UserError, match="--query=.*no .jpg.*point --query at a folder"):
        search.run_search(exported[1], gallery, str(no_images), str(tmp_path / "out"))


def test_search_cli_reports_a_query_folder_without_images(exported, synth_market, tmp_path):
    proc = run_cli(
        "maskpre_tf.search",
        f"--saved_model={exported[1]}",
        f"--gallery={os.path.join(synth_market, 'bounding_box_test')}",
        f"--query={tmp_path}",
        f"--results_dir={tmp_path / 'out'}",
    )
    assert_user_error(proc, f"--query={tmp_path}: no .jpg/.jpeg/.png files", "--query at a")


# ---------------------------------------------------------------- 7: serving


def test_header_sizes_are_read_without_decoding():
    for fmt in ("PNG", "JPEG"):
        assert encoded_image_size(encoded(5, 7, fmt)).numpy().tolist() == [7, 5]
    assert encoded_image_size(png_bomb(30000, 20000)).numpy().tolist() == [20000, 30000]
    assert encoded_image_size(jpeg_bomb(30000, 20000)).numpy().tolist() == [20000, 30000]
    assert 30000 * 20000 > MAX_IMAGE_PIXELS


@pytest.fixture(scope="module", params=["in-process", "exported"])
def serve(request, exported):
    """The serving_default function: encoded files → {"embedding"}, on both deployments."""
    teacher, version_dir = exported
    if request.param == "in-process":
        module = inference.ServingModule(teacher, HEIGHT, WIDTH, "{}")
        return lambda files: module.serve_bytes(tf.constant(files, tf.string))
    signature = tf.saved_model.load(version_dir).signatures[inference.SERVING_SIGNATURE]
    return lambda files: signature(image_bytes=tf.constant(files, tf.string))


@pytest.mark.parametrize(
    "files, message",
    [
        ([png_bomb()], r"refused element\(s\)\] \[0\] \[before decoding: the header declares "),
        ([encoded(4, 4, "PNG"), jpeg_bomb()], r"refused element\(s\)\] \[1\].*\[\[30000 30000\]\]"),
        ([b""], r"element\(s\)\] \[0\] \[are empty or not JPEG or PNG files"),
        ([encoded(4, 4, "PNG")[:12]], "declare an empty image"),
        ([b"\xff\xd8\xff" + b"x" * 40], "Invalid JPEG data"),
    ],
    ids=["png bomb", "jpeg bomb", "empty", "png without IHDR", "undecodable jpeg"],
)
def test_serving_refuses_bad_images_and_keeps_serving(serve, files, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serve(files)
    good = serve([encoded(16, 32, "JPEG"), encoded(16, 32, "PNG")])["embedding"].numpy()
    assert good.shape == (2, 256) and np.allclose(np.linalg.norm(good, axis=1), 1.0, atol=1e-4)


def test_serving_resizes_a_one_pixel_image(serve):
    embedding = serve([encoded(1, 1, "PNG"), encoded(1, 1, "JPEG")])["embedding"].numpy()
    assert embedding.shape == (2, 256) and np.all(np.isfinite(embedding))


def test_search_skips_a_bomb_with_its_reason(exported, tmp_path):
    embedder = inference.load_embedder(exported[1])
    (tmp_path / "bomb.png").write_bytes(png_bomb())
    (tmp_path / "ok.png").write_bytes(encoded(16, 32, "PNG"))
    _, kept, skipped = search.embed_files(
        embedder, [str(tmp_path / n) for n in ("bomb.png", "ok.png")]
    )
    assert kept == [str(tmp_path / "ok.png")]
    assert skipped == [
        (
            str(tmp_path / "bomb.png"),
            f"larger than {MAX_IMAGE_PIXELS} pixels (refused before decoding)",
        )
    ]


# ------------------------------------------------------- 8: empty and 1-pixel files


def test_empty_training_image_is_named_with_the_fix(synth_market, tmp_path):
    data = tmp_path / "market"
    shutil.copytree(synth_market, data)
    empty = data / "bounding_box_train" / "0001_c1s1_009999_00.jpg"
    empty.write_bytes(b"")
    with pytest.raises(UserError) as err:
        datasets.load_dataset("auto", str(data), verbose=False)
    message = str(err.value)
    assert (
        f"corrupt (zero-byte) image file(s) under {data / 'bounding_box_train'}: {empty}" in message
    )
    assert "delete these files" in message


def test_one_pixel_image_is_a_usable_file(tmp_path):
    path = tmp_path / "0001_c1s1_000001_00.png"
    path.write_bytes(encoded(1, 1, "PNG"))
    assert validate_images([str(path)]) == []
    pixels = decode_image(tf.io.read_file(str(path)), HEIGHT, WIDTH).numpy()
    assert pixels.shape == (HEIGHT, WIDTH, 3) and np.allclose(pixels, [90, 20, 200], atol=1)
