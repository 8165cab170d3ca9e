"""The run directory: what a training run writes where, and how to read it back.

A run's ``--run_dir`` holds::

    config.json                  {"digest": ..., "config": TrainConfig.to_dict()}
    checkpoints/                 tf.train.CheckpointManager: model (student and teacher),
                                 optimizer, prototypes, pseudo labels, epoch, input normalisation
    logs/                        TensorBoard
    encoder.weights.h5           the deployed encoder (--deploy_network: teacher or student),
                                 final or best-on-validation
    best_encoder.weights.h5      with --keep_best: the best epoch so far
    source_pretrained.weights.h5 domain adaptation: the encoder after source pre-training
    summary.json, summary_epochs.json, summary_source.json

Every file is written to a temporary name and renamed into place, so a kill never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from maskpre_tf.config import TrainConfig
from maskpre_tf.errors import UserError

CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"
SOURCE_CHECKPOINTS = "source_checkpoints"
LOGS = "logs"
ENCODER_WEIGHTS = "encoder.weights.h5"
BEST_WEIGHTS = "best_" + ENCODER_WEIGHTS
# The final weights of runs written before the deployed encoder was a choice (the teacher).
LEGACY_WEIGHTS = "teacher.weights.h5"
SOURCE_WEIGHTS = "source_pretrained.weights.h5"
SUMMARY = "summary.json"
SUMMARY_EPOCHS = "summary_epochs.json"
SUMMARY_SOURCE = "summary_source.json"


def atomic_write_json(path: str, record: object) -> None:
    """Write ``record`` as indented JSON to ``path`` through a temporary file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1, default=float)
    os.replace(tmp, path)


def read_json(path: str) -> dict:
    """The JSON object at ``path``, or {} when the file is missing or unreadable."""
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def atomic_save_weights(model: keras.Model, path: str) -> None:
    """``model.save_weights(path)`` through a temporary ``*.weights.h5`` file."""
    tmp = path[: -len(".weights.h5")] + f".tmp{os.getpid()}.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, path)


def prepare_run_dir(path: str, flag: str = "--run_dir") -> None:
    """Create ``path`` if needed and check that this process can write into it.

    Raises:
      UserError: it cannot be created or is not writable (named as ``flag``).
    """
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"{flag}={path}: cannot create it ({err.strerror}); pass a folder you can write to"
        ) from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(
            f"{flag}={path} is not writable; pass a folder you can write to (or fix its "
            "permissions)"
        )


def read_config(run_dir: str) -> TrainConfig:
    """The :class:`TrainConfig` recorded in ``<run_dir>/config.json``.

    Raises:
      UserError: the folder is not a run directory.
    """
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise UserError(
            f"{run_dir}: no {CONFIG_FILE}; expected the --run_dir of a maskpre_tf.train run"
        )
    try:
        with open(path) as f:
            record = json.load(f)
        return TrainConfig.from_dict(record["config"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(
            f"{path}: not a readable run configuration ({err}); re-run the "
            "training command to rewrite it"
        ) from err


def write_config(cfg: TrainConfig, run_dir: str, log=print) -> None:
    """Record the run's configuration; note the settings that changed when resuming."""
    path = os.path.join(run_dir, CONFIG_FILE)
    record = {"digest": cfg.digest(), "config": cfg.to_dict()}
    if os.path.exists(path):
        old = read_config(run_dir)
        if old.digest() != record["digest"]:
            flat_old = {k: v for section in old.to_dict().values() for k, v in section.items()}
            flat_new = {k: v for section in record["config"].values() for k, v in section.items()}
            changed = sorted(k for k, v in flat_new.items() if flat_old.get(k) != v)
            log(f"note: resuming {run_dir} with changed settings: {', '.join(changed)}")
    atomic_write_json(path, record)


def latest_checkpoint(run_dir: str) -> str | None:
    """Path prefix of the run's latest complete checkpoint, or None."""
    return tf.train.latest_checkpoint(os.path.join(run_dir, CHECKPOINTS))


def checkpoints_newest_first(folder: str) -> list[str]:
    """Path prefixes of the checkpoints a manager lists in ``folder``, the newest first."""
    state = tf.train.get_checkpoint_state(folder)
    return list(reversed(state.all_model_checkpoint_paths)) if state else []


def load_encoder(run_dir: str, prefer_checkpoint: bool = False, network: str | None = None):
    """A run's trained encoder (the deployed one, or ``network``) and its ``TrainConfig``.

    The deployed encoder (``--deploy_network``) comes from ``encoder.weights.h5``, written at
    the end of training (``teacher.weights.h5`` in runs of earlier versions). When that file
    is missing, or with ``prefer_checkpoint`` (a run still in progress), or for the encoder that
    was not deployed, the weights come from that encoder's branch of the latest checkpoint.

    Args:
      run_dir: a run's ``--run_dir``.
      prefer_checkpoint: take the latest checkpoint even when the final weights exist.
      network: "teacher" or "student"; None: the run's ``--deploy_network``.
    Returns:
      (ReidEncoder taking RGB pixels in 0–255, TrainConfig)
    """
    from maskpre_tf.models.encoder import build_encoder

    cfg = read_config(run_dir)
    network = network or cfg.run.deploy_network
    shape = (cfg.data.height, cfg.data.width, 3)
    encoder = build_encoder(cfg.model, shape, weights="none", name=network)
    deployed = network == cfg.run.deploy_network
    final = [os.path.join(run_dir, name) for name in (ENCODER_WEIGHTS, LEGACY_WEIGHTS)]
    final = [path for path in final if deployed and os.path.isfile(path)]
    latest = latest_checkpoint(run_dir)
    if final and not (prefer_checkpoint and latest):
        encoder.load_weights(final[0])
    elif latest:
        # Restore only this encoder's branch of the training checkpoint's object graph.
        branch = tf.train.Checkpoint(**{network: encoder})
        tf.train.Checkpoint(model=branch).restore(latest).expect_partial()
    else:
        raise UserError(
            f"{run_dir}: neither {ENCODER_WEIGHTS} nor a checkpoint under "
            f"{CHECKPOINTS}/; has the run finished an epoch?"
        )
    return encoder, cfg
