"""ONNX export of a trained encoder: one self-contained ``model.onnx`` for onnxruntime or TensorRT.

The graph is the pixel path of the SavedModel (``embed_images``), converted with tf2onnx:

* input ``images``: float32 [batch, H, W, 3], RGB pixels in 0–255; the batch dimension is
  dynamic (named ``batch``), H and W are fixed to the training input size;
* the encoder normalises the pixels itself with its weights' convention (``input_norm``: caffe,
  tf or torch, see :mod:`maskpre_tf.models.normalization`), so clients never normalise;
* output ``embedding``: float32 [batch, D], L2-normalised (cosine similarity = dot product).

The model's ``metadata_props`` carry what a client needs without this package: ``height``,
``width``, ``input_norm``, ``normalization`` (JSON of :func:`~maskpre_tf.models.normalization.
describe`), ``embedding_dim``, ``config_digest``, ``backbone`` and the other scalar fields of
:func:`maskpre_tf.inference.build_metadata` (JSON-encoded when not strings), plus
``maskpre_metadata``: the whole metadata JSON, training config included.

Unlike the SavedModel, the graph has no in-graph checks: onnxruntime itself rejects a wrong
rank, dtype or H/W (``InvalidArgument``), while NaN pixels give NaN embeddings, an empty batch
gives an empty [0, D] output and a batch of any size is run. :func:`run_checked` runs the model
with the SavedModel's other checks in front (:func:`check_pixels`: an empty batch, more than
:data:`~maskpre_tf.inference.MAX_BATCH` images, NaN or Inf pixels), refusing them with
onnxruntime's own ``InvalidArgument``, so a service catches one exception type.

The converter (``tf2onnx``, ``onnx``) is optional: ``pip install "maskpre-tf[onnx]"``.
"""

from __future__ import annotations

import json
import os
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from maskpre_tf.errors import UserError
from maskpre_tf.export.defaults import DEFAULT_OPSET, OPSETS
from maskpre_tf.inference import MAX_BATCH, OUTPUT_KEY, PIXELS_INPUT, build_metadata

if TYPE_CHECKING:
    import onnx

ONNX_FILE = "model.onnx"
ONNX_INPUT = PIXELS_INPUT  # "images"
ONNX_OUTPUT = OUTPUT_KEY  # "embedding"
BATCH_DIM = "batch"
METADATA_PROP = "maskpre_metadata"
INSTALL_HINT = 'pip install "maskpre-tf[onnx]" (tf2onnx, onnx, onnxruntime)'
# Scalar fields of build_metadata copied to metadata_props one by one; the rest (signatures,
# train_config) is in the full JSON under METADATA_PROP.
_SCALAR_FIELDS = (
    "model_name",
    "version",
    "height",
    "width",
    "channels",
    "color",
    "pixel_range",
    "input_norm",
    "normalization",
    "resize",
    "embedding_dim",
    "embedding_norm",
    "max_batch",
    "config_digest",
    "backbone",
    "backbone_layout",
    "maskpre_tf_version",
    "tensorflow_version",
    "exported_at",
)


def require_converter() -> ModuleType:
    """The ``tf2onnx`` module, after checking that it and ``onnx`` can be imported.

    Raises:
      UserError: either package is missing (the ``onnx`` extra is not installed).
    """
    try:
        import onnx  # noqa: F401
        import tf2onnx
    except ImportError as err:
        raise UserError(
            f"--format=onnx needs the ONNX converter, which is not installed ({err}); run "
            f"{INSTALL_HINT}, or leave onnx out of --format"
        ) from err
    return tf2onnx


def check_opset(opset: int) -> int:
    """``opset`` if tf2onnx can target it; UserError naming ``--onnx_opset`` otherwise."""
    if int(opset) not in OPSETS:
        raise UserError(
            f"--onnx_opset={opset}: the converter supports ONNX opsets {OPSETS.start}–"
            f"{OPSETS.stop - 1}; pass one of those (default {DEFAULT_OPSET})"
        )
    return int(opset)


def onnx_metadata(cfg, embedding_dim: int, model_name: str, version: int) -> dict[str, str]:
    """The ``metadata_props`` of an exported model: str → str.

    Args:
      cfg: the run's ``TrainConfig``.
      embedding_dim: D.
      model_name: the model's name (the export base path's name).
      version: the version number of the export.

    Returns:
      every field of :data:`_SCALAR_FIELDS` (strings as they are, numbers and structures as
      JSON), plus ``maskpre_metadata``: the full metadata JSON with the ONNX graph's contract
      under ``signatures``.
    """
    meta = build_metadata(cfg, embedding_dim, model_name, version)
    height, width = meta["height"], meta["width"]
    meta["signatures"] = {
        "onnx": {
            "inputs": {ONNX_INPUT: f"float32 [{BATCH_DIM}, {height}, {width}, 3] RGB 0-255"},
            "outputs": {ONNX_OUTPUT: f"float32 [{BATCH_DIM}, {embedding_dim}]"},
        }
    }
    props = {
        key: meta[key] if isinstance(meta[key], str) else json.dumps(meta[key])
        for key in _SCALAR_FIELDS
    }
    props[METADATA_PROP] = json.dumps(meta, sort_keys=True)
    return props


def _name_batch_dim(model: onnx.ModelProto) -> None:
    """Name the converter's symbolic batch dimension ``batch`` on the graph's inputs/outputs."""
    graph = model.graph
    symbols = {
        value.type.tensor_type.shape.dim[0].dim_param
        for value in list(graph.input) + list(graph.output)
        if value.type.tensor_type.shape.dim and value.type.tensor_type.shape.dim[0].dim_param
    }
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in symbols:
                dim.dim_param = BATCH_DIM


def convert_encoder(
    encoder: tf.Module, height: int, width: int, opset: int = DEFAULT_OPSET
) -> onnx.ModelProto:
    """Convert an encoder's pixel path to an ONNX model (``onnx.ModelProto``).

    Args:
      encoder: RGB pixels float32 [B, H, W, 3] in 0–255 → embeddings [B, D] (it normalises its
        input itself); the graph is traced in inference mode (``training=False``).
      height, width: H and W in pixels (fixed in the graph).
      opset: the ONNX opset to target (:data:`OPSETS`).

    Returns:
      the model: input ``images`` float32 [batch, H, W, 3], output ``embedding`` float32
      [batch, D], L2-normalised; no metadata yet (:func:`write_onnx` adds it).
    """
    tf2onnx = require_converter()
    opset = check_opset(opset)
    spec = tf.TensorSpec([None, int(height), int(width), 3], tf.float32, name=ONNX_INPUT)

    @tf.function(input_signature=[spec])
    def embed(images: tf.Tensor) -> dict[str, tf.Tensor]:
        # The same operations as ServingModule's embedding (cast, L2 normalisation).
        embedding = tf.cast(encoder(images, training=False), tf.float32)
        return {ONNX_OUTPUT: tf.math.l2_normalize(embedding, axis=-1)}

    model, _ = tf2onnx.convert.from_function(embed, input_signature=[spec], opset=opset)
    _name_batch_dim(model)
    return model


def write_onnx(
    model: onnx.ModelProto, path: str, metadata: dict[str, str], version: int | None = None
) -> str:
    """Add ``metadata`` to ``model``, check it, and write it to ``path`` atomically.

    The file is written to ``<path>.tmp<pid>`` in the same folder and renamed into place, so a
    reader never sees a half-written model.

    Args:
      model: an ``onnx.ModelProto`` (e.g. from :func:`convert_encoder`).
      path: the ``.onnx`` file to write; its folder must exist.
      metadata: str → str, stored as the model's ``metadata_props`` (replacing existing keys).
      version: stored as the model's ``model_version`` when given.

    Returns:
      ``path``.
    """
    import onnx

    kept = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    if version is not None:
        model.model_version = int(version)
    model.doc_string = (
        f"maskpre-tf re-ID encoder: {ONNX_INPUT} float32 [{BATCH_DIM}, H, W, 3] RGB 0-255 -> "
        f"{ONNX_OUTPUT} float32 [{BATCH_DIM}, D], L2-normalised"
    )
    onnx.checker.check_model(model)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, path)
    except OSError as err:
        raise UserError(f"{path}: cannot write the ONNX model ({err})") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def export_onnx(
    encoder: tf.Module,
    cfg,
    path: str,
    model_name: str = "maskpre",
    version: int = 1,
    opset: int = DEFAULT_OPSET,
) -> str:
    """Convert ``encoder`` and write it with its metadata to the ``.onnx`` file ``path``.

    Args:
      encoder: the deployed encoder (RGB pixels 0–255 [B, H, W, 3] → embeddings [B, D]).
      cfg: its ``TrainConfig`` (input size, normalisation, backbone, digest).
      path: the file to write (atomically); its folder must exist.
      model_name, version: recorded in the metadata.
      opset: the ONNX opset.

    Returns:
      ``path``.
    """
    height, width = cfg.data.height, cfg.data.width
    model = convert_encoder(encoder, height, width, opset)
    dim = int(model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value)
    return write_onnx(model, path, onnx_metadata(cfg, dim, model_name, version), version)


def read_onnx_metadata(path: str) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX model at ``path`` (str → str), read with ``onnx``.

    Raises:
      UserError: the file is missing or not an ONNX model.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(path, load_external_data=False)
    except (OSError, ValueError, DecodeError) as err:
        raise UserError(f"{path}: not a readable ONNX model ({err}); export it again") from err
    return {p.key: p.value for p in model.metadata_props}


def check_pixels(images: np.ndarray, max_batch: int = MAX_BATCH) -> None:
    """Refuse the pixel batches the ONNX graph would run without complaint.

    Checks float32 rank-4 input only (onnxruntime refuses another rank or dtype, and a wrong
    H, W or channel count, itself): at least one and at most ``max_batch`` images, every pixel
    finite.

    Args:
      images: float32 [n, H, W, 3], RGB 0–255.
      max_batch: the largest n accepted.

    Raises:
      onnxruntime's ``InvalidArgument`` (``onnxruntime.capi.onnxruntime_pybind11_state``), with
      the message naming the problem (and, for non-finite pixels, the images holding them).
    """
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.float32:
        return
    count = images.shape[0]
    if count == 0:
        raise InvalidArgument(f"{ONNX_INPUT}: empty batch; send at least one image")
    if count > max_batch:
        raise InvalidArgument(
            f"{ONNX_INPUT}: a batch of {count} images; send at most {max_batch} per request "
            "(split the batch)"
        )
    finite = np.isfinite(images.reshape(count, -1)).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise InvalidArgument(
            f"{ONNX_INPUT}: image(s) {bad[:16].tolist()} hold NaN or Inf; send RGB pixels in 0-255"
        )


def run_checked(model, images: np.ndarray, max_batch: int = MAX_BATCH) -> np.ndarray:
    """Embed ``images`` with onnxruntime on an exported ``model.onnx``, bad input refused first.

    Args:
      model: an ``onnxruntime.InferenceSession`` on the exported file.
      images: float32 [n, H, W, 3], RGB 0–255 (1 <= n <= ``max_batch``).
      max_batch: the largest batch accepted (:data:`~maskpre_tf.inference.MAX_BATCH`).

    Returns:
      float32 [n, D], L2-normalised embeddings.

    Raises:
      onnxruntime's ``InvalidArgument`` for every bad input: :func:`check_pixels`'s, and a wrong
      rank, dtype, size or channel count from onnxruntime itself.
    """
    images = np.asarray(images)
    check_pixels(images, max_batch)
    return model.run([ONNX_OUTPUT], {ONNX_INPUT: images})[0]
