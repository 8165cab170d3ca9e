"""What the gallery search tests share: a tiny training run, a gallery with bad files, counting."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from maskpre_tf import inference, runs
from maskpre_tf.config import TrainConfig
from maskpre_tf.models.encoder import build_encoder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Gallery files copied as queries (different identities, different cameras).
QUERY_PICKS = (0, 9, 21, 33)


def make_run_dir(out: Path) -> str:
    """A training run's output layout in ``out`` with a tiny seeded teacher (64x32 resnet_small).

    ``input_norm`` is given as a run's resolved config.json has it (random weights: torch).
    """
    import keras

    keras.utils.set_random_seed(3)
    cfg = TrainConfig().replace(
        backbone="resnet_small",
        backbone_weights="none",
        input_norm="torch",
        height=64,
        width=32,
        run_dir=str(out),
    )
    teacher = build_encoder(cfg.model, (64, 32, 3), name="teacher")
    runs.write_config(cfg, str(out))
    teacher.save_weights(str(out / runs.ENCODER_WEIGHTS))
    return str(out)


def make_gallery(synth_market: str, tmp_path: Path) -> tuple[str, str, list[str]]:
    """(gallery dir with 2 bad files, query dir with copies of gallery files + 1 bad file, picks).

    The picks are the names of the gallery files copied as queries.
    """
    gallery_dir = tmp_path / "gallery"
    shutil.copytree(os.path.join(synth_market, "bounding_box_test"), gallery_dir)
    names = sorted(n for n in os.listdir(gallery_dir) if int(n.split("_")[0]) > 0)
    good = names[0]
    (gallery_dir / "0099_c1s1_000001_01.jpg").write_bytes(b"definitely not a JPEG")
    data = (gallery_dir / good).read_bytes()
    (gallery_dir / "0098_c1s1_000001_01.jpg").write_bytes(data[: len(data) // 2])
    query_dir = tmp_path / "query"
    query_dir.mkdir()
    for i in QUERY_PICKS:
        shutil.copy(gallery_dir / names[i], query_dir / names[i])
    (query_dir / "0097_c1s1_000001_01.png").write_bytes(b"")
    return str(gallery_dir), str(query_dir), [names[i] for i in QUERY_PICKS]


def counting(inner: inference.Embedder) -> tuple[inference.Embedder, list[int]]:
    """The same embedder, counting the images it embeds (to observe the cache)."""
    count = [0]

    def embed(files):
        count[0] += len(files)
        return inner.embed_bytes(files)

    return dataclasses.replace(inner, embed_bytes=embed), count
