"""Tests of the TF Serving export: signatures, numerical equality, warmup, bad input, clients.

No ``tensorflow_model_server`` binary is available here, so the export is checked the ways a
server would use it: ``saved_model_cli``, a fresh-process ``tf.saved_model.load``, a TF1-style
session over the MetaGraph's SignatureDefs (how TF Serving's SavedModelBundle runs it), the
warmup replay, and the REST/gRPC clients talking to small in-process stand-ins that decode
requests with TF Serving's documented rules and run the loaded signatures.
"""

from __future__ import annotations

import base64
import http.server
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import tensorflow as tf

from maskpre_tf import export, runs
from maskpre_tf.config import TrainConfig
from maskpre_tf.data.images import decode_image
from maskpre_tf.errors import UserError
from maskpre_tf.models.maskpre import build_encoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEIGHT, WIDTH = 64, 32


def _load_script(name: str):
    """Import a script of the deployment kit (export/<name>.py) as a module."""
    path = os.path.join(ROOT, "export", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"export_kit_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(path))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(os.path.dirname(path))
    return module


def make_run(run_dir: str, seed: int = 0, input_norm: str = "torch"):
    """A finished training run's layout with a seeded, non-trivial teacher (BN stats too)."""
    cfg = TrainConfig().replace(
        backbone="resnet_small",
        backbone_weights="none",
        input_norm=input_norm,
        height=HEIGHT,
        width=WIDTH,
        output_dir=run_dir,
    )
    teacher = build_encoder(cfg.model, (HEIGHT, WIDTH, 3), name="teacher")
    rng = np.random.default_rng(seed)
    for var in teacher.weights:
        value = var.numpy()
        if "moving_variance" in var.path:
            value = rng.uniform(0.5, 2.0, value.shape)
        elif "moving_mean" in var.path:
            value = rng.normal(0.0, 0.2, value.shape)
        else:
            value = value * rng.uniform(0.8, 1.2, value.shape)
        var.assign(value.astype(np.float32))
    os.makedirs(run_dir, exist_ok=True)
    runs.write_config(cfg, run_dir)
    teacher.save_weights(os.path.join(run_dir, runs.TEACHER_WEIGHTS))
    return teacher, cfg


@pytest.fixture(scope="module")
def exported(tmp_path_factory, synth_market):
    """(teacher, cfg, version_dir, sample image files) of one export of a tiny run."""
    tmp = tmp_path_factory.mktemp("export")
    teacher, cfg = make_run(str(tmp / "run"))
    version_dir = export.export_run(str(tmp / "run"), str(tmp / "models" / "maskpre"))
    query = os.path.join(synth_market, "query")
    files = sorted(os.path.join(query, name) for name in os.listdir(query))[:5]
    # A PNG and a grayscale JPEG too: every decoder path of the serving graph.
    from PIL import Image

    with Image.open(files[0]) as img:
        img.save(tmp / "colour.png")
        img.convert("L").save(tmp / "gray.jpg", quality=90)
    files += [str(tmp / "colour.png"), str(tmp / "gray.jpg")]
    return teacher, cfg, version_dir, files


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported[2])


def keras_embeddings(teacher, files):
    """The Keras teacher's embeddings of files, decoded by the training pipeline."""
    pixels = tf.stack([decode_image(tf.io.read_file(f), HEIGHT, WIDTH) for f in files])
    return teacher(pixels, training=False).numpy(), pixels.numpy()


def read_bytes(files):
    out = []
    for path in files:
        with open(path, "rb") as f:
            out.append(f.read())
    return out


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
        (lambda: embed(images=tf.zeros((1, HEIGHT, WIDTH, 3), tf.int32)), "float"),
        (lambda: serve(image_bytes=tf.zeros((1,), tf.float32)), "string"),
    ]
    for call, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            call()
    # The model still answers afterwards.
    assert serve(image_bytes=tf.constant(good))["embedding"].shape == (1, 256)


def test_cli_reports_user_errors_without_traceback(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "maskpre_tf.export",
            f"--checkpoint={tmp_path / 'missing'}",
            f"--export_dir={tmp_path / 'models' / 'maskpre'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert f"error: --checkpoint={tmp_path / 'missing'}: no such directory" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "models").exists()


# ---------------------------------------------------------------------------- clients


def _signature_for(loaded, name):
    """The loaded signature that TF Serving would pick for ``name`` ("" = serving_default)."""
    return loaded.signatures[name or "serving_default"]


def _json_to_array(value, dtype):
    """TF Serving's JSON → tensor rule: {"b64": ...} is base64 binary data for DT_STRING."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_json_to_array(v, dtype) for v in value]
    return value


def serve_rest(loaded, model_name, path, body):
    """What TF Serving's REST predict handler answers: (HTTP status, JSON body)."""
    prefix, _, verb = path.rpartition(":")
    parts = prefix.strip("/").split("/")
    if verb != "predict" or parts[:2] != ["v1", "models"] or len(parts) not in (3, 5):
        return 404, {"error": f"Malformed request: POST {path}"}
    if parts[2] != model_name:
        return 404, {"error": f"Servable not found for request: Latest({parts[2]})"}
    try:
        signature = _signature_for(loaded, body.get("signature_name", ""))
    except KeyError:
        return 400, {"error": "Serving signature name not found"}
    ((input_name, spec),) = signature.structured_input_signature[1].items()
    if "instances" in body:
        rows = body["instances"]
        values = [
            row[input_name] if isinstance(row, dict) and input_name in row else row for row in rows
        ]
    else:
        values = body["inputs"]
        values = values[input_name] if isinstance(values, dict) else values
    try:
        tensor = tf.constant(_json_to_array(values, spec.dtype), dtype=spec.dtype)
        outputs = signature(**{input_name: tensor})
    except tf.errors.InvalidArgumentError as err:
        return 400, {"error": err.message}
    (output,) = outputs.values()
    key = "predictions" if "instances" in body else "outputs"
    return 200, {key: output.numpy().tolist()}


@pytest.fixture(scope="module")
def rest_server(loaded):
    """A local HTTP stand-in for TF Serving's REST API, backed by the loaded export."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, answer = serve_rest(loaded, "maskpre", self.path, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def crops(exported, tmp_path):
    """A folder of crops with one corrupt file; returns (folder, good files in order)."""
    folder = tmp_path / "crops"
    folder.mkdir()
    files = exported[3]
    for path in files:
        shutil.copy(path, folder / os.path.basename(path))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    good = sorted(str(folder / os.path.basename(p)) for p in files)
    return str(folder), good


def test_rest_client_request_roundtrip(loaded, rest_server, crops):
    rest = _load_script("rest_client")
    folder, good = crops
    body = rest.build_request(read_bytes(good[:2]))
    assert body["signature_name"] == "serving_default"
    assert base64.b64decode(body["instances"][1]["b64"]) == read_bytes(good[1:2])[0]
    assert rest.predict_url("http://h:8501/", "maskpre", 3) == (
        "http://h:8501/v1/models/maskpre/versions/3:predict"
    )
    paths, embeddings, failed = rest.embed_folder(rest_server, "maskpre", folder, batch_size=4)
    assert paths == good and failed == [os.path.join(folder, "broken.jpg")]
    direct = loaded.signatures["serving_default"](image_bytes=tf.constant(read_bytes(good)))
    np.testing.assert_allclose(embeddings, direct["embedding"].numpy(), atol=1e-5)
    with pytest.raises(rest.ServingError, match="not JPEG or PNG") as err:
        rest.predict(rest_server, "maskpre", [b"plain text"])
    assert err.value.status == 400
    with pytest.raises(rest.ServingError) as err:
        rest.predict(rest_server, "unknown", read_bytes(good[:1]))
    assert err.value.status == 404
    # Columnar responses parse too.
    assert rest.parse_response({"outputs": [[1.0, 0.0]]}).shape == (1, 2)


def test_grpc_client_request_roundtrip(loaded, crops):
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    grpc_client = _load_script("grpc_client")

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 (gRPC's naming)
            if request.model_spec.name != "maskpre":
                context.abort(grpc.StatusCode.NOT_FOUND, "Servable not found")
            signature = _signature_for(loaded, request.model_spec.signature_name)
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            try:
                outputs = signature(**inputs)
            except tf.errors.InvalidArgumentError as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, err.message)
            response = predict_pb2.PredictResponse()
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        folder, good = crops
        request = grpc_client.build_request("maskpre", read_bytes(good[:3]), version=4)
        assert request.model_spec.signature_name == "serving_default"
        assert request.model_spec.version.value == 4
        assert list(tf.make_ndarray(request.inputs["image_bytes"])) == read_bytes(good[:3])
        stub = grpc_client.make_stub(f"127.0.0.1:{port}")
        paths, embeddings, failed = grpc_client.embed_folder(stub, "maskpre", folder, 4)
        assert paths == good and failed == [os.path.join(folder, "broken.jpg")]
        direct = loaded.signatures["serving_default"](image_bytes=tf.constant(read_bytes(good)))
        np.testing.assert_allclose(embeddings, direct["embedding"].numpy(), atol=1e-5)
        with pytest.raises(grpc.RpcError) as err:
            grpc_client.predict(stub, "unknown", read_bytes(good[:1]))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop(None)


def test_gallery_search_example_over_rest(rest_server, crops, tmp_path, capsys):
    search = _load_script("gallery_search")
    folder, good = crops
    rows, scores = search.rank_gallery(
        np.eye(3, dtype=np.float32), np.array([[0.1, 0.9, 0.2]], np.float32), top_k=2
    )
    assert rows.tolist() == [[1, 2]] and np.allclose(scores, [[0.9, 0.2]])
    cache = tmp_path / "gallery.npz"
    args = [
        "--server",
        rest_server,
        "--gallery",
        folder,
        "--query",
        good[2],
        "--top_k",
        "3",
        "--cache",
        str(cache),
    ]
    assert search.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == good[2]
    rank1 = lines[1].split()
    assert rank1[0] == "1" and rank1[2] == good[2] and float(rank1[1]) > 0.999
    assert cache.is_file()
    assert search.main(args) == 0  # served from the cache this time
    assert capsys.readouterr().out.splitlines()[:2] == lines[:2]
