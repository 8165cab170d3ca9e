"""Tests of the TF Serving export: layout, versions, signatures, equality, warmup, bad input.

No ``tensorflow_model_server`` binary is available here, so the export is checked the ways a
server would use it: ``saved_model_cli``, a fresh-process ``tf.saved_model.load``, a TF1-style
session over the MetaGraph's SignatureDefs (how TF Serving's SavedModelBundle runs it) and the
warmup replay. The clients of the deployment kit (export/*.py) are tested in test_export_kit.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from export_setup import HEIGHT, ROOT, WIDTH, export_with_samples, make_run, read_bytes
from image_files import encoded, png_bomb

from maskpre_tf import export, inference
from maskpre_tf.data.images import decode_image
from maskpre_tf.errors import UserError


@pytest.fixture(scope="module")
def exported(tmp_path_factory, synth_market):
    """(teacher, cfg, version_dir, sample image files) of one export of a tiny run."""
    return export_with_samples(tmp_path_factory.mktemp("export"), synth_market)


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported[2])


def keras_embeddings(teacher, files):
    """The Keras teacher's embeddings of files, decoded by the training pipeline."""
    pixels = tf.stack([decode_image(tf.io.read_file(f), HEIGHT, WIDTH) for f in files])
    return teacher(pixels, training=False).numpy(), pixels.numpy()


# ---------------------------------------------------------------------------- layout


def test_layout_versions_and_models_config(exported, tmp_path):
    teacher, cfg, version_dir, _ = exported
    base = os.path.dirname(version_dir)
    assert os.path.basename(version_dir) == "1"
    for rel in (
        "saved_model.pb",
        "variables/variables.index",
        "assets/maskpre_metadata.json",
        export.WARMUP_FILE,
    ):
        assert os.path.isfile(os.path.join(version_dir, rel)), rel
    # A copy of the base path: the next export gets the next version, nothing half-written is
    # left behind, and models.config keeps other models.
    models = tmp_path / "models"
    shutil.copytree(base, models / "maskpre")
    other = export.export_encoder(teacher, cfg, str(models / "other"), warmup_batch_sizes=())
    second = export.export_encoder(teacher, cfg, str(models / "maskpre"), warmup_batch_sizes=())
    assert os.path.basename(second) == "2" and os.path.basename(other) == "1"
    assert sorted(os.listdir(models / "maskpre")) == ["1", "2"]
    assert not os.path.exists(os.path.join(second, export.WARMUP_FILE))
    with pytest.raises(UserError, match="already exists"):
        export.export_encoder(teacher, cfg, str(models / "maskpre"), version=2)
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((models / "models.config").read_text(), config)
    entries = {m.name: m for m in config.model_config_list.config}
    assert set(entries) == {"maskpre", "other"}
    assert entries["maskpre"].base_path == str(models / "maskpre")
    assert entries["maskpre"].model_platform == "tensorflow"
    export.write_models_config(str(models / "models.config"), "maskpre", "/models/maskpre")
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((models / "models.config").read_text(), config)
    assert {m.name: m.base_path for m in config.model_config_list.config} == {
        "maskpre": "/models/maskpre",
        "other": str(models / "other"),
    }


def test_metadata_signature_matches_asset(exported, loaded):
    _, cfg, version_dir, _ = exported
    from_signature = json.loads(loaded.signatures["metadata"]()["metadata_json"].numpy())
    with open(os.path.join(version_dir, "assets", export.METADATA_FILE)) as f:
        from_asset = json.load(f)
    assert from_signature == from_asset
    assert (from_asset["height"], from_asset["width"]) == (HEIGHT, WIDTH)
    assert from_asset["embedding_dim"] == 256
    assert from_asset["config_digest"] == cfg.digest()
    assert from_asset["backbone"] == "resnet_small"
    assert from_asset["input_norm"] == "torch" == cfg.model.input_norm
    np.testing.assert_allclose(from_asset["normalization"]["mean"], [123.675, 116.28, 103.53])
    for key in ("maskpre_tf_version", "exported_at"):
        assert from_asset[key]


def test_caffe_normalised_export_serves_the_keras_teacher_on_jpeg_bytes(exported, tmp_path):
    _, _, _, files = exported
    teacher, _ = make_run(str(tmp_path / "run"), input_norm="caffe")
    version_dir = export.export_run(
        str(tmp_path / "run"), str(tmp_path / "models" / "caffe"), warmup_batch_sizes=(1,)
    )
    loaded = tf.saved_model.load(version_dir)
    meta = json.loads(loaded.signatures["metadata"]()["metadata_json"].numpy())
    assert meta["input_norm"] == "caffe" and meta["normalization"]["channel_order"] == "BGR"
    expected, _ = keras_embeddings(teacher, files)
    served = loaded.signatures["serving_default"](image_bytes=tf.constant(read_bytes(files)))
    assert np.abs(served["embedding"].numpy() - expected).max() <= 1e-4
    # The normalisation is the weights' own: the same weights fed torch-normalised pixels
    # embed differently.
    teacher.input_norm = "torch"
    torch_fed, _ = keras_embeddings(teacher, files)
    assert np.abs(torch_fed - expected).max() > 1e-2


# ---------------------------------------------------------------------------- fresh process

FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    version_dir, files_json, out = sys.argv[1:4]
    files = json.load(open(files_json))
    data = [open(f, "rb").read() for f in files]
    pixels = np.load(out + ".pixels.npy")
    loaded = tf.saved_model.load(version_dir)
    result = {
        "bytes": loaded.signatures["serving_default"](image_bytes=tf.constant(data))[
            "embedding"].numpy(),
        "pixels": loaded.signatures["embed_images"](images=tf.constant(pixels))[
            "embedding"].numpy(),
    }
    # TF1-style session over the SignatureDefs, as TF Serving's SavedModelBundle runs them.
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], version_dir)
        for key, name, value in (("session_bytes", "serving_default", np.array(data, object)),
                                 ("session_pixels", "embed_images", pixels)):
            sig = meta.signature_def[name]
            feed = {next(iter(sig.inputs.values())).name: value}
            result[key] = sess.run(sig.outputs["embedding"].name, feed)
    np.savez(out, **result)
""")


def test_fresh_process_matches_keras_teacher(exported, tmp_path):
    teacher, _, version_dir, files = exported
    expected, pixels = keras_embeddings(teacher, files)
    np.save(str(tmp_path / "out.pixels.npy"), pixels)
    (tmp_path / "files.json").write_text(json.dumps(files))
    (tmp_path / "fresh.py").write_text(FRESH_PROCESS)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "fresh.py"),
            version_dir,
            str(tmp_path / "files.json"),
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = np.load(tmp_path / "out.npz")
    assert expected.shape == (len(files), 256)
    for key in ("bytes", "pixels", "session_bytes", "session_pixels"):
        assert np.abs(result[key] - expected).max() <= 1e-4, key
        np.testing.assert_allclose(np.linalg.norm(result[key], axis=1), 1.0, atol=1e-5)
    # The embeddings really depend on the image (not a constant vector).
    assert np.abs(expected[0] - expected[1]).max() > 1e-3


def test_saved_model_cli_lists_documented_signatures(exported):
    version_dir = exported[2]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tensorflow.python.tools.saved_model_cli",
            "show",
            "--dir",
            version_dir,
            "--all",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    blocks = {}
    for block in proc.stdout.split("signature_def['")[1:]:
        name, body = block.split("']", 1)
        blocks[name] = " ".join(body.split())
    assert {"serving_default", "embed_images", "metadata"} <= set(blocks)
    assert (
        "inputs['image_bytes'] tensor_info: dtype: DT_STRING shape: (-1)"
        in blocks["serving_default"]
    )
    assert (
        f"inputs['images'] tensor_info: dtype: DT_FLOAT shape: (-1, {HEIGHT}, {WIDTH}, 3)"
        in blocks["embed_images"]
    )
    for name in ("serving_default", "embed_images"):
        assert "outputs['embedding'] tensor_info: dtype: DT_FLOAT shape: (-1, 256)" in blocks[name]
        assert "Method name is: tensorflow/serving/predict" in blocks[name]
    assert "outputs['metadata_json'] tensor_info: dtype: DT_STRING shape: ()" in blocks["metadata"]


# ---------------------------------------------------------------------------- warmup


def test_warmup_file_parses_and_replays(exported, loaded):
    version_dir = exported[2]
    logs = export.read_warmup_file(os.path.join(version_dir, export.WARMUP_FILE))
    seen = set()
    for log in logs:
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.name == "maskpre"
        inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        out = loaded.signatures[request.model_spec.signature_name](**inputs)["embedding"]
        batch = next(iter(inputs.values())).shape[0]
        assert out.shape == (batch, 256)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
        seen.add((request.model_spec.signature_name, batch))
    assert seen == {
        (sig, b)
        for sig in ("serving_default", "embed_images")
        for b in export.DEFAULT_WARMUP_BATCH_SIZES
    }
    # The bytes and pixel requests of one batch size carry the same images.
    by_sig = {
        log.predict_log.request.model_spec.signature_name: log.predict_log.request
        for log in logs[:2]
    }
    files = tf.make_ndarray(by_sig["serving_default"].inputs["image_bytes"])
    pixels = tf.make_ndarray(by_sig["embed_images"].inputs["images"])
    decoded = tf.io.decode_image(files[0], channels=3).numpy()
    assert np.abs(decoded.astype(np.float32) - pixels[0]).mean() < 4.0  # JPEG loss only


# ---------------------------------------------------------------------------- bad input


def test_bad_requests_fail_cleanly(exported, loaded):
    files = exported[3]
    serve = loaded.signatures["serving_default"]
    embed = loaded.signatures["embed_images"]
    good = read_bytes(files[:1])
    truncated = good[0][: len(good[0]) // 2]
    cases = [
        (
            lambda: serve(image_bytes=tf.constant([good[0], b"not an image"])),
            "element.*1.*not JPEG or PNG",
        ),
        (lambda: serve(image_bytes=tf.constant([], tf.string)), "empty batch"),
        (lambda: serve(image_bytes=tf.constant([truncated])), "JPEG|jpeg"),
        (lambda: embed(images=tf.zeros((0, HEIGHT, WIDTH, 3))), "empty batch"),
        (
            lambda: embed(images=tf.zeros((1, HEIGHT + 8, WIDTH, 3))),
            rf"shape \[batch, {HEIGHT}, {WIDTH}, 3\]",
        ),
        (lambda: embed(images=tf.fill((1, HEIGHT, WIDTH, 3), np.nan)), "NaN or Inf"),
        (
            lambda: embed(images=tf.zeros((inference.MAX_BATCH + 1, HEIGHT, WIDTH, 3))),
            rf"{inference.MAX_BATCH + 1}\] \[images; send at most {inference.MAX_BATCH}",
        ),
        (lambda: embed(images=tf.zeros((1, HEIGHT, WIDTH, 3), tf.int32)), "float"),
        (lambda: serve(image_bytes=tf.zeros((1,), tf.float32)), "string"),
    ]
    for call, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            call()
    # The model still answers afterwards.
    assert serve(image_bytes=tf.constant(good))["embedding"].shape == (1, 256)


@pytest.mark.parametrize("deployment", ["in-process", "exported"])
def test_serving_caps_the_batch_before_decoding(exported, loaded, deployment):
    if deployment == "in-process":
        module = inference.ServingModule(exported[0], HEIGHT, WIDTH, "{}")
        serve = module.serve_bytes
    else:
        signature = loaded.signatures["serving_default"]
        serve = lambda files: signature(image_bytes=files)  # noqa: E731
    cap = inference.MAX_BATCH
    tile = encoded(4, 4, "PNG")
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"{cap + 1}\] \[files; .*{cap}"):
        serve(tf.constant([tile] * (cap + 1)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"at most {cap} per request"):
        serve(tf.constant([png_bomb()] * (cap + 1)))  # the cap is checked before the headers
    assert serve(tf.constant([tile] * cap))["embedding"].shape == (cap, 256)


def test_embedder_splits_batches_above_the_cap(exported):
    embedder = inference.load_embedder(exported[2])
    count = inference.MAX_BATCH + 3
    files = [encoded(4, 4, "PNG"), encoded(6, 9, "JPEG")] * (count // 2) + [encoded(4, 4, "PNG")]
    by_bytes = embedder.embed_bytes(files)
    assert by_bytes.shape == (count, 256)
    np.testing.assert_allclose(by_bytes[-1], by_bytes[0], atol=1e-6)
    pixels = np.full((count, HEIGHT, WIDTH, 3), 90.0, np.float32)
    by_pixels = embedder.embed_pixels(pixels).numpy()
    assert by_pixels.shape == (count, 256)
    np.testing.assert_allclose(by_pixels[-1], by_pixels[0], atol=1e-6)


def test_concurrent_requests_on_serving_default(exported):
    """4 clients x 50 requests of good and bad files (benchmarks/serve_load_bench.py)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import serve_load_bench

    target = serve_load_bench.saved_model_target(exported[2], seed=0)
    args = serve_load_bench.parse_args(["--clients=4", "--requests=200", "--warmup=0"])
    result = serve_load_bench.run_target(target, args)
    assert result["requests"] == 200 and not result["problems"]
    counts = result["counts"]
    assert counts["crash"] == counts["wrong"] == counts["accepted"] == 0, result["cases"]
    for row in result["cases"]:
        sent = sum(row["counts"].values())
        assert sent > 0 and row["counts"]["ok" if row["good"] else "refused"] == sent, row


def test_cli_reports_user_errors_without_traceback(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "maskpre_tf.export",
            f"--run_dir={tmp_path / 'missing'}",
            f"--export_dir={tmp_path / 'models' / 'maskpre'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert f"error: --run_dir={tmp_path / 'missing'}: no such directory" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "models").exists()


def test_warmup_batch_sizes_flag_values():
    assert export.parse_batch_sizes(["1", " 8", ""]) == [1, 8]
    assert export.parse_batch_sizes([]) == []
    with pytest.raises(UserError, match="--warmup_batch_sizes=1,x: expected comma-separated"):
        export.parse_batch_sizes(["1", "x"])
    with pytest.raises(UserError, match="--warmup_batch_sizes: batch sizes must be positive"):
        export.parse_batch_sizes(["0"])
    # A warmup request the signatures refuse would stop TF Serving from loading the version.
    cap = inference.MAX_BATCH
    assert export.parse_batch_sizes([str(cap)]) == [cap]
    with pytest.raises(UserError, match=rf"--warmup_batch_sizes=8,{cap + 1}: at most {cap}"):
        export.parse_batch_sizes(["8", str(cap + 1)])


def test_a_dead_exports_staging_folder_is_removed_a_live_ones_kept(tmp_path):
    from maskpre_tf.export.saved_model import remove_dead_staging, staging_dir

    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(finished.stdout)  # that process has exited
    dead = tmp_path / f".tmp-3-{dead_pid}-abc"
    (dead / "model").mkdir(parents=True)
    live = staging_dir(str(tmp_path), 3)  # this process's own, still running
    (tmp_path / "2").mkdir()  # a served version
    (tmp_path / ".tmp-notes").mkdir()  # not an export's name
    lines = []
    assert remove_dead_staging(str(tmp_path), log=lines.append) == [str(dead)]
    assert sorted(os.listdir(tmp_path)) == sorted([".tmp-notes", "2", os.path.basename(live)])
    assert "interrupted" in lines[0]


def test_two_exports_into_one_base_path_at_once_get_consecutive_versions(tmp_path):
    """Two processes export at the same moment: the second waits on the base path's lock and
    takes the next number; both versions are complete and nothing half-written is left."""
    run_dir = str(tmp_path / "run")
    make_run(run_dir)
    base = str(tmp_path / "models" / "maskpre")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    argv = [sys.executable, "-m", "maskpre_tf.export", f"--run_dir={run_dir}"]
    procs = [
        subprocess.Popen(
            [*argv, f"--export_dir={base}", "--warmup_batch_sizes=1"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    versions = sorted(n for n in os.listdir(base) if n.isdigit())
    assert versions == ["1", "2"]
    for version in versions:
        assert os.path.isfile(os.path.join(base, version, "saved_model.pb"))
        assert tf.saved_model.load(os.path.join(base, version)).signatures["serving_default"]
    assert sorted(os.listdir(base)) == ["1", "2"]  # no lock or temporary file left beside them
