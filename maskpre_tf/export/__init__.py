"""Export a trained MaskPre encoder as a TF Serving model (SavedModel + warmup + models.config).

Command line::

    python -m maskpre_tf.export --run_dir=RUN_DIR --export_dir=export/models/maskpre \\
        [--version=N] [--format=savedmodel|onnx|savedmodel,onnx]

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

``--format=onnx`` (or ``savedmodel,onnx``) writes ``<export_dir>/<version>/model.onnx`` too: the
pixel path (``images`` float32 [batch, H, W, 3] RGB 0–255 → ``embedding`` float32 [batch, D]) for
onnxruntime and TensorRT, with the metadata in the model's ``metadata_props``; see
:mod:`~maskpre_tf.export.onnx` and, for where each format goes, :mod:`~maskpre_tf.export.formats`.

Modules: :mod:`~maskpre_tf.export.saved_model` (versions, :func:`export_encoder`,
:func:`export_run`), :mod:`~maskpre_tf.export.warmup` (the warmup requests and their file),
:mod:`~maskpre_tf.export.models_config` (models.config), :mod:`~maskpre_tf.export.onnx` (the
ONNX conversion and file), :mod:`~maskpre_tf.export.formats` (one version in several formats)
and ``__main__`` (the command line).
Their public names are importable from here; each module loads when one of its names is first
used (:mod:`maskpre_tf.lazy`).
"""

from maskpre_tf.lazy import lazy_attributes

# Public name -> the submodule that defines it.
_MODULE_OF = {
    "MODELS_CONFIG": "models_config",
    "models_config_path": "models_config",
    "write_models_config": "models_config",
    "existing_versions": "saved_model",
    "export_encoder": "saved_model",
    "export_run": "saved_model",
    "next_version": "saved_model",
    "METADATA_FILE": "saved_model",
    "FORMATS": "formats",
    "export_encoder_formats": "formats",
    "export_run_formats": "formats",
    "parse_formats": "formats",
    "DEFAULT_OPSET": "onnx",
    "ONNX_FILE": "onnx",
    "check_pixels": "onnx",
    "run_checked": "onnx",
    "convert_encoder": "onnx",
    "export_onnx": "onnx",
    "onnx_metadata": "onnx",
    "read_onnx_metadata": "onnx",
    "write_onnx": "onnx",
    "DEFAULT_WARMUP_BATCH_SIZES": "warmup",
    "WARMUP_FILE": "warmup",
    "parse_batch_sizes": "warmup",
    "read_warmup_file": "warmup",
    "warmup_images": "warmup",
    "warmup_requests": "warmup",
    "write_warmup_file": "warmup",
}

__all__ = sorted(_MODULE_OF)
__getattr__, __dir__ = lazy_attributes(__name__, _MODULE_OF)
