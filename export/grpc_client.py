"""gRPC client for a MaskPre model served by TF Serving: embed a folder of person crops.

Needs ``pip install "tensorflow-serving-api>=2.21,<2.22"`` (brings grpcio, the PredictRequest
protos and TensorFlow) and the sibling ``client_common.py``. Each call sends one
``PredictRequest`` whose ``image_bytes`` input is a DT_STRING tensor [n] of encoded JPEG/PNG files
to the ``serving_default`` signature and reads the float32 [n, D] ``embedding`` output of the
``PredictResponse``.

Command line::

    python export/grpc_client.py --server=localhost:8500 --model=maskpre \\
        --folder=crops/ --output=embeddings.npz
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import numpy as np

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import client_common  # noqa: E402  (a sibling file of this script)

# gRPC's default message limit is 4 MiB; a batch of 64 Market-size JPEGs is ~0.3 MiB, a batch of
# large camera frames can be much more.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def build_request(
    model: str,
    files: Sequence[bytes],
    signature_name: str = "serving_default",
    version: int | None = None,
):
    """A ``PredictRequest`` for a batch of encoded files (``image_bytes``: DT_STRING [n])."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs["image_bytes"].CopyFrom(
        tf.make_tensor_proto(list(files), dtype=tf.string, shape=[len(files)])
    )
    return request


def parse_response(response) -> np.ndarray:
    """Embeddings from a ``PredictResponse``: float32 [n, D]."""
    import tensorflow as tf

    if "embedding" not in response.outputs:
        raise KeyError(f"response has no 'embedding' output (has {list(response.outputs)})")
    return tf.make_ndarray(response.outputs["embedding"]).astype(np.float32)


def make_stub(server: str):
    """A PredictionService stub on an insecure channel to ``host:port``."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(
        server,
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def predict(
    stub, model: str, files: Sequence[bytes], version: int | None = None, timeout: float = 60.0
) -> np.ndarray:
    """Embed one batch of encoded files: float32 [n, D]. Raises ``grpc.RpcError`` on failure."""
    return parse_response(
        stub.Predict(build_request(model, files, version=version), timeout=timeout)
    )


def embed_folder(
    stub, model: str, folder: str, batch_size: int = 32, version: int | None = None
) -> tuple[list[str], np.ndarray, list[str]]:
    """Embed every crop in ``folder``.

    A batch rejected with INVALID_ARGUMENT (e.g. an undecodable file) is retried file by file;
    other errors (server unavailable, unknown model) propagate.

    Returns:
      (embedded paths, embeddings float32 [n, D], paths that failed).
    """
    import grpc

    return client_common.embed_folder(
        folder,
        batch_size,
        lambda files: predict(stub, model, files, version),
        grpc.RpcError,
        lambda err: err.details() if err.code() == grpc.StatusCode.INVALID_ARGUMENT else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Embed a folder through the gRPC API and save paths + embeddings to an .npz file."""
    import grpc

    return client_common.client_main(
        argv,
        __doc__.split("\n")[0],
        "localhost:8500",
        lambda args: embed_folder(
            make_stub(args.server), args.model, args.folder, args.batch_size, args.version
        ),
        grpc.RpcError,
        lambda err, args: f"{args.server}: {err.code().name}: {err.details()}",
    )


if __name__ == "__main__":
    sys.exit(main())
