"""Tests of the deployment kit's clients (export/*.py) against stand-ins of TF Serving's APIs.

No TF Serving binary is available here, so the REST and gRPC clients talk to small in-process
stand-ins that decode requests with TF Serving's documented rules and run the signatures of a
loaded export; the gallery-search example ranks a gallery through the REST stand-in.
"""

from __future__ import annotations

import base64
import http.server
import importlib.util
import json
import os
import shutil
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf
from export_setup import ROOT, export_with_samples, read_bytes


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


@pytest.fixture(scope="module")
def exported(tmp_path_factory, synth_market):
    """(teacher, cfg, version_dir, sample image files) of one export (no warmup file)."""
    return export_with_samples(tmp_path_factory.mktemp("export"), synth_market, ())


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported[2])


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
