"""Embedding images with a loaded model, from a notebook or a service.

:func:`maskpre_tf.load_embedder` (:func:`maskpre_tf.inference.load_embedder`) loads a training
run's folder or an exported SavedModel as an :class:`Embedder`; its methods turn pixels, image
files or a folder of crops into L2-normalised float32 features [N, D] (cosine similarity = dot
product)::

    from maskpre_tf import load_embedder
    embedder = load_embedder("runs/market")           # a run's --run_dir, or a SavedModel
    paths = embedder.image_files("crops/")            # the folder's JPEG/PNG files, sorted
    features = embedder.embed("crops/")               # float32 [len(paths), D], unit rows
    similarity = features @ embedder.embed(["query.jpg"]).T   # [len(paths), 1]

Every input goes through the serving graph of :class:`maskpre_tf.inference.ServingModule`:
files through ``serving_default`` (decode, resize, encoder), pixel arrays resized by
:func:`maskpre_tf.data.images.resize_image` (the resize of ``serving_default``) and then
``embed_images``. A uint8 array and the PNG file of it therefore get the same features, and
those of a run equal what its exported SavedModel serves, to float round-off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from maskpre_tf.data.datasets.files import IMAGE_EXTENSIONS, list_images
from maskpre_tf.data.images import resize_image
from maskpre_tf.errors import UserError

#: Images per forward pass of the :class:`Embedder` methods unless told otherwise.
DEFAULT_BATCH_SIZE = 64
#: Inputs of more images than this report their progress (every 10 %) on stderr.
PROGRESS_MIN_IMAGES = 1000

Images = np.ndarray | Sequence[np.ndarray]
Paths = Sequence[str | os.PathLike]


@dataclass
class Embedder:
    """A loaded model: RGB pixels or encoded files in, L2-normalised embeddings out.

    Made by :func:`maskpre_tf.inference.load_embedder`. The methods :meth:`embed`,
    :meth:`embed_arrays`, :meth:`embed_files` and :meth:`embed_folder` are the API; they batch
    their input (``batch_size`` images per forward pass) and return float32 [N, D] numpy rows
    of unit length, in input order.

    Attributes:
      embed_pixels: float32 [n, H, W, 3] RGB in 0–255 → float32 [n, D] (a tensor function).
      embed_bytes: list of encoded JPEG/PNG files (length n ≥ 1) → float32 [n, D];
        raises ``tf.errors.InvalidArgumentError`` when a file cannot be decoded.
      Both send a batch of more than :data:`~maskpre_tf.inference.MAX_BATCH` images in slices
      of that many.
      height, width: the model's input size in pixels.
      identity: hex digest of the model's content (cache key).
      description: the model's path and kind, for reports.
    """

    embed_pixels: Callable[[tf.Tensor], tf.Tensor]
    embed_bytes: Callable[[Sequence[bytes]], np.ndarray]
    height: int
    width: int
    identity: str
    description: str

    def embed(
        self,
        images: Images | Paths | str | os.PathLike,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = True,
    ) -> np.ndarray:
        """Features of pixels, image files or a folder; see the ``embed_*`` methods.

        Args:
          images: a folder (→ :meth:`embed_folder`), one image file or a list of them
            (→ :meth:`embed_files`), or uint8 pixels (→ :meth:`embed_arrays`).
          batch_size: images per forward pass.
          progress: report progress on stderr for inputs of over 1,000 images.

        Returns:
          float32 [N, D], rows L2-normalised, in input order (a folder: :meth:`image_files`).
        """
        if isinstance(images, str | os.PathLike):
            if os.path.isdir(images):
                return self.embed_folder(images, batch_size, progress)
            return self.embed_files([images], batch_size, progress)
        if isinstance(images, np.ndarray) or _is_array_list(images):
            return self.embed_arrays(images, batch_size, progress)
        return self.embed_files(images, batch_size, progress)

    def embed_arrays(
        self, images: Images, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True
    ) -> np.ndarray:
        """Features of decoded RGB images of any size.

        Each image is resized to the model's height × width as ``serving_default`` resizes a
        decoded file (:func:`~maskpre_tf.data.images.resize_image`), so an array and its PNG
        file get the same features.

        Args:
          images: uint8 RGB (0–255) [B, h, w, 3], one image [h, w, 3], or a list of [h_i, w_i, 3]
            images of different sizes.
          batch_size: images per forward pass.
          progress: report progress on stderr for more than 1,000 images.

        Returns:
          float32 [B, D] (B = 1 for one image), rows L2-normalised.

        Raises:
          UserError: not uint8, not RGB, or an empty image.
        """
        batch = _as_image_list(images)

        def embed_batch(start: int, stop: int) -> np.ndarray:
            chunk = batch[start:stop]
            if all(image.shape == chunk[0].shape for image in chunk):
                pixels = resize_image(np.stack(chunk), self.height, self.width)
            else:
                pixels = tf.stack([resize_image(i, self.height, self.width) for i in chunk])
            return np.asarray(self.embed_pixels(pixels), np.float32)

        return _in_batches(len(batch), batch_size, embed_batch, progress)

    def embed_files(
        self, paths: Paths, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True
    ) -> np.ndarray:
        """Features of JPEG/PNG files, read and decoded by the serving graph (``serving_default``).

        Args:
          paths: image files (JPEG or PNG, whatever their extension).
          batch_size: files read and embedded per forward pass.
          progress: report progress on stderr for more than 1,000 files.

        Returns:
          float32 [len(paths), D], rows L2-normalised, in the order of ``paths``.

        Raises:
          UserError: a file is missing, unreadable or not a decodable JPEG/PNG (named).
        """
        paths = [os.fspath(p) for p in paths]

        def embed_batch(start: int, stop: int) -> np.ndarray:
            chunk = paths[start:stop]
            files = [_read(path) for path in chunk]
            try:
                return self.embed_bytes(files).astype(np.float32)
            except tf.errors.InvalidArgumentError as err:
                raise _decode_error(self.embed_bytes, chunk, files, err) from None

        return _in_batches(len(paths), batch_size, embed_batch, progress)

    def embed_folder(
        self,
        folder: str | os.PathLike,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = True,
    ) -> np.ndarray:
        """Features of every JPEG/PNG file under ``folder``, in the order of :meth:`image_files`.

        Returns:
          float32 [N, D], rows L2-normalised.

        Raises:
          UserError: the folder is missing or holds no JPEG/PNG file, or a file is unusable.
        """
        paths = self.image_files(folder)
        if not paths:
            raise UserError(
                f"{os.fspath(folder)}: no .jpg/.jpeg/.png files found (hidden files are "
                "skipped); point at a folder of person crops"
            )
        return self.embed_files(paths, batch_size, progress)

    @staticmethod
    def image_files(folder: str | os.PathLike) -> list[str]:
        """The JPEG/PNG files under ``folder`` (recursive, hidden files skipped), sorted.

        Paths start with ``folder`` as given; links to folders are followed, each real folder
        once. GIF/BMP/WebP files are left out: the serving graph takes JPEG and PNG only.

        Raises:
          UserError: ``folder`` is not a directory.
        """
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise UserError(f"{folder}: no such directory; pass a folder of JPEG/PNG crops")
        paths, _ = list_images(folder, recursive=True)
        return [path for path in paths if path.lower().endswith(IMAGE_EXTENSIONS)]


def _is_array_list(images: object) -> bool:
    """Whether ``images`` is a non-empty list/tuple of numpy arrays."""
    return (
        isinstance(images, list | tuple)
        and len(images) > 0
        and all(isinstance(image, np.ndarray) for image in images)
    )


def _as_image_list(images: Images) -> list[np.ndarray]:
    """``images`` as a list of uint8 [h, w, 3] arrays; UserError naming what is wrong."""
    if isinstance(images, np.ndarray):
        images = [images] if images.ndim == 3 else list(images)
    if not images:
        raise UserError("no images given; pass uint8 RGB pixels [B, h, w, 3] or [h, w, 3]")
    for image in images:
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise UserError(
                f"images of dtype {image.dtype}: expected uint8 RGB in 0-255; convert them "
                "(e.g. np.clip(x, 0, 255).astype(np.uint8))"
            )
        if image.ndim != 3 or image.shape[-1] != 3 or 0 in image.shape:
            raise UserError(
                f"an image of shape {image.shape}: expected [h, w, 3] RGB with h, w >= 1 (a "
                "batch [B, h, w, 3]); drop alpha with x[..., :3], stack gray as 3 channels"
            )
    return [np.asarray(image) for image in images]


def _in_batches(
    count: int,
    batch_size: int,
    embed_batch: Callable[[int, int], np.ndarray],
    progress: bool,
) -> np.ndarray:
    """``embed_batch(start, stop)`` over ``count`` items, joined; progress every 10 %.

    Returns:
      float32 [count, D].
    """
    if batch_size < 1:
        raise UserError(f"batch_size={batch_size}: expected a positive number of images")
    if count == 0:
        raise UserError("no images given; pass at least one image")
    report = progress and count > PROGRESS_MIN_IMAGES
    chunks, reported = [], 0
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        chunks.append(embed_batch(start, stop))
        tenths = 10 * stop // count
        if report and tenths > reported:
            reported = tenths
            print(f"embedded {stop:,}/{count:,} images ({10 * tenths}%)", file=sys.stderr)
            sys.stderr.flush()
    return np.concatenate(chunks, axis=0)


def _read(path: str) -> bytes:
    """The contents of ``path``; UserError naming it when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise UserError(
            f"{path}: cannot read it ({err.strerror or err}); check the path or leave it out"
        ) from None


def _decode_error(
    embed_bytes: Callable[[Sequence[bytes]], np.ndarray],
    paths: Sequence[str],
    files: Sequence[bytes],
    err: tf.errors.InvalidArgumentError,
) -> UserError:
    """The UserError for a batch the serving graph refused, naming its first unusable file."""
    for path, data in zip(paths, files, strict=True):
        try:
            embed_bytes([data])
        except tf.errors.InvalidArgumentError as one:
            reason = " ".join(one.message.split("\n", 1)[0].split())[:200]
            return UserError(
                f"{path}: not a usable JPEG/PNG file ({reason}); replace it with a complete "
                "image file or leave it out"
            )
    return UserError(f"{paths[0]}...: the batch was refused ({err.message.splitlines()[0]})")
