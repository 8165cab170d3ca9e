"""REST client for a MaskPre model served by TF Serving: embed a folder of person crops.

Needs only the Python standard library and numpy. Each request sends a batch of encoded files
to the ``serving_default`` signature in TF Serving's row format, binary values base64-encoded
under the ``"b64"`` key::

    POST http://HOST:8501/v1/models/maskpre[/versions/N]:predict
    {"signature_name": "serving_default", "instances": [{"b64": "<base64 JPEG>"}, ...]}

and gets ``{"predictions": [[...D floats...], ...]}`` back (one L2-normalised embedding per
file; the signature has a single output, so each prediction is the bare vector).

Command line::

    python export/rest_client.py --server=http://localhost:8501 --model=maskpre \\
        --folder=crops/ --output=embeddings.npz
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class ServingError(RuntimeError):
    """TF Serving answered with an error, or could not be reached.

    Attributes:
      status: the HTTP status (400 for a rejected request such as an undecodable image; 404
        for an unknown model), or None when the server was not reached.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


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


def predict_url(server: str, model: str, version: int | None = None) -> str:
    """The REST predict endpoint, e.g. ``http://localhost:8501/v1/models/maskpre:predict``."""
    base = f"{server.rstrip('/')}/v1/models/{model}"
    if version is not None:
        base += f"/versions/{int(version)}"
    return base + ":predict"


def build_request(files: Sequence[bytes], signature_name: str = "serving_default") -> dict:
    """The JSON body for a batch of encoded JPEG/PNG files (row format, base64 values)."""
    return {
        "signature_name": signature_name,
        "instances": [{"b64": base64.b64encode(data).decode("ascii")} for data in files],
    }


def parse_response(body: dict) -> np.ndarray:
    """Embeddings from a predict response: float32 [n, D].

    Accepts the row format (``predictions``: list of vectors, or of ``{"embedding": vector}``
    objects) and the columnar format (``outputs``: the vectors, or ``{"embedding": ...}``).

    Raises:
      ServingError: the body holds an ``error`` or no predictions.
    """
    if "error" in body:
        raise ServingError(body["error"])
    if "predictions" in body:
        rows = body["predictions"]
        if rows and isinstance(rows[0], dict):
            rows = [row["embedding"] for row in rows]
    elif "outputs" in body:
        rows = body["outputs"]
        if isinstance(rows, dict):
            rows = rows["embedding"]
    else:
        raise ServingError(f"response has neither predictions nor outputs: {str(body)[:200]}")
    return np.asarray(rows, dtype=np.float32)


def predict(
    server: str,
    model: str,
    files: Sequence[bytes],
    version: int | None = None,
    timeout: float = 60.0,
) -> np.ndarray:
    """POST one batch of encoded files and return their embeddings, float32 [n, D]."""
    data = json.dumps(build_request(files)).encode()
    request = urllib.request.Request(
        predict_url(server, model, version), data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as err:
        text = err.read().decode(errors="replace")
        try:
            message = json.loads(text).get("error", text)
        except ValueError:
            message = text
        raise ServingError(f"HTTP {err.code}: {message}", status=err.code) from err
    except urllib.error.URLError as err:
        raise ServingError(f"cannot reach {server}: {err.reason}") from err
    return parse_response(body)


def embed_folder(
    server: str, model: str, folder: str, batch_size: int = 32, version: int | None = None
) -> tuple[list[str], np.ndarray, list[str]]:
    """Embed every crop in ``folder``.

    A batch the server rejects as a bad request (HTTP 400) is retried file by file, so one
    corrupt file costs only itself; other errors (server unreachable, unknown model) propagate.

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
            chunks.append(predict(server, model, files, version))
            kept += batch
            continue
        except ServingError as err:
            if err.status != 400:
                raise
        for path, data in zip(batch, files, strict=True):
            try:
                chunks.append(predict(server, model, [data], version))
                kept.append(path)
            except ServingError as err:
                if err.status != 400:
                    raise
                print(f"warning: {path}: {err}", file=sys.stderr)
                failed.append(path)
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    return kept, embeddings, failed


def main(argv: Sequence[str] | None = None) -> int:
    """Embed a folder through the REST API and save paths + embeddings to an .npz file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default="http://localhost:8501")
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
        paths, embeddings, failed = embed_folder(
            args.server, args.model, args.folder, args.batch_size, args.version
        )
    except ServingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    np.savez(args.output, paths=np.array(paths), embeddings=embeddings)
    print(f"embedded {len(paths)} files ({len(failed)} failed) -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
