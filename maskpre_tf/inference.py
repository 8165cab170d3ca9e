r"""Inference: the serving module every deployment path runs, and one embedder to load models.

:class:`ServingModule` wraps an encoder (RGB pixels 0–255 → L2-normalised embedding) in three
``tf.function``\ s with fixed signatures: ``serving_default`` (JPEG/PNG bytes, decoded and
resized in the graph; over-large, empty or undecodable images refused with
``InvalidArgumentError``), ``embed_images`` (pixels) and ``metadata``; both embedding
signatures refuse more than :data:`MAX_BATCH` images before any work. :func:`load_embedder`
loads a run or an export as an :class:`~maskpre_tf.embedder.Embedder`, the one interface of
evaluation, search, ``python -m maskpre_tf.embed`` and notebooks.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from maskpre_tf import __version__
from maskpre_tf.data.images import MAX_IMAGE_PIXELS, decode_image, image_size_checks
from maskpre_tf.embedder import Embedder
from maskpre_tf.errors import UserError
from maskpre_tf.models.encoder import ReidEncoder
from maskpre_tf.models.folding import FoldedEncoder
from maskpre_tf.models.normalization import describe

METADATA_FILE = "maskpre_metadata.json"
SERVING_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "embed_images"
METADATA_SIGNATURE = "metadata"
BYTES_INPUT = "image_bytes"
PIXELS_INPUT = "images"
OUTPUT_KEY = "embedding"
METADATA_KEY = "metadata_json"

#: The most images one request of ``serving_default`` or ``embed_images`` may carry. A service
#: sizes its memory by the request it accepts: without a cap, one request of a few thousand
#: small JPEGs (tens of MB) decodes and runs them all at once (5,000 crops took 14 s and 1.9 GB
#: on a 64x32 resnet_small; a full-size model needs many times the memory per image).
#: 256 is 8x the clients' default batch (32) and 4x gallery search's (64);
#: :class:`Embedder` splits larger batches itself.
MAX_BATCH = 256

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def build_metadata(cfg, embedding_dim: int, model_name: str, version: int) -> dict:
    """The metadata a serving client needs, as a JSON-serialisable dict.

    Args:
      cfg: the run's ``TrainConfig``.
      embedding_dim: D, length of the embedding vector.
      model_name: the TF Serving model name.
      version: the TF Serving version number.

    Returns:
      dict with ``height``/``width`` (pixels), ``input_norm`` and ``normalization`` (what the
      graph does to the 0–255 RGB pixels it receives; see
      :func:`maskpre_tf.models.normalization.describe`), ``embedding_dim``, ``config_digest``,
      ``backbone``, ``maskpre_tf_version``, ``exported_at`` (UTC, ISO 8601), the signature
      names and the full training config.
    """
    height, width = cfg.data.height, cfg.data.width
    return {
        "model_name": model_name,
        "version": int(version),
        "height": int(height),
        "width": int(width),
        "channels": 3,
        "color": "RGB",
        "pixel_range": [0.0, 255.0],
        "input_norm": cfg.model.input_norm,
        "normalization": describe(cfg.model.input_norm),
        "resize": "bilinear with antialiasing to height x width (no aspect-ratio padding)",
        "embedding_dim": int(embedding_dim),
        "embedding_norm": "L2 (unit length); cosine similarity = dot product",
        "max_batch": MAX_BATCH,
        "config_digest": cfg.digest(),
        "backbone": cfg.model.backbone,
        "backbone_layout": cfg.model.layout,
        "maskpre_tf_version": __version__,
        "tensorflow_version": tf.__version__,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "signatures": {
            SERVING_SIGNATURE: {
                "inputs": {
                    BYTES_INPUT: f"string [batch]: 1 to {MAX_BATCH} JPEG or PNG files, each "
                    f"image at most {MAX_IMAGE_PIXELS} pixels (height x width)"
                },
                "outputs": {OUTPUT_KEY: f"float32 [batch, {embedding_dim}]"},
            },
            PIXELS_SIGNATURE: {
                "inputs": {
                    PIXELS_INPUT: f"float32 [batch, {height}, {width}, 3] RGB 0-255, batch 1 "
                    f"to {MAX_BATCH}"
                },
                "outputs": {OUTPUT_KEY: f"float32 [batch, {embedding_dim}]"},
            },
            METADATA_SIGNATURE: {"inputs": {}, "outputs": {METADATA_KEY: "string []: JSON"}},
        },
        "train_config": cfg.to_dict(),
    }


class ServingModule(tf.Module):
    """The exported object: an encoder wrapped in the three serving functions.

    Attributes ``serve_bytes``, ``embed_images`` and ``metadata`` are ``tf.function``s with fixed
    input signatures (the ``serving_default``, ``embed_images`` and ``metadata`` signatures).
    Usable in-process too (e.g. gallery search on a training run embeds through ``serve_bytes``,
    exactly the graph TF Serving runs).

    Args:
      encoder: maps RGB pixels float32 [B, H, W, 3] in 0–255 to embeddings [B, D] (it
        normalises them itself). A :class:`~maskpre_tf.models.encoder.ReidEncoder` is served
        through its BatchNorm-folded copy (:mod:`maskpre_tf.models.folding`): the same
        embeddings to float round-off, with the folded weights as the module's variables.
      height, width: model input size in pixels.
      metadata_json: the JSON text returned by ``metadata``.
      metadata_path: optional file with the same JSON, tracked as a SavedModel asset.
    """

    def __init__(
        self,
        encoder: tf.Module,
        height: int,
        width: int,
        metadata_json: str,
        metadata_path: str | None = None,
    ):
        super().__init__(name="maskpre_serving")
        # Track the encoder's underlying tf.Variables, not the Keras model: a Keras 3 variable
        # exports as a second tf.Variable copied from the first, so a TF1-style loader (TF
        # Serving's SavedModelBundle) would restore the checkpoint into the copy while the
        # signature functions read the uninitialised original ("Could not find variable").
        # The encoder itself is kept in a plain list, which tf.Module does not track.
        if isinstance(encoder, ReidEncoder):  # serve with BatchNorm folded: ~1.5x on CPUs
            encoder = FoldedEncoder(encoder, frozen=True)
        self.encoder_variables = [getattr(v, "value", v) for v in encoder.weights]
        self._encoder = [encoder]
        self.height = int(height)
        self.width = int(width)
        self._metadata_json = metadata_json
        if metadata_path is not None:
            self.metadata_asset = tf.saved_model.Asset(metadata_path)
        self.serve_bytes = tf.function(
            self._serve_bytes, input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)]
        )
        self.embed_images = tf.function(
            self._embed_images,
            input_signature=[
                tf.TensorSpec([None, self.height, self.width, 3], tf.float32, name=PIXELS_INPUT)
            ],
        )
        self.metadata = tf.function(self._metadata, input_signature=[])

    def _metadata(self) -> dict[str, tf.Tensor]:
        """{"metadata_json": tf.string scalar}."""
        return {METADATA_KEY: tf.constant(self._metadata_json)}

    def _embed(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """RGB pixels float32 [B, H, W, 3] in 0–255 → {"embedding": float32 [B, D]}."""
        embedding = tf.cast(self._encoder[0](images, training=False), tf.float32)
        return {OUTPUT_KEY: tf.math.l2_normalize(embedding, axis=-1)}

    def _embed_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """RGB pixels float32 [B, H, W, 3] in 0–255 → {"embedding": float32 [B, D]}."""
        shape = tf.shape(images)
        want = f"[batch, {self.height}, {self.width}, 3]"
        checks = [
            tf.debugging.Assert(
                tf.equal(tf.rank(images), 4),
                [
                    f"{PIXELS_SIGNATURE}: '{PIXELS_INPUT}' must have rank 4, shape {want}; got "
                    "shape",
                    shape,
                ],
            ),
            tf.debugging.Assert(
                tf.reduce_all(tf.equal(tf.shape(images)[1:], [self.height, self.width, 3])),
                [
                    f"{PIXELS_SIGNATURE}: '{PIXELS_INPUT}' must have shape {want} (resize on the "
                    f"client, or send encoded files to '{SERVING_SIGNATURE}'); got shape",
                    shape,
                ],
            ),
            tf.debugging.Assert(
                shape[0] > 0, [f"{PIXELS_SIGNATURE}: empty batch; send at least one image"]
            ),
            tf.debugging.Assert(
                shape[0] <= MAX_BATCH,
                [
                    f"{PIXELS_SIGNATURE}: a batch of",
                    shape[0],
                    f"images; send at most {MAX_BATCH} per request (split the batch)",
                ],
            ),
            tf.debugging.Assert(
                tf.reduce_all(tf.math.is_finite(images)),
                [
                    f"{PIXELS_SIGNATURE}: '{PIXELS_INPUT}' holds NaN or Inf; send RGB pixels in "
                    "0-255"
                ],
            ),
        ]
        with tf.control_dependencies(checks):
            images = tf.identity(images)
        return self._embed(images)

    def _serve_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        """Encoded JPEG/PNG files tf.string [B] → {"embedding": float32 [B, D]}."""
        is_jpeg = tf.equal(tf.strings.substr(image_bytes, 0, len(_JPEG_MAGIC)), _JPEG_MAGIC)
        is_png = tf.equal(tf.strings.substr(image_bytes, 0, len(_PNG_MAGIC)), _PNG_MAGIC)
        bad = tf.reshape(tf.where(tf.logical_not(is_jpeg | is_png)), [-1])
        checks = [
            tf.debugging.Assert(
                tf.equal(tf.rank(image_bytes), 1),
                [
                    f"{SERVING_SIGNATURE}: '{BYTES_INPUT}' must be a 1-D batch of encoded files; "
                    "got shape",
                    tf.shape(image_bytes),
                ],
            ),
            tf.debugging.Assert(
                tf.size(image_bytes) > 0,
                [f"{SERVING_SIGNATURE}: empty batch; send at least one JPEG or PNG file"],
            ),
            tf.debugging.Assert(
                tf.size(image_bytes) <= MAX_BATCH,
                [
                    f"{SERVING_SIGNATURE}: a batch of",
                    tf.size(image_bytes),
                    f"files; send at most {MAX_BATCH} per request (split the batch)",
                ],
            ),
            tf.debugging.Assert(
                tf.equal(tf.size(bad), 0),
                [
                    f"{SERVING_SIGNATURE}: '{BYTES_INPUT}' element(s)",
                    bad,
                    "are empty or not JPEG or PNG files (wrong leading bytes); send the raw "
                    'file bytes (REST: {"b64": base64 of the file})',
                ],
                summarize=16,
            ),
        ]
        with tf.control_dependencies(checks):
            image_bytes = tf.identity(image_bytes)
        # Sizes from the headers first: a decompression bomb is refused before any decoding.
        with tf.control_dependencies(image_size_checks(image_bytes, SERVING_SIGNATURE)):
            image_bytes = tf.identity(image_bytes)
        images = tf.map_fn(
            lambda data: decode_image(data, self.height, self.width),
            image_bytes,
            fn_output_signature=tf.TensorSpec([self.height, self.width, 3], tf.float32),
        )
        return self._embed(images)

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """The signature map for ``tf.saved_model.save``."""
        return {
            SERVING_SIGNATURE: self.serve_bytes.get_concrete_function(),
            PIXELS_SIGNATURE: self.embed_images.get_concrete_function(),
            METADATA_SIGNATURE: self.metadata.get_concrete_function(),
        }


def _hash_files(paths: Sequence[str]) -> str:
    """SHA-256 (hex) of the concatenated contents of ``paths``."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def find_saved_model(path: str) -> str | None:
    """The SavedModel directory at ``path``: itself, or its highest numeric version subfolder."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if not os.path.isdir(path):
        return None
    names = [n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n, "saved_model.pb"))]
    versions = sorted(int(name) for name in names if name.isdigit())
    return os.path.join(path, str(versions[-1])) if versions else None


def load_embedder(model: str | os.PathLike, flag: str = "--saved_model") -> Embedder:
    """Load a training run directory or an exported SavedModel as an :class:`Embedder`.

    Both embed through the serving graph (:class:`ServingModule`): a run's features equal
    those its export serves, to float round-off. Loading imports TensorFlow and builds the
    model (seconds); the :class:`Embedder` methods then embed pixels, files or a folder.

    Args:
      model: a run's ``--run_dir`` (config.json + weights), a SavedModel version folder, or
        an export base path (its highest version is used).
      flag: the command-line flag that named ``model``, for error messages.

    Raises:
      UserError: ``model`` is neither, or its files are incomplete.
    """
    from maskpre_tf import runs

    model = os.fspath(model)
    if os.path.isfile(os.path.join(model, runs.CONFIG_FILE)):
        return _embedder_from_run(model)
    saved = find_saved_model(model)
    if saved is None:
        raise UserError(
            f"{flag}={model}: neither a training run directory (config.json) nor a SavedModel "
            "(saved_model.pb, or numbered version folders holding one); pass the --run_dir "
            "of maskpre_tf.train or the --export_dir of maskpre_tf.export"
        )
    return _embedder_from_saved_model(saved, flag)


def _in_slices(embed: Callable, concat: Callable) -> Callable:
    """``embed`` applied to slices of at most :data:`MAX_BATCH` images, results concatenated.

    Args:
      embed: a batch of n <= MAX_BATCH images (pixels [n, ...] or a list of n files) → [n, D].
      concat: joins the slices' results along axis 0 (``np.concatenate`` or ``tf.concat``).
    """

    def sliced(images: tf.Tensor | np.ndarray | Sequence[bytes]) -> tf.Tensor | np.ndarray:
        count = images.shape[0] if hasattr(images, "shape") else len(images)
        if count is None or count <= MAX_BATCH:
            return embed(images)
        return concat([embed(images[i : i + MAX_BATCH]) for i in range(0, count, MAX_BATCH)], 0)

    return sliced


def _embedder_from_run(run_dir: str) -> Embedder:
    """An :class:`Embedder` on a run's deployed encoder, through the graph the export serves."""
    from maskpre_tf import runs

    encoder, cfg = runs.load_encoder(run_dir)
    digest = hashlib.sha256()
    for weight in encoder.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    meta = build_metadata(cfg, encoder.channels, "search", 0)
    module = ServingModule(encoder, cfg.data.height, cfg.data.width, json.dumps(meta))

    def embed_pixels(images: tf.Tensor) -> tf.Tensor:
        return module.embed_images(tf.cast(images, tf.float32))[OUTPUT_KEY]

    def embed_bytes(files: Sequence[bytes]) -> np.ndarray:
        return module.serve_bytes(tf.constant(list(files), tf.string))[OUTPUT_KEY].numpy()

    return Embedder(
        _in_slices(embed_pixels, tf.concat),
        _in_slices(embed_bytes, np.concatenate),
        cfg.data.height,
        cfg.data.width,
        digest.hexdigest(),
        f"training run {run_dir} ({cfg.model.backbone}, {cfg.data.height}x{cfg.data.width})",
    )


def _embedder_from_saved_model(saved: str, flag: str) -> Embedder:
    """An :class:`Embedder` on an exported SavedModel's signatures."""
    try:
        loaded = tf.saved_model.load(saved)
        by_bytes = loaded.signatures[SERVING_SIGNATURE]
        by_pixels = loaded.signatures[PIXELS_SIGNATURE]
        meta = json.loads(loaded.signatures[METADATA_SIGNATURE]()[METADATA_KEY].numpy().decode())
    except (OSError, ValueError, KeyError, tf.errors.OpError) as err:
        cause = " ".join(str(err).split("\n", 1)[0].split())[:300]  # TF's first line
        raise UserError(
            f"{flag}={saved}: not a complete SavedModel written by maskpre_tf.export ({cause}); "
            "export the run again (python -m maskpre_tf.export) or copy the whole version folder"
        ) from err
    files = [os.path.join(saved, "saved_model.pb")]
    variables = os.path.join(saved, "variables")
    if os.path.isdir(variables):
        files += sorted(os.path.join(variables, name) for name in os.listdir(variables))

    def embed_pixels(images: tf.Tensor) -> tf.Tensor:
        return by_pixels(**{PIXELS_INPUT: tf.cast(images, tf.float32)})[OUTPUT_KEY]

    def embed_bytes(batch: Sequence[bytes]) -> np.ndarray:
        return by_bytes(**{BYTES_INPUT: tf.constant(list(batch), tf.string)})[OUTPUT_KEY].numpy()

    return Embedder(
        _in_slices(embed_pixels, tf.concat),
        _in_slices(embed_bytes, np.concatenate),
        int(meta["height"]),
        int(meta["width"]),
        _hash_files(files),
        f"SavedModel {saved} ({meta.get('backbone')}, {meta['height']}x{meta['width']})",
    )
