"""Embedding image files for search, skipping (and reporting) the ones that cannot be used."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from maskpre_tf.data.images import MAX_IMAGE_PIXELS, image_file_problem
from maskpre_tf.inference import Embedder

#: Skipped files named in a warning or a summary; the rest are only counted.
MAX_EXAMPLES = 5


def read_files(paths: Sequence[str]) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """The bytes of every file that looks like a complete JPEG/PNG file.

    Returns:
      (readable [(path, file bytes)], skipped [(path, reason)]), each in input order.
    """
    readable: list[tuple[str, bytes]] = []
    skipped: list[tuple[str, str]] = []
    for path in paths:
        problem = image_file_problem(path)
        if problem is None:
            try:
                with open(path, "rb") as f:
                    readable.append((path, f.read()))
                continue
            except OSError as err:
                problem = f"unreadable ({err.strerror or err})"
        skipped.append((path, problem))
    return readable, skipped


def decode_problem(err: tf.errors.InvalidArgumentError) -> str:
    """The skip reason of a file the serving graph refused (see ``ServingModule``)."""
    if "before decoding" in err.message:
        return f"larger than {MAX_IMAGE_PIXELS} pixels (refused before decoding)"
    return "cannot be decoded as JPEG/PNG"


def embed_files(
    embedder: Embedder, paths: Sequence[str], batch_size: int = 64
) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """Embed image files, skipping the ones that cannot be read or decoded.

    A batch that fails to decode is retried one file at a time, so one bad file costs only
    itself.

    Returns:
      (features float32 [n, D] L2-normalised, the n embedded paths in input order,
      skipped [(path, reason)]).
    """
    readable, skipped = read_files(paths)
    kept: list[str] = []
    chunks: list[np.ndarray] = []
    for start in range(0, len(readable), batch_size):
        batch = readable[start : start + batch_size]
        try:
            chunks.append(embedder.embed_bytes([data for _, data in batch]))
            kept += [path for path, _ in batch]
            continue
        except tf.errors.InvalidArgumentError:
            pass
        for path, data in batch:
            try:
                chunks.append(embedder.embed_bytes([data]))
                kept.append(path)
            except tf.errors.InvalidArgumentError as err:
                skipped.append((path, decode_problem(err)))
    if not chunks:
        return np.zeros((0, 0), np.float32), kept, skipped
    return np.concatenate(chunks).astype(np.float32), kept, skipped


def report_skipped(what: str, skipped: Sequence[tuple[str, str]]) -> None:
    """Print the count and a few examples of skipped files to stderr."""
    if not skipped:
        return
    examples = "; ".join(f"{path}: {reason}" for path, reason in skipped[:MAX_EXAMPLES])
    more = f" (and {len(skipped) - MAX_EXAMPLES} more)" if len(skipped) > MAX_EXAMPLES else ""
    print(
        f"warning: skipped {len(skipped)} unreadable {what} file(s): {examples}{more}",
        file=sys.stderr,
    )
