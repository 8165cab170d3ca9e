"""The run directory: what a training run writes where, and how to read it back.

A run's ``--run_dir`` holds::

    .lock                        held by the process training the run (pid, host, start)
    config.json                  {"digest", "config": TrainConfig.to_dict(), "original": the
                                 configuration the run started with, "history": the settings
                                 a resume changed and from which epoch}
    run.flags                    the current configuration as a flagfile
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

import contextlib
import functools
import gc
import json
import logging
import os
import warnings

import keras
import tensorflow as tf

from maskpre_tf.config import TrainConfig
from maskpre_tf.errors import UserError

CONFIG_FILE = "config.json"
FLAGS_FILE = "run.flags"
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


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
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


def _flat(cfg: TrainConfig) -> dict[str, object]:
    """{setting: value} of a configuration (field names are unique across sections)."""
    return {f.name: value for _, f, value in cfg.fields()}


def resume_conflicts(recorded: TrainConfig, requested: TrainConfig) -> list[str]:
    """The settings that define the model, its checkpoint or its data and differ between a
    run's record and a command: one ``--flag: run has X, you passed Y`` text each."""
    new = _flat(requested)
    return [
        f"--{f.name}: run has {value!r}, you passed {new[f.name]!r}"
        for _, f, value in recorded.fields()
        if not f.metadata["resume"] and f.name != "run_dir" and value != new[f.name]
    ]


def check_resume(cfg: TrainConfig, run_dir: str) -> None:
    """Refuse a command that would resume ``run_dir`` with another model, before any write.

    Settings that change only the schedule or the method's weights (epochs, lr, eps, ...) may
    change on resume (:func:`write_config` records when); the others (``resume=False`` in
    :mod:`maskpre_tf.config_sections`: backbone, size, data, memory, heads, precision, ...)
    may not.

    Raises:
      UserError: naming each differing setting and the fix.
    """
    if not os.path.isfile(os.path.join(run_dir, CONFIG_FILE)):
        return
    conflicts = resume_conflicts(read_config(run_dir), cfg)
    if conflicts:
        raise UserError(
            f"{run_dir} is a run of another model: {'; '.join(conflicts)}. Resume it with its "
            f"own settings (--flagfile={os.path.join(run_dir, FLAGS_FILE)}) or pass a new "
            "--run_dir; nothing was written"
        )


def config_flags(cfg: TrainConfig) -> str:
    """A flagfile of every setting of ``cfg`` (``python -m maskpre_tf.train --flagfile=...``)."""
    lines = ["# The settings of this run, as flags (written by maskpre_tf.train)."]
    for _, f, value in cfg.fields():
        if f.metadata["flag"]:
            text = str(value).lower() if isinstance(value, bool) else value
            lines.append(f"--{f.name}={text}")
    return "\n".join(lines) + "\n"


def write_config(cfg: TrainConfig, run_dir: str, epoch: int = 0, log=print) -> None:
    """Record the run's configuration, after a resume as well, without losing the original.

    ``config.json`` holds the current configuration, the one the run started with
    (``original``) and ``history``: for every resume that changed settings, the epoch from which
    the new values apply and each setting's old and new value. ``run.flags`` is the current
    configuration as a flagfile.
    """
    path = os.path.join(run_dir, CONFIG_FILE)
    current = cfg.to_dict()
    record = {"digest": cfg.digest(), "config": current, "original": current, "history": []}
    if os.path.exists(path):
        earlier = read_json(path)
        old = read_config(run_dir)
        record["original"] = earlier.get("original", earlier.get("config", current))
        record["history"] = earlier.get("history", [])
        before, now = _flat(old), _flat(cfg)
        changed = {k: [before.get(k), v] for k, v in now.items() if before.get(k) != v}
        changed.pop("run_dir", None)
        if changed:
            record["history"].append({"from_epoch": epoch + 1, "changed": changed})
            log(
                f"note: resuming {run_dir} at epoch {epoch + 1} with changed settings: "
                f"{', '.join(sorted(changed))} (recorded in {CONFIG_FILE})"
            )
    atomic_write_json(path, record)
    atomic_write_text(os.path.join(run_dir, FLAGS_FILE), config_flags(cfg))


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
        source = final[0]
        loader = functools.partial(encoder.load_weights, source)
    elif latest:
        source = latest
        loader = functools.partial(_restore_branch, encoder, network, latest)
    else:
        raise UserError(
            f"{run_dir}: neither {ENCODER_WEIGHTS} nor a checkpoint under "
            f"{CHECKPOINTS}/; has the run finished an epoch?"
        )
    try:
        with quiet_restore():
            loader()
    except (ValueError, AssertionError) as err:
        raise UserError(
            f"{source} does not fit the model {os.path.join(run_dir, CONFIG_FILE)} describes "
            f"(--backbone={cfg.model.backbone}, {cfg.data.height}x{cfg.data.width}); the run's "
            f"record and its weights disagree ({str(err).splitlines()[0][:160]})"
        ) from None
    return encoder, cfg


@contextlib.contextmanager
def quiet_restore():
    """Keras's and TensorFlow's per-variable warnings of a restore that does not fit silenced:
    the caller reports the mismatch in one line. Restore objects dropped inside are collected
    before the logging level comes back (their warnings are logged when they are deleted)."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        gc.collect()
        logger.setLevel(level)


def _restore_branch(encoder, network: str, checkpoint: str) -> None:
    """Restore only ``network``'s branch of a training checkpoint into ``encoder``.

    Raises:
      AssertionError: a weight of the encoder has no value in the checkpoint.
    """
    branch = tf.train.Checkpoint(**{network: encoder})
    status = tf.train.Checkpoint(model=branch).restore(checkpoint)
    status.expect_partial()  # the optimizer, memories and the other network stay unread
    status.assert_existing_objects_matched()
