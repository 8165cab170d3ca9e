"""Writing a trained encoder as one numbered version of a TF Serving model base path.

A version is a SavedModel of :class:`maskpre_tf.inference.ServingModule` (signatures
``serving_default``, ``embed_images``, ``metadata``) with the metadata JSON as an asset and,
optionally, the warmup requests of :mod:`maskpre_tf.export.warmup`. It is written to a hidden
temporary directory next to the version directories and renamed into place, so a server polling
the base path never sees a half-written version; the models.config next to the base path is
updated afterwards (:mod:`maskpre_tf.export.models_config`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence

import tensorflow as tf

from maskpre_tf import runs
from maskpre_tf.errors import UserError
from maskpre_tf.export.models_config import models_config_path, write_models_config
from maskpre_tf.export.warmup import (
    DEFAULT_WARMUP_BATCH_SIZES,
    warmup_requests,
    write_warmup_file,
)
from maskpre_tf.inference import METADATA_FILE, ServingModule, build_metadata


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


STAGING_PREFIX = ".tmp-"


def staging_dir(export_dir: str, version: int) -> str:
    """A new hidden staging folder ``.tmp-<version>-<pid>-<random>`` inside ``export_dir``.

    TF Serving ignores non-numeric names; the final rename from there is atomic (same file
    system). The pid lets a later export tell a dead export's leftovers from a live one's.
    """
    return tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{version}-{os.getpid()}-", dir=export_dir)


def remove_dead_staging(export_dir: str, log=print) -> list[str]:
    """Remove the staging folders of exports that were killed before their rename; their paths.

    A folder whose process is still running (another export into the same base path) is kept.
    """
    removed = []
    for name in sorted(os.listdir(export_dir)):
        parts = name[len(STAGING_PREFIX) :].split("-")
        if not name.startswith(STAGING_PREFIX) or len(parts) < 3 or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
            continue  # its export is still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # another user's live process
        path = os.path.join(export_dir, name)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
        log(f"note: removed {path}, left by an export that was interrupted")
    return removed


def _version_dir(export_dir: str, version: int) -> str:
    """``<export_dir>/<version>``, checked to be a new, positive version; creates export_dir.

    Raises:
      UserError: the version is not positive, already exists, or export_dir cannot be created.
    """
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
    remove_dead_staging(export_dir)
    return final_dir


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
      encoder: the deployed encoder (RGB pixels 0–255 [B, H, W, 3] → embeddings [B, D]; it
        normalises them itself).
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
    final_dir = _version_dir(export_dir, version)
    height, width = cfg.data.height, cfg.data.width
    dim = int(encoder(tf.zeros((1, height, width, 3)), training=False).shape[-1])
    metadata = build_metadata(cfg, dim, model_name, version)
    metadata_json = json.dumps(metadata, indent=2, sort_keys=True)
    tmp_dir = staging_dir(export_dir, version)
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
    write_models_config(models_config_path(export_dir), model_name, config_base_path or export_dir)
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
    """Export the deployed encoder of a training run directory; see :func:`export_encoder`.

    Args:
      run_dir: a run's folder, its ``--run_dir`` (config.json + encoder.weights.h5 or
        checkpoints/).
      prefer_checkpoint: export the latest checkpoint even when encoder.weights.h5 exists.
      The others: as for :func:`export_encoder`.

    Returns:
      the path of the version directory written.
    """
    if not os.path.isdir(run_dir):
        raise UserError(
            f"--run_dir={run_dir}: no such directory; expected the --run_dir "
            "of a maskpre_tf.train run"
        )
    encoder, cfg = runs.load_encoder(run_dir, prefer_checkpoint=prefer_checkpoint)
    return export_encoder(
        encoder,
        cfg,
        export_dir,
        version=version,
        model_name=model_name,
        warmup_batch_sizes=warmup_batch_sizes,
        config_base_path=config_base_path,
    )
