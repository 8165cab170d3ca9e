"""Tests of the ONNX export: onnxruntime against the Keras teacher, metadata, bad input, layout.

Every test needs the optional ``onnx`` extra (tf2onnx, onnx, onnxruntime); without it the module
is skipped with the install command as the reason. The command-line export runs once (resnet_small,
``--format=savedmodel,onnx``); the MobileNetV2 models (Keras and PyTorch layouts) and a
caffe-normalised resnet_small are converted in-process with random weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

INSTALL = 'pip install "maskpre-tf[onnx]"'
ort = pytest.importorskip("onnxruntime", reason=f"onnxruntime is not installed ({INSTALL})")
pytest.importorskip("onnx", reason=f"onnx is not installed ({INSTALL})")
pytest.importorskip("tf2onnx", reason=f"the tf2onnx converter is not installed ({INSTALL})")

import tensorflow as tf  # noqa: E402
from export_setup import HEIGHT, ROOT, WIDTH, make_run  # noqa: E402
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument  # noqa: E402

from maskpre_tf import export  # noqa: E402
from maskpre_tf.config import TrainConfig  # noqa: E402
from maskpre_tf.errors import UserError  # noqa: E402
from maskpre_tf.export.warmup import warmup_images  # noqa: E402
from maskpre_tf.models.backbones import SymmetricPadConv2D  # noqa: E402
from maskpre_tf.models.encoder import build_encoder  # noqa: E402
from maskpre_tf.models.normalization import describe  # noqa: E402

TOLERANCE = 1e-4  # max abs difference of the L2-normalised embeddings
BATCHES = (1, 8)


def session(path: str):
    """An onnxruntime CPU session on the model file ``path``."""
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def pixels(count: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Deterministic smooth RGB images, float32 [count, H, W, 3] in 0–255."""
    return warmup_images(height, width, count, seed=7).astype(np.float32)


def max_diffs(path: str, teacher, height: int = HEIGHT, width: int = WIDTH) -> dict[int, float]:
    """{batch: max |onnxruntime - Keras|} on the same images at each of :data:`BATCHES`."""
    sess = session(path)
    images = pixels(max(BATCHES), height, width)
    expected = teacher(images, training=False).numpy()
    assert np.abs(expected[0] - expected[1]).max() > 1e-3  # not a constant embedding
    out = {}
    for batch in BATCHES:
        (got,) = sess.run(None, {"images": images[:batch]})
        assert got.shape == expected[:batch].shape and got.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        out[batch] = float(np.abs(got - expected[:batch]).max())
    return out


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory):
    """(teacher, cfg, version_dir) of ``python -m maskpre_tf.export --format=savedmodel,onnx``."""
    tmp = tmp_path_factory.mktemp("onnx_cli")
    teacher, cfg = make_run(str(tmp / "run"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "maskpre_tf.export",
            f"--run_dir={tmp / 'run'}",
            f"--export_dir={tmp / 'models' / 'maskpre'}",
            "--format=savedmodel,onnx",
            "--warmup_batch_sizes=",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    version_dir = str(tmp / "models" / "maskpre" / "1")
    assert f"ONNX model: {version_dir}/model.onnx" in proc.stdout
    return teacher, cfg, version_dir


def calibrated_encoder(backbone: str, layout: str, input_norm: str, height: int, width: int):
    """(encoder, cfg) with random He-normal kernels and BatchNorm statistics of its activations.

    With Keras's default initialisation and untrained BatchNorm statistics a random MobileNetV2
    maps every image to almost the same embedding (cosine similarity 1 - 1e-9), which would hide
    a wrong padding or normalisation. He-normal kernels (std sqrt(2 / fan_in)) and a few
    training-mode passes over smooth images (moving statistics as training sets them) give
    embeddings that differ from image to image.
    """
    cfg = TrainConfig().replace(
        backbone=backbone,
        backbone_weights="none",
        layout=layout,
        input_norm=input_norm,
        height=height,
        width=width,
    )
    encoder = build_encoder(cfg.model, (height, width, 3), name="teacher")
    rng = np.random.default_rng(3)
    for var in encoder.weights:
        if var.path.endswith("kernel"):
            shape = var.shape
            fan_in = shape[0] * shape[1] * (1 if "depthwise" in var.path else shape[2])
            var.assign(rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype(np.float32))
    images = tf.constant(warmup_images(height, width, 8, seed=11).astype(np.float32))
    calibrate = tf.function(lambda x: encoder(x, training=True))
    for _ in range(15):
        calibrate(images)
    return encoder, cfg


# ---------------------------------------------------------------------------- parity


def test_cli_export_matches_keras_teacher_and_saved_model(cli_export):
    teacher, _, version_dir = cli_export
    path = os.path.join(version_dir, export.ONNX_FILE)
    diffs = max_diffs(path, teacher)
    print(f"resnet_small torch: max |onnxruntime - Keras| by batch {diffs}")
    assert max(diffs.values()) <= TOLERANCE, diffs
    # The same embedding as the SavedModel's pixel signature in the same version.
    images = pixels(3)
    (got,) = session(path).run(None, {"images": images})
    served = tf.saved_model.load(version_dir).signatures["embed_images"](images=images)
    assert np.abs(got - served["embedding"].numpy()).max() <= TOLERANCE


@pytest.mark.parametrize(
    "backbone, layout, input_norm, size",
    [
        ("mobilenet_v2", "keras", "tf", (64, 32)),
        # The PyTorch layout: symmetric padding (SymmetricPadConv2D) and BN epsilon 1e-5.
        ("mobilenet_v2", "torch", "torch", (96, 48)),
        ("resnet_small", "keras", "caffe", (64, 32)),
    ],
)
def test_converted_encoder_matches_keras(tmp_path, backbone, layout, input_norm, size):
    encoder, cfg = calibrated_encoder(backbone, layout, input_norm, *size)
    if layout == "torch":
        assert any(isinstance(layer, SymmetricPadConv2D) for layer in encoder.backbone.layers)
    path = export.export_onnx(encoder, cfg, str(tmp_path / "model.onnx"))
    diffs = max_diffs(path, encoder, *size)
    print(f"{backbone} {layout} {input_norm} {size}: max |onnxruntime - Keras| by batch {diffs}")
    assert max(diffs.values()) <= TOLERANCE, diffs
    meta = export.read_onnx_metadata(path)
    assert meta["input_norm"] == input_norm and meta["backbone"] == backbone
    assert json.loads(meta["maskpre_metadata"])["backbone_layout"] == layout


# ---------------------------------------------------------------------------- contract


def test_graph_contract_and_metadata_props(cli_export):
    _, cfg, version_dir = cli_export
    path = os.path.join(version_dir, export.ONNX_FILE)
    sess = session(path)
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.type, inp.shape) == (
        "images",
        "tensor(float)",
        ["batch", HEIGHT, WIDTH, 3],
    )
    assert (out.name, out.type, out.shape) == ("embedding", "tensor(float)", ["batch", 256])
    props = sess.get_modelmeta().custom_metadata_map
    assert props == export.read_onnx_metadata(path)
    assert (props["height"], props["width"], props["embedding_dim"]) == ("64", "32", "256")
    assert props["input_norm"] == "torch" == cfg.model.input_norm
    assert json.loads(props["normalization"]) == describe("torch")
    assert props["config_digest"] == cfg.digest()
    assert props["backbone"] == "resnet_small"
    assert props["max_batch"] == "256"
    full = json.loads(props["maskpre_metadata"])
    assert full["train_config"] == cfg.to_dict()
    assert full["version"] == 1 and full["model_name"] == "maskpre"
    assert "images" in full["signatures"]["onnx"]["inputs"]
    assert sess.get_modelmeta().version == 1


def test_bad_inputs_raise_onnxruntime_invalid_argument(cli_export):
    sess = session(os.path.join(cli_export[2], export.ONNX_FILE))
    cases = [
        (np.zeros((HEIGHT, WIDTH, 3), np.float32), "Invalid rank for input: images Got: 3"),
        (np.zeros((1, HEIGHT, WIDTH, 3), np.float64), r"Actual: \(tensor\(double\)\)"),
        (np.zeros((1, HEIGHT, WIDTH, 3), np.uint8), r"Actual: \(tensor\(uint8\)\)"),
        (np.zeros((1, WIDTH, HEIGHT, 3), np.float32), "Got invalid dimensions for input: images"),
        (np.zeros((1, HEIGHT, WIDTH, 1), np.float32), "index: 3 Got: 1 Expected: 3"),
    ]
    for images, message in cases:
        with pytest.raises(InvalidArgument, match=message):
            sess.run(None, {"images": images})
    # No in-graph checks, unlike the SavedModel: an empty batch gives an empty output.
    (empty,) = sess.run(None, {"images": np.zeros((0, HEIGHT, WIDTH, 3), np.float32)})
    assert empty.shape == (0, 256)


def test_run_checked_refuses_what_the_graph_would_run(cli_export):
    from maskpre_tf.export.onnx import run_checked
    from maskpre_tf.inference import MAX_BATCH

    sess = session(os.path.join(cli_export[2], export.ONNX_FILE))
    images = pixels(3)
    np.testing.assert_array_equal(run_checked(sess, images), sess.run(None, {"images": images})[0])
    nan, inf = images.copy(), images.copy()
    nan[2, 5, 3, 1] = np.nan
    inf[0, 0, 0, 0] = -np.inf
    cases = [
        (images[:0], "images: empty batch"),
        (
            np.zeros((MAX_BATCH + 1, HEIGHT, WIDTH, 3), np.float32),
            rf"a batch of {MAX_BATCH + 1} images; send at most {MAX_BATCH}",
        ),
        (nan, r"image\(s\) \[2\] hold NaN or Inf"),
        (inf, r"image\(s\) \[0\] hold NaN or Inf"),
        # onnxruntime's own checks still answer behind it.
        (images.astype(np.float64), r"Actual: \(tensor\(double\)\)"),
        (images[0], "Invalid rank for input: images Got: 3"),
    ]
    for bad, message in cases:
        with pytest.raises(InvalidArgument, match=message):
            run_checked(sess, bad)
    full = np.zeros((MAX_BATCH, HEIGHT, WIDTH, 3), np.float32)
    assert run_checked(sess, full).shape == (MAX_BATCH, 256)


# ---------------------------------------------------------------------------- load


def test_concurrent_requests_through_run_checked(cli_export):
    """4 clients x 50 requests of good and bad pixel batches (benchmarks/serve_load_bench.py)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import serve_load_bench

    target = serve_load_bench.onnx_target(cli_export[2], seed=0)
    args = serve_load_bench.parse_args(["--clients=4", "--requests=200", "--warmup=0"])
    result = serve_load_bench.run_target(target, args)
    assert result["requests"] == 200 and not result["problems"]
    counts = result["counts"]
    assert counts["crash"] == counts["wrong"] == counts["accepted"] == 0, result["cases"]
    for row in result["cases"]:
        sent = sum(row["counts"].values())
        assert sent > 0 and row["counts"]["ok" if row["good"] else "refused"] == sent, row


@pytest.mark.slow
def test_load_bench_on_both_formats(cli_export):
    """The load test's command line: 8 clients x 400 requests on the SavedModel and the ONNX
    model of one version; every good request answered right, every bad one refused."""
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "serve_load_bench.py"),
            f"--model={cli_export[2]}",
            "--clients=8",
            "--requests=400",
            "--warmup=100",
            "--max_growth=100",  # a few seconds of load: memory is the full benchmark's goal
            "--json",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        cwd=ROOT,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("CPU: ")
    report = json.loads(lines[-1])
    names = [t["name"] for t in report["targets"]]
    assert names == ["savedmodel serving_default", "onnxruntime model.onnx"]
    for target in report["targets"]:
        counts = target["counts"]
        assert sum(counts.values()) == 500
        assert counts["crash"] == counts["wrong"] == counts["accepted"] == 0
        bad = sum(sum(r["counts"].values()) for r in target["cases"] if not r["good"])
        assert counts["refused"] == bad > 0


# ---------------------------------------------------------------------------- layout, errors


def test_onnx_only_version_layout_and_refusal_beside_saved_models(cli_export, tmp_path):
    teacher, cfg, version_dir = cli_export
    base = os.path.dirname(version_dir)
    assert {"saved_model.pb", "model.onnx"} <= set(os.listdir(version_dir))
    assert not [n for n in os.listdir(base) if n.startswith(".tmp")]
    with pytest.raises(UserError, match="is a TF Serving model base path"):
        export.export_encoder_formats(teacher, cfg, base, formats=["onnx"])
    assert sorted(os.listdir(base)) == ["1"]
    written = export.export_encoder_formats(teacher, cfg, str(tmp_path / "onnx"), ["onnx"])
    assert written["version_dir"] == str(tmp_path / "onnx" / "1")
    assert sorted(os.listdir(written["version_dir"])) == ["maskpre_metadata.json", "model.onnx"]
    assert not (tmp_path / "models.config").exists()
    with open(os.path.join(written["version_dir"], "maskpre_metadata.json")) as f:
        assert json.load(f)["config_digest"] == cfg.digest()


def test_format_and_opset_flag_errors(monkeypatch):
    assert export.parse_formats(["onnx", " savedmodel", "ONNX"]) == ("savedmodel", "onnx")
    with pytest.raises(UserError, match="--format=tflite: unknown format tflite"):
        export.parse_formats(["tflite"])
    with pytest.raises(UserError, match="--format is empty"):
        export.parse_formats([""])
    from maskpre_tf.export import onnx as onnx_export

    with pytest.raises(UserError, match="--onnx_opset=9"):
        onnx_export.check_opset(9)
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if the extra were not installed
    with pytest.raises(UserError, match=r"maskpre-tf\[onnx\]"):
        onnx_export.require_converter()
