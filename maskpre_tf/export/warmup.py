"""TF Serving warmup requests: the PredictionLog records replayed when a version is loaded.

TF Serving reads ``<version>/assets.extra/tf_serving_warmup_requests`` (TFRecords of
``PredictionLog``) and runs each request before the version serves traffic, so the first real
request does not pay for graph initialisation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from maskpre_tf.errors import UserError
from maskpre_tf.export.defaults import DEFAULT_WARMUP_BATCH_SIZES
from maskpre_tf.inference import (
    BYTES_INPUT,
    MAX_BATCH,
    PIXELS_INPUT,
    PIXELS_SIGNATURE,
    SERVING_SIGNATURE,
)

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def parse_batch_sizes(values: Sequence[str]) -> list[int]:
    """``--warmup_batch_sizes`` items (strings) → positive ints; blank items are dropped.

    Raises:
      UserError: an item is not an integer, not positive, or above
        :data:`~maskpre_tf.inference.MAX_BATCH` (the signatures would refuse that warmup
        request, and TF Serving does not load a version whose warmup fails).
    """
    try:
        sizes = [int(s) for s in values if s.strip()]
    except ValueError as err:
        raise UserError(
            f"--warmup_batch_sizes={','.join(values)}: expected comma-separated positive integers"
        ) from err
    if any(s < 1 for s in sizes):
        raise UserError("--warmup_batch_sizes: batch sizes must be positive")
    if any(s > MAX_BATCH for s in sizes):
        raise UserError(
            f"--warmup_batch_sizes={','.join(values)}: at most {MAX_BATCH}, the largest batch "
            "the serving signatures accept"
        )
    return sizes


def warmup_images(height: int, width: int, count: int, seed: int = 0) -> np.ndarray:
    """Deterministic smooth-noise RGB images for warmup requests.

    Returns:
      uint8 [count, height, width, 3].
    """
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(count, max(1, height // 8), max(1, width // 8), 3))
    resized = tf.image.resize(coarse.astype(np.float32), (height, width), method="bilinear")
    return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)


def warmup_requests(
    model_name: str,
    height: int,
    width: int,
    batch_sizes: Sequence[int] = DEFAULT_WARMUP_BATCH_SIZES,
    seed: int = 0,
) -> list:
    """PredictionLog records that exercise both embedding signatures at each batch size.

    For every batch size: a ``serving_default`` request with JPEG bytes (every other image PNG,
    so both decoders are initialised) and an ``embed_images`` request with float32 pixels.

    Returns:
      list of ``tensorflow_serving.apis.prediction_log_pb2.PredictionLog``.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    logs = []
    for size in batch_sizes:
        images = warmup_images(height, width, int(size), seed=seed + int(size))
        files = [
            (tf.io.encode_png(img) if i % 2 else tf.io.encode_jpeg(img, quality=90)).numpy()
            for i, img in enumerate(images)
        ]
        requests = [
            (SERVING_SIGNATURE, BYTES_INPUT, tf.make_tensor_proto(files, dtype=tf.string)),
            (
                PIXELS_SIGNATURE,
                PIXELS_INPUT,
                tf.make_tensor_proto(images.astype(np.float32), dtype=tf.float32),
            ),
        ]
        for signature, key, proto in requests:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
            )
            request.inputs[key].CopyFrom(proto)
            logs.append(
                prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request)
                )
            )
    return logs


def write_warmup_file(version_dir: str, logs: Sequence) -> str:
    """Write PredictionLog records as TFRecords to ``<version_dir>/assets.extra/...``.

    Returns:
      the path of the warmup file.
    """
    path = os.path.join(version_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def read_warmup_file(path: str) -> list:
    """Parse a warmup file back into PredictionLog messages (works in eager and graph mode)."""
    from tensorflow_serving.apis import prediction_log_pb2

    logs = []
    for record in tf.compat.v1.io.tf_record_iterator(path):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record)
        logs.append(log)
    return logs
