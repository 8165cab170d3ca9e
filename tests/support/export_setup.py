"""What the export tests share: a tiny training run, one export of it, sample image files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from maskpre_tf import export, runs
from maskpre_tf.config import TrainConfig
from maskpre_tf.models.encoder import build_encoder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEIGHT, WIDTH = 64, 32


def make_run(run_dir: str, seed: int = 0, input_norm: str = "torch"):
    """A finished training run's layout with a seeded, non-trivial teacher (BN stats too)."""
    cfg = TrainConfig().replace(
        backbone="resnet_small",
        backbone_weights="none",
        input_norm=input_norm,
        height=HEIGHT,
        width=WIDTH,
        run_dir=run_dir,
    )
    teacher = build_encoder(cfg.model, (HEIGHT, WIDTH, 3), name="teacher")
    rng = np.random.default_rng(seed)
    for var in teacher.weights:
        value = var.numpy()
        if "moving_variance" in var.path:
            value = rng.uniform(0.5, 2.0, value.shape)
        elif "moving_mean" in var.path:
            value = rng.normal(0.0, 0.2, value.shape)
        else:
            value = value * rng.uniform(0.8, 1.2, value.shape)
        var.assign(value.astype(np.float32))
    os.makedirs(run_dir, exist_ok=True)
    runs.write_config(cfg, run_dir)
    teacher.save_weights(os.path.join(run_dir, runs.ENCODER_WEIGHTS))
    return teacher, cfg


def export_with_samples(
    tmp: Path,
    synth_market: str,
    warmup_batch_sizes: Sequence[int] = export.DEFAULT_WARMUP_BATCH_SIZES,
):
    """(teacher, cfg, version_dir, sample image files) of one export of a tiny run in ``tmp``.

    The run is ``tmp/run``, the model base path ``tmp/models/maskpre``. The samples are five
    query JPEGs of ``synth_market`` plus a PNG and a grayscale JPEG (every decoder path of the
    serving graph).
    """
    from PIL import Image

    teacher, cfg = make_run(str(tmp / "run"))
    version_dir = export.export_run(
        str(tmp / "run"), str(tmp / "models" / "maskpre"), warmup_batch_sizes=warmup_batch_sizes
    )
    query = os.path.join(synth_market, "query")
    files = sorted(os.path.join(query, name) for name in os.listdir(query))[:5]
    with Image.open(files[0]) as img:
        img.save(tmp / "colour.png")
        img.convert("L").save(tmp / "gray.jpg", quality=90)
    files += [str(tmp / "colour.png"), str(tmp / "gray.jpg")]
    return teacher, cfg, version_dir, files


def read_bytes(files: Sequence[str]) -> list[bytes]:
    """The contents of ``files``, in order."""
    out = []
    for path in files:
        with open(path, "rb") as f:
            out.append(f.read())
    return out
