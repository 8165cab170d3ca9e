"""One export version in one or more formats: the TF Serving SavedModel, the ONNX file, or both.

``<export_dir>/<version>/`` holds, by ``--format``:

* ``savedmodel`` (the default): the SavedModel of :mod:`maskpre_tf.export.saved_model`, and
  models.config next to ``export_dir`` is updated;
* ``savedmodel,onnx``: the same, with ``model.onnx`` beside ``saved_model.pb`` (TF Serving
  ignores the extra file). The ONNX model is converted before anything is written, the
  SavedModel version is renamed into place, then ``model.onnx`` is renamed into it: each
  appears whole, the ONNX file a moment after the SavedModel;
* ``onnx``: only ``model.onnx`` and ``maskpre_metadata.json``, written to a hidden temporary
  folder and renamed to the version number. models.config is not touched, and a base path that
  already holds SavedModel versions is refused: TF Serving would take the ONNX-only version as
  the newest one and fail to load it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Sequence
from typing import TYPE_CHECKING

import tensorflow as tf

from maskpre_tf import runs
from maskpre_tf.errors import UserError
from maskpre_tf.export import onnx as onnx_export
from maskpre_tf.export.saved_model import (
    _version_dir,
    existing_versions,
    export_encoder,
    next_version,
    staging_dir,
)
from maskpre_tf.export.warmup import DEFAULT_WARMUP_BATCH_SIZES
from maskpre_tf.inference import METADATA_FILE

if TYPE_CHECKING:
    import onnx

SAVEDMODEL = "savedmodel"
ONNX = "onnx"
FORMATS = (SAVEDMODEL, ONNX)


def parse_formats(values: Sequence[str]) -> tuple[str, ...]:
    """``--format`` items → the formats to write, in :data:`FORMATS` order, without repeats.

    Raises:
      UserError: an item is not a known format, or none is given.
    """
    wanted = {v.strip().lower() for v in values if v.strip()}
    unknown = sorted(wanted - set(FORMATS))
    if unknown:
        raise UserError(
            f"--format={','.join(values)}: unknown format {', '.join(unknown)}; choose from "
            f"{', '.join(FORMATS)} (comma-separated for several)"
        )
    if not wanted:
        raise UserError(f"--format is empty; pass {SAVEDMODEL}, {ONNX} or {SAVEDMODEL},{ONNX}")
    return tuple(f for f in FORMATS if f in wanted)


def _saved_model_versions(export_dir: str) -> list[int]:
    """The versions under ``export_dir`` that hold a SavedModel."""
    return [
        v
        for v in existing_versions(export_dir)
        if os.path.isfile(os.path.join(export_dir, str(v), "saved_model.pb"))
    ]


def _write_onnx_version(
    model: onnx.ModelProto, metadata: dict[str, str], export_dir: str, version: int
) -> str:
    """``<export_dir>/<version>/`` with only ``model.onnx`` and the metadata JSON, atomically."""
    served = _saved_model_versions(export_dir)
    if served:
        held = (
            f"version {served[0]} holds"
            if len(served) == 1
            else "versions " + ", ".join(map(str, served)) + " hold"
        )
        raise UserError(
            f"--export_dir={export_dir} is a TF Serving model base path ({held} a "
            f"SavedModel); an ONNX-only version {version} "
            "there would become its newest version, which TF Serving cannot load. Pass "
            f"--format={SAVEDMODEL},{ONNX} to put model.onnx beside a new SavedModel, or an "
            "--export_dir of its own for ONNX files (e.g. export/models/maskpre_onnx)"
        )
    final_dir = _version_dir(export_dir, version)
    tmp_dir = staging_dir(export_dir, version)
    try:
        staging = os.path.join(tmp_dir, "model")
        os.makedirs(staging)
        onnx_export.write_onnx(
            model, os.path.join(staging, onnx_export.ONNX_FILE), metadata, version
        )
        with open(os.path.join(staging, METADATA_FILE), "w") as f:
            f.write(json.dumps(json.loads(metadata[onnx_export.METADATA_PROP]), indent=2))
        try:
            os.rename(staging, final_dir)
        except OSError as err:
            raise UserError(
                f"{final_dir}: could not move the export into place ({err}); was it created "
                "meanwhile? Pass another --version"
            ) from err
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return final_dir


def export_encoder_formats(
    encoder: tf.Module,
    cfg,
    export_dir: str,
    formats: Sequence[str] = (SAVEDMODEL,),
    version: int | None = None,
    model_name: str | None = None,
    warmup_batch_sizes: Sequence[int] = DEFAULT_WARMUP_BATCH_SIZES,
    config_base_path: str | None = None,
    opset: int = onnx_export.DEFAULT_OPSET,
) -> dict[str, str]:
    """Write ``encoder`` as one version under ``export_dir`` in ``formats``.

    Args:
      encoder: the deployed encoder (RGB pixels 0–255 [B, H, W, 3] → embeddings [B, D]).
      cfg: its ``TrainConfig``.
      export_dir: the model's base path (holds numbered versions).
      formats: a subset of :data:`FORMATS` (see the module docstring for each combination).
      version: the version number; None = next after the highest existing one.
      model_name: the model's name; None = the basename of ``export_dir``.
      warmup_batch_sizes, config_base_path: for the SavedModel (see
        :func:`maskpre_tf.export.saved_model.export_encoder`).
      opset: the ONNX opset.

    Returns:
      {"version_dir": ..., "savedmodel": the version dir (if written), "onnx": the
      model.onnx path (if written)}.

    Exports into one base path run one at a time: each holds an ``flock`` on the base path's
    directory itself (no file is added beside the versions) from choosing its version number to
    its final rename, so two processes exporting at once get consecutive versions instead of one
    failing on the other's number.
    """
    formats = parse_formats(formats)
    export_dir = os.path.abspath(export_dir)
    try:
        os.makedirs(export_dir, exist_ok=True)
    except OSError as err:
        raise UserError(f"--export_dir={export_dir}: cannot create it ({err})") from err
    lock = os.open(export_dir, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits for an export running in the same base path
        return _export_locked(
            encoder,
            cfg,
            export_dir,
            formats,
            version,
            model_name,
            warmup_batch_sizes,
            config_base_path,
            opset,
        )
    finally:
        os.close(lock)  # closing the descriptor releases the lock


def _export_locked(
    encoder: tf.Module,
    cfg,
    export_dir: str,
    formats: tuple[str, ...],
    version: int | None,
    model_name: str | None,
    warmup_batch_sizes: Sequence[int],
    config_base_path: str | None,
    opset: int,
) -> dict[str, str]:
    """:func:`export_encoder_formats` with the base path's lock held."""
    model_name = model_name or os.path.basename(export_dir.rstrip(os.sep))
    version = next_version(export_dir) if version is None else int(version)
    model = metadata = None
    if ONNX in formats:
        # Converted first: a missing converter or an unconvertible graph fails before any
        # file is written.
        model = onnx_export.convert_encoder(encoder, cfg.data.height, cfg.data.width, opset)
        dim = int(model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value)
        metadata = onnx_export.onnx_metadata(cfg, dim, model_name, version)
    out: dict[str, str] = {}
    if SAVEDMODEL in formats:
        version_dir = export_encoder(
            encoder,
            cfg,
            export_dir,
            version=version,
            model_name=model_name,
            warmup_batch_sizes=warmup_batch_sizes,
            config_base_path=config_base_path,
        )
        out[SAVEDMODEL] = version_dir
        if model is not None:
            out[ONNX] = onnx_export.write_onnx(
                model, os.path.join(version_dir, onnx_export.ONNX_FILE), metadata, version
            )
    else:
        version_dir = _write_onnx_version(model, metadata, export_dir, version)
        out[ONNX] = os.path.join(version_dir, onnx_export.ONNX_FILE)
    out["version_dir"] = version_dir
    return out


def export_run_formats(
    run_dir: str,
    export_dir: str,
    formats: Sequence[str] = (SAVEDMODEL,),
    prefer_checkpoint: bool = False,
    **kwargs,
) -> dict[str, str]:
    """Export the deployed encoder of a training run directory; see :func:`export_encoder_formats`.

    Args:
      run_dir: a run's folder, its ``--run_dir`` (config.json + encoder.weights.h5 or
        checkpoints/).
      prefer_checkpoint: export the latest checkpoint even when encoder.weights.h5 exists.
      kwargs: ``version``, ``model_name``, ``warmup_batch_sizes``, ``config_base_path``,
        ``opset`` as for :func:`export_encoder_formats`.
    """
    formats = parse_formats(formats)
    if ONNX in formats:
        onnx_export.require_converter()
        onnx_export.check_opset(kwargs.get("opset", onnx_export.DEFAULT_OPSET))
    if not os.path.isdir(run_dir):
        raise UserError(
            f"--run_dir={run_dir}: no such directory; expected the --run_dir "
            "of a maskpre_tf.train run"
        )
    encoder, cfg = runs.load_encoder(run_dir, prefer_checkpoint=prefer_checkpoint)
    return export_encoder_formats(encoder, cfg, export_dir, formats, **kwargs)
