"""Export a trained MaskPre teacher as a TF Serving model (SavedModel + warmup + models.config).

Command line::

    python -m maskpre_tf.export --checkpoint=RUN_DIR --export_dir=export/models/maskpre \\
        [--version=N]

It writes ``<export_dir>/<version>/``, the layout TF Serving polls: a SavedModel of
:class:`maskpre_tf.inference.ServingModule` with three signatures (every output key is
``embedding`` except the metadata one):

* ``serving_default``: ``image_bytes`` tf.string [None] (encoded JPEG or PNG files, any size) →
  decoded and resized to H×W in-graph with the training pipeline's own function
  (:func:`maskpre_tf.data.images.decode_image`), normalised by the encoder with its weights'
  convention (``input_norm`` in the metadata) → ``embedding`` float32 [None, D],
  L2-normalised. With TF Serving's REST API a client sends
  ``{"instances": [{"b64": "<base64 of the file>"}, ...]}``; with gRPC a PredictRequest whose
  ``image_bytes`` input is a DT_STRING tensor.
* ``embed_images``: ``images`` float32 [None, H, W, 3], RGB pixels 0–255 → ``embedding``.
* ``metadata``: no inputs → ``metadata_json`` tf.string scalar, the JSON of
  ``assets/maskpre_metadata.json`` (input size, normalisation, embedding dim, training config
  hash, backbone, package version, export time).

Bad requests (an empty batch, bytes that are not a JPEG/PNG file, a corrupt image, pixels of the
wrong size or with NaN/Inf) fail inside the graph with an InvalidArgument error carrying a message;
wrong dtypes are rejected by the signature itself. The process keeps running.

The version directory also holds ``assets.extra/tf_serving_warmup_requests`` (PredictionLog
records that TF Serving replays at load time, so the first real request is not slow). The export
is written to a hidden temporary directory next to the version directories and renamed into place,
so a server polling ``export_dir`` never sees a half-written version.

``models.config`` (a TF Serving ``--model_config_file``) is written next to ``export_dir``, i.e.
``<export_dir>/../models.config``: one file for every model exported under the same parent folder.
An existing file is updated in place (this model's entry added or replaced, others kept). Its
``base_path`` is the absolute path of ``export_dir`` unless ``--config_base_path`` is given (e.g.
``/models/maskpre`` for the official container with ``export/models`` mounted at ``/models``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from maskpre_tf import runs
from maskpre_tf.errors import UserError, quiet_library_logs, run_main
from maskpre_tf.inference import (
    BYTES_INPUT,
    METADATA_FILE,
    PIXELS_INPUT,
    PIXELS_SIGNATURE,
    SERVING_SIGNATURE,
    ServingModule,
    build_metadata,
)

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MODELS_CONFIG = "models.config"
DEFAULT_WARMUP_BATCH_SIZES = (1, 8)


# --------------------------------------------------------------------------------------------
# Warmup requests and models.config
# --------------------------------------------------------------------------------------------


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


def write_models_config(config_path: str, model_name: str, base_path: str) -> str:
    """Add or replace ``model_name`` in a TF Serving ``--model_config_file`` (text proto).

    Other models already listed are kept. Written atomically (temp file + rename).

    Args:
      config_path: the models.config file.
      model_name: the model's name (the ``/v1/models/<name>`` of the REST API).
      base_path: the directory holding the numbered versions, as the server sees it.

    Returns:
      the text written.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    if os.path.exists(config_path):
        try:
            with open(config_path) as f:
                text_format.Parse(f.read(), config)
        except (OSError, text_format.ParseError) as err:
            raise UserError(
                f"{config_path}: exists but is not a TF Serving model config ({err}); fix or "
                "delete it and export again"
            ) from err
    models = config.model_config_list.config
    kept = [m for m in models if m.name != model_name]
    del models[:]
    models.extend(kept)
    models.add(name=model_name, base_path=base_path, model_platform="tensorflow")
    text = text_format.MessageToString(config)
    tmp = f"{config_path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, config_path)
    return text


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def existing_versions(export_dir: str) -> list[int]:
    """Numeric version directories under ``export_dir``, sorted (empty if none/missing)."""
    if not os.path.isdir(export_dir):
        return []
    return sorted(
        int(name)
        for name in os.listdir(export_dir)
        if name.isdigit() and os.path.isdir(os.path.join(export_dir, name))
    )


def next_version(export_dir: str) -> int:
    """1 + the highest existing version under ``export_dir`` (1 when there is none)."""
    versions = existing_versions(export_dir)
    return versions[-1] + 1 if versions else 1


def export_encoder(
    encoder: tf.Module,
    cfg,
    export_dir: str,
    version: int | None = None,
    model_name: str | None = None,
    warmup_batch_sizes: Sequence[int] = DEFAULT_WARMUP_BATCH_SIZES,
    config_base_path: str | None = None,
) -> str:
    """Write ``encoder`` as version ``version`` of a TF Serving model under ``export_dir``.

    Args:
      encoder: the teacher encoder (normalised images [B, H, W, 3] → embeddings [B, D]).
      cfg: its ``TrainConfig`` (input size, backbone, digest).
      export_dir: the model's base path (holds numbered versions).
      version: the version number; None = next after the highest existing one.
      model_name: TF Serving model name; None = the basename of ``export_dir``.
      warmup_batch_sizes: batch sizes of the warmup requests (empty: no warmup file).
      config_base_path: ``base_path`` written to models.config; None = absolute export_dir.

    Returns:
      the path of the version directory written.
    """
    export_dir = os.path.abspath(export_dir)
    model_name = model_name or os.path.basename(export_dir.rstrip(os.sep))
    version = next_version(export_dir) if version is None else int(version)
    if version < 1:
        raise UserError(f"--version={version}: TF Serving versions are positive integers")
    final_dir = os.path.join(export_dir, str(version))
    if os.path.exists(final_dir):
        raise UserError(
            f"{final_dir} already exists; pass another --version or leave --version "
            "out to use the next free number"
        )
    try:
        os.makedirs(export_dir, exist_ok=True)
    except OSError as err:
        raise UserError(f"--export_dir={export_dir}: cannot create it ({err})") from err
    height, width = cfg.data.height, cfg.data.width
    dim = int(encoder(tf.zeros((1, height, width, 3)), training=False).shape[-1])
    metadata = build_metadata(cfg, dim, model_name, version)
    metadata_json = json.dumps(metadata, indent=2, sort_keys=True)
    # Hidden temporary directory on the same file system: TF Serving ignores non-numeric names,
    # and the final rename is atomic.
    tmp_dir = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_dir)
    try:
        staging = os.path.join(tmp_dir, "metadata")
        os.makedirs(staging)
        metadata_path = os.path.join(staging, METADATA_FILE)
        with open(metadata_path, "w") as f:
            f.write(metadata_json)
        module = ServingModule(encoder, height, width, metadata_json, metadata_path)
        saved = os.path.join(tmp_dir, "model")
        tf.saved_model.save(module, saved, signatures=module.signatures())
        if warmup_batch_sizes:
            write_warmup_file(saved, warmup_requests(model_name, height, width, warmup_batch_sizes))
        try:
            os.rename(saved, final_dir)
        except OSError as err:
            raise UserError(
                f"{final_dir}: could not move the export into place ({err}); was it "
                "created meanwhile? Pass another --version"
            ) from err
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    config_path = os.path.join(os.path.dirname(export_dir), MODELS_CONFIG)
    write_models_config(config_path, model_name, config_base_path or export_dir)
    return final_dir


def export_run(
    run_dir: str,
    export_dir: str,
    version: int | None = None,
    model_name: str | None = None,
    warmup_batch_sizes: Sequence[int] = DEFAULT_WARMUP_BATCH_SIZES,
    config_base_path: str | None = None,
    prefer_checkpoint: bool = False,
) -> str:
    """Export the EMA teacher of a training run directory; see :func:`export_encoder`.

    Returns:
      the path of the version directory written.
    """
    if not os.path.isdir(run_dir):
        raise UserError(
            f"--checkpoint={run_dir}: no such directory; expected the --output_dir "
            "of a maskpre_tf.train run"
        )
    teacher, cfg = runs.load_teacher(run_dir, prefer_checkpoint=prefer_checkpoint)
    return export_encoder(
        teacher,
        cfg,
        export_dir,
        version=version,
        model_name=model_name,
        warmup_batch_sizes=warmup_batch_sizes,
        config_base_path=config_base_path,
    )


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def define_flags() -> None:
    """Define this program's absl flags (called only when run as a program)."""
    from absl import flags

    flags.DEFINE_string(
        "checkpoint",
        None,
        "a training run's --output_dir (config.json + teacher.weights.h5 or checkpoints/)",
    )
    flags.DEFINE_string(
        "export_dir",
        "export/models/maskpre",
        "TF Serving model base path; versions are written as <export_dir>/<N>",
    )
    flags.DEFINE_integer("version", None, "version number (default: next free number)")
    flags.DEFINE_string("model_name", None, "TF Serving model name (default: export_dir's name)")
    flags.DEFINE_list(
        "warmup_batch_sizes",
        [str(b) for b in DEFAULT_WARMUP_BATCH_SIZES],
        "batch sizes of the warmup requests (empty: no warmup file)",
    )
    flags.DEFINE_string(
        "config_base_path",
        None,
        "base_path written to models.config "
        "(default: absolute export_dir; /models/<name> for the container)",
    )
    flags.DEFINE_bool(
        "prefer_checkpoint",
        False,
        "export the latest checkpoint even when teacher.weights.h5 exists",
    )
    flags.DEFINE_bool("debug", False, "show the traceback of user errors")


def main(argv: list[str]) -> None:
    """Program entry: export the run given by --checkpoint."""
    from absl import flags

    del argv
    values = flags.FLAGS
    quiet_library_logs()
    if not values.checkpoint:
        raise UserError("--checkpoint is required: the --output_dir of a maskpre_tf.train run")
    try:
        sizes = [int(s) for s in values.warmup_batch_sizes if s.strip()]
    except ValueError as err:
        raise UserError(
            f"--warmup_batch_sizes={','.join(values.warmup_batch_sizes)}: expected "
            "comma-separated positive integers"
        ) from err
    if any(s < 1 for s in sizes):
        raise UserError("--warmup_batch_sizes: batch sizes must be positive")
    path = export_run(
        values.checkpoint,
        values.export_dir,
        version=values.version,
        model_name=values.model_name,
        warmup_batch_sizes=sizes,
        config_base_path=values.config_base_path,
        prefer_checkpoint=values.prefer_checkpoint,
    )
    config_path = os.path.join(os.path.dirname(os.path.abspath(values.export_dir)), MODELS_CONFIG)
    print(f"exported {path}\nTF Serving config: {config_path}")


if __name__ == "__main__":
    from absl import app, flags

    define_flags()
    app.run(lambda argv: run_main(main, argv, debug=flags.FLAGS.debug))
