"""Shared parts of the deployment kit's clients: list crops, embed them in batches, the CLI.

``rest_client.py`` and ``grpc_client.py`` differ only in how one batch of encoded files reaches
TF Serving and how a rejected request shows up; this sibling module holds the rest. Like the
clients it needs only the Python standard library and numpy (never ``maskpre_tf``), so the
``export/`` folder can be copied to a client machine as it is.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

# What an embedding function returns: (embedded paths, embeddings float32 [n, D], failed paths).
EmbedResult = tuple[list[str], np.ndarray, list[str]]


def list_images(folder: str) -> list[str]:
    """JPEG/PNG files directly in ``folder`` and below (hidden folders skipped), sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            os.path.join(root, f)
            for f in files
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
        ]
    return sorted(found)


def embed_folder(
    folder: str,
    batch_size: int,
    predict: Callable[[Sequence[bytes]], np.ndarray],
    error_type: type[Exception],
    rejection: Callable[[Exception], str | None],
) -> EmbedResult:
    """Embed every crop in ``folder``, ``batch_size`` files per ``predict`` call.

    A batch whose error (an ``error_type``) is a rejection of the input (``rejection(err)``
    returns the warning text) is retried file by file, so one corrupt file costs only itself;
    other errors (``rejection(err)`` is None: server unreachable, unknown model) propagate.

    Returns:
      (embedded paths, embeddings float32 [n, D], paths that failed).
    """
    paths = list_images(folder)
    kept, chunks, failed = [], [], []
    for start in range(0, len(paths), batch_size):
        batch = paths[start : start + batch_size]
        files = []
        for path in batch:
            with open(path, "rb") as f:
                files.append(f.read())
        try:
            chunks.append(predict(files))
            kept += batch
            continue
        except error_type as err:
            if rejection(err) is None:
                raise
        for path, data in zip(batch, files, strict=True):
            try:
                chunks.append(predict([data]))
                kept.append(path)
            except error_type as err:
                message = rejection(err)
                if message is None:
                    raise
                print(f"warning: {path}: {message}", file=sys.stderr)
                failed.append(path)
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    return kept, embeddings, failed


def client_main(
    argv: Sequence[str] | None,
    description: str,
    default_server: str,
    embed: Callable[[argparse.Namespace], EmbedResult],
    error_type: type[Exception],
    describe_error: Callable[[Exception, argparse.Namespace], str],
) -> int:
    """A client's command line: embed ``--folder`` and save paths + embeddings to ``--output``.

    Args:
      argv: the arguments (default ``sys.argv[1:]``).
      description: the ``--help`` description.
      default_server: the ``--server`` default.
      embed: the parsed arguments → :func:`embed_folder`'s result.
      error_type: the errors of ``embed`` reported as ``error: ...`` with exit status 2.
      describe_error: such an error and the arguments → the message.

    Returns:
      The exit status: 0, or 2 for a missing folder or a serving error.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--server", default=default_server)
    parser.add_argument("--model", default="maskpre")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--output", default="embeddings.npz")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.folder):
        print(f"error: --folder={args.folder} is not a directory", file=sys.stderr)
        return 2
    try:
        paths, embeddings, failed = embed(args)
    except error_type as err:
        print(f"error: {describe_error(err, args)}", file=sys.stderr)
        return 2
    np.savez(args.output, paths=np.array(paths), embeddings=embeddings)
    print(f"embedded {len(paths)} files ({len(failed)} failed) -> {args.output}")
    return 0
