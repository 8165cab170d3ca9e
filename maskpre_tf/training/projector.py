"""TensorBoard's embedding projector: a look at the clusters of an evaluation's embeddings.

:func:`write_projector` writes, into one TensorBoard log directory::

    projector_config.pbtxt                  which tensor, which metadata and sprite files
    checkpoint, projector_embedding-1.*     a checkpoint holding the embedding variable [n, D]
    projector_metadata.tsv                  one row per point (a header row when several columns)
    projector_sprite.png                    the points' image crops, row by row (optional)

and :func:`write_eval_projector` does it for the query and gallery of an evaluation, labelling
each point ``"q PID CAMID"`` or ``"g PID CAMID"`` (with ``split``, ``pid`` and ``camid`` columns
to colour by). Open it with ``tensorboard --logdir DIR`` → the "Projector" tab (PCA, t-SNE or
UMAP; colour by ``pid``, turn on the sprite images).

``log_dir`` should be a directory TensorBoard reads as a run (one holding event files, such as a
training run's ``logs/``) or the ``--logdir`` itself: the projector looks for its config there
and finds the checkpoint through the ``checkpoint`` state file next to it. Paths inside the
config are relative, so the folder can be moved. Every file is written to a temporary name and
renamed into place; writing again replaces the previous projection.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import tensorflow as tf

from maskpre_tf.errors import UserError

CONFIG_FILE = "projector_config.pbtxt"  # the name TensorBoard's projector looks for
CHECKPOINT_NAME = "projector_embedding"
METADATA_FILE = "projector_metadata.tsv"
SPRITE_FILE = "projector_sprite.png"
TENSOR_NAME = "embedding/.ATTRIBUTES/VARIABLE_VALUE"  # the variable's key in the checkpoint
MAX_SPRITE_SIDE = 8192  # pixels; the projector refuses larger sprite images
DEFAULT_THUMBNAIL = (64, 32)  # (height, width) of one crop in the sprite, pixels
DEFAULT_MAX_POINTS = 4096
_MISSING_GREY = (128, 128, 128)


@dataclass(frozen=True)
class ProjectorFiles:
    """What :func:`write_projector` wrote.

    Attributes:
      config, checkpoint, metadata: paths of the config, the checkpoint prefix and the TSV.
      sprite: path of the sprite image, or None when no image paths were given.
      indices: int64 [n], the rows of the input features that were kept, in order.
      sprite_grid: (rows, columns) of thumbnails in the sprite ((0, 0) without a sprite).
      unreadable: image paths that could not be read (drawn as grey thumbnails).
    """

    config: str
    checkpoint: str
    metadata: str
    sprite: str | None
    indices: np.ndarray
    sprite_grid: tuple[int, int]
    unreadable: tuple[str, ...]

    @property
    def num_points(self) -> int:
        """n, the number of points written."""
        return int(len(self.indices))


def sprite_grid(count: int, thumbnail: tuple[int, int]) -> tuple[int, int]:
    """(rows, columns) of a near-square sprite of ``count`` thumbnails of (height, width) pixels.

    Raises:
      UserError: the sprite would exceed :data:`MAX_SPRITE_SIDE` pixels on a side.
    """
    height, width = thumbnail
    columns = max(1, min(MAX_SPRITE_SIDE // width, math.ceil(math.sqrt(count * height / width))))
    rows = math.ceil(count / columns)
    if rows * height > MAX_SPRITE_SIDE:
        capacity = (MAX_SPRITE_SIDE // width) * (MAX_SPRITE_SIDE // height)
        raise UserError(
            f"{count} thumbnails of {height}x{width} pixels do not fit TensorBoard's "
            f"{MAX_SPRITE_SIDE}x{MAX_SPRITE_SIDE} sprite limit (at most {capacity}); lower "
            "max_points or the thumbnail size"
        )
    return rows, columns


def _atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _cell(text: object) -> str:
    """One TSV cell: tabs and line breaks become spaces."""
    return " ".join(str(text).split())


def _metadata_tsv(
    labels: Sequence[str] | None, columns: Mapping[str, Sequence[object]], keep: np.ndarray
) -> str:
    """The metadata TSV of the kept rows: a bare label column, or a header and several."""
    table = {}
    if labels is not None:
        table["label"] = labels
    table.update(columns)
    if len(table) == 1:  # one column: no header row (the projector's rule)
        (values,) = table.values()
        return "".join(f"{_cell(values[i])}\n" for i in keep)
    lines = ["\t".join(_cell(name) for name in table)]
    lines += ["\t".join(_cell(values[i]) for values in table.values()) for i in keep]
    return "\n".join(lines) + "\n"


def _sprite_png(paths: Sequence[str], thumbnail: tuple[int, int]) -> tuple[bytes, tuple, tuple]:
    """(PNG bytes of the sprite, (rows, columns), unreadable paths) of ``paths`` in order."""
    import io

    from PIL import Image

    height, width = thumbnail
    rows, columns = sprite_grid(len(paths), thumbnail)
    sprite = Image.new("RGB", (columns * width, rows * height), _MISSING_GREY)
    unreadable = []
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                crop = img.convert("RGB").resize((width, height), Image.BILINEAR)
        except (OSError, ValueError):
            unreadable.append(path)
            continue
        sprite.paste(crop, ((i % columns) * width, (i // columns) * height))
    buffer = io.BytesIO()
    sprite.save(buffer, format="PNG")
    return buffer.getvalue(), (rows, columns), tuple(unreadable)


def write_projector(
    log_dir: str,
    features: np.ndarray,
    labels: Sequence[str] | None = None,
    image_paths: Sequence[str] | None = None,
    thumbnail: tuple[int, int] = DEFAULT_THUMBNAIL,
    max_points: int = DEFAULT_MAX_POINTS,
    columns: Mapping[str, Sequence[object]] | None = None,
    seed: int = 0,
) -> ProjectorFiles:
    """Write the embedding projector's files for ``features`` into ``log_dir``.

    Args:
      log_dir: a TensorBoard run directory (created if missing); see the module docstring.
      features: float [N, D] embeddings, one row per point.
      labels: N strings shown for each point (the ``label`` column), or None.
      image_paths: N image files drawn as the points' thumbnails (the sprite), or None.
      thumbnail: (height, width) of one thumbnail in pixels (person crops are 2:1).
      max_points: at most this many points are written; above it a seeded random subset is
        kept (``indices`` of the result), in the input order.
      columns: more metadata columns, name → N values (e.g. pid, camera), to colour by.
      seed: seed of the subset.

    Returns:
      :class:`ProjectorFiles`.

    Raises:
      ValueError: features are not a non-empty finite 2-D array, or a label/path/column list
        does not have N entries.
      UserError: the sprite would be too large for TensorBoard (lower max_points/thumbnail).
    """
    from google.protobuf import text_format
    from tensorboard.plugins import projector

    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or not len(x) or not np.isfinite(x).all():
        raise ValueError(f"features must be a finite [N, D] array with N > 0, got {x.shape}")
    count = len(x)
    named = {"labels": labels, "image_paths": image_paths, **(columns or {})}
    for name, values in named.items():
        if values is not None and len(values) != count:
            raise ValueError(f"{name} has {len(values)} entries for {count} feature rows")
    if max_points < 1:
        raise ValueError(f"max_points must be positive, got {max_points}")
    keep = np.arange(count, dtype=np.int64)
    if count > max_points:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(count, size=max_points, replace=False)).astype(np.int64)
    if image_paths is not None:
        sprite_grid(len(keep), thumbnail)  # fail before anything is written
    os.makedirs(log_dir, exist_ok=True)

    checkpoint = tf.train.Checkpoint(embedding=tf.Variable(x[keep], name="embedding"))
    manager = tf.train.CheckpointManager(
        checkpoint, log_dir, max_to_keep=1, checkpoint_name=CHECKPOINT_NAME
    )
    prefix = manager.save(checkpoint_number=1)

    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = TENSOR_NAME
    metadata_path = os.path.join(log_dir, METADATA_FILE)
    if labels is not None or columns:
        _atomic_write(metadata_path, _metadata_tsv(labels, columns or {}, keep).encode())
        embedding.metadata_path = METADATA_FILE
    else:
        metadata_path = ""
    sprite_path, grid, unreadable = None, (0, 0), ()
    if image_paths is not None:
        data, grid, unreadable = _sprite_png([image_paths[i] for i in keep], thumbnail)
        sprite_path = os.path.join(log_dir, SPRITE_FILE)
        _atomic_write(sprite_path, data)
        embedding.sprite.image_path = SPRITE_FILE
        embedding.sprite.single_image_dim.extend([thumbnail[1], thumbnail[0]])  # width, height
    config_path = os.path.join(log_dir, CONFIG_FILE)
    _atomic_write(config_path, text_format.MessageToString(config).encode())
    return ProjectorFiles(config_path, prefix, metadata_path, sprite_path, keep, grid, unreadable)


def _identity_subset(query, gallery, max_points: int, seed: int) -> tuple[list[int], list[int]]:
    """Rows of query and gallery of whole identities (seeded order) up to ``max_points``.

    Identities are those of the query (the searched ones); every image of a chosen identity is
    kept, so each cluster is complete. Distractors and junk (pid ≤ 0) are left out.
    """
    by_pid: dict[int, tuple[list[int], list[int]]] = {}
    for side, records in ((0, query), (1, gallery)):
        for i, record in enumerate(records):
            if record.pid > 0:
                by_pid.setdefault(record.pid, ([], []))[side].append(i)
    pids = sorted(p for p, (q, _) in by_pid.items() if q)
    order = np.random.default_rng(seed).permutation(len(pids))
    q_rows, g_rows = [], []
    for k in order:
        q, g = by_pid[pids[k]]
        if len(q_rows) + len(g_rows) + len(q) + len(g) > max_points:
            continue
        q_rows += q
        g_rows += g
    return sorted(q_rows), sorted(g_rows)


def write_eval_projector(
    log_dir: str,
    query_features: np.ndarray,
    gallery_features: np.ndarray,
    query: Sequence,
    gallery: Sequence,
    thumbnail: tuple[int, int] = DEFAULT_THUMBNAIL,
    max_points: int = DEFAULT_MAX_POINTS,
    seed: int = 0,
) -> ProjectorFiles:
    """The projector of an evaluation: query and gallery points of whole identities.

    Args:
      log_dir: a TensorBoard run directory (e.g. the run's ``logs/``).
      query_features: float32 [Nq, D] embeddings of ``query``.
      gallery_features: float32 [Ng, D] embeddings of ``gallery``.
      query, gallery: the records (``.path``, ``.pid``, ``.camid``) in feature order.
      thumbnail: (height, width) of one crop in the sprite, pixels.
      max_points: identities of the query are taken in a seeded random order, each with all
        its query and gallery images, while the total stays within this bound; distractors
        and junk images (pid ≤ 0) are left out.
      seed: seed of the identity order.

    Returns:
      :class:`ProjectorFiles`; its ``indices`` index the concatenation [query rows, gallery
      rows] of the chosen points (query first), labelled ``"q PID CAMID"``/``"g PID CAMID"``.
    """
    if len(query_features) != len(query) or len(gallery_features) != len(gallery):
        raise ValueError(
            f"features ({len(query_features)}, {len(gallery_features)}) and records "
            f"({len(query)}, {len(gallery)}) differ in number"
        )
    q_rows, g_rows = _identity_subset(query, gallery, max_points, seed)
    if not q_rows:
        raise UserError(
            "no query identity fits the projector: the query holds no labelled identity (pid > "
            "0), or max_points is below one identity's number of images; raise max_points"
        )
    records = [("q", query[i]) for i in q_rows] + [("g", gallery[i]) for i in g_rows]
    features = np.concatenate(
        [np.asarray(query_features)[q_rows], np.asarray(gallery_features)[g_rows]]
    )
    files = write_projector(
        log_dir,
        features,
        labels=[f"{side} {r.pid} {r.camid}" for side, r in records],
        image_paths=[r.path for _, r in records],
        thumbnail=thumbnail,
        max_points=len(features),
        columns={
            "split": ["query" if side == "q" else "gallery" for side, _ in records],
            "pid": [r.pid for _, r in records],
            "camid": [r.camid for _, r in records],
        },
    )
    rows = np.asarray(q_rows + [len(query) + i for i in g_rows], dtype=np.int64)
    return replace(files, indices=rows)
