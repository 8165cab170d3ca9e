"""REST client for a MaskPre model served by TF Serving: embed a folder of person crops.

Needs only the Python standard library, numpy and the sibling ``client_common.py`` (keep the two
files together). Each request sends a batch of encoded files to the ``serving_default`` signature
in TF Serving's row format, binary values base64-encoded under the ``"b64"`` key::

    POST http://HOST:8501/v1/models/maskpre[/versions/N]:predict
    {"signature_name": "serving_default", "instances": [{"b64": "<base64 JPEG>"}, ...]}

and gets ``{"predictions": [[...D floats...], ...]}`` back (one L2-normalised embedding per
file; the signature has a single output, so each prediction is the bare vector).

Command line::

    python export/rest_client.py --server=http://localhost:8501 --model=maskpre \\
        --folder=crops/ --output=embeddings.npz
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

import numpy as np

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import client_common  # noqa: E402  (a sibling file of this script)


class ServingError(RuntimeError):
    """TF Serving answered with an error, or could not be reached.

    Attributes:
      status: the HTTP status (400 for a rejected request such as an undecodable image; 404
        for an unknown model), or None when the server was not reached.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


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
    return client_common.embed_folder(
        folder,
        batch_size,
        lambda files: predict(server, model, files, version),
        ServingError,
        lambda err: str(err) if err.status == 400 else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Embed a folder through the REST API and save paths + embeddings to an .npz file."""
    return client_common.client_main(
        argv,
        __doc__.split("\n")[0],
        "http://localhost:8501",
        lambda args: embed_folder(
            args.server, args.model, args.folder, args.batch_size, args.version
        ),
        ServingError,
        lambda err, args: str(err),
    )


if __name__ == "__main__":
    sys.exit(main())
