"""What every reader returns: :class:`Record` lists in a :class:`ReidDataset`; its statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from maskpre_tf.data.datasets.files import DATASET_EXTENSIONS
from maskpre_tf.errors import UserError


@dataclass(frozen=True)
class Record:
    """One image: its path, identity and camera.

    pid: identity; 0 = distractor (gallery only), -1 = unknown (unlabelled training crop).
    camid: camera index, 0-based.
    """

    path: str
    pid: int
    camid: int


@dataclass
class ReidDataset:
    """The three splits of a re-ID dataset."""

    name: str
    root: str
    train: list[Record]
    query: list[Record]
    gallery: list[Record]

    def statistics(self) -> str:
        """The standard statistics table of this dataset (see :func:`format_statistics`)."""
        return format_statistics(self)


def _split_row(records: Sequence[Record]) -> tuple[str, int, int]:
    """(# ids as text, # images, # cameras) of a split; '-' ids when it has no labels."""
    pids = {r.pid for r in records if r.pid != -1}
    ids = str(len(pids)) if pids or not records else "-"
    return ids, len(records), len({r.camid for r in records})


def format_statistics(ds: ReidDataset) -> str:
    """The standard table: subset | # ids | # images | # cameras for train, query, gallery.

    '# ids' counts distinct labelled pids (distractor 0 included, unknown -1 excluded) and is
    '-' for an unlabelled split.
    """
    rule = "  " + "-" * 44
    lines = [
        f"Dataset statistics: {ds.name} ({ds.root})",
        rule,
        f"  {'subset':<8} | {'# ids':>7} | {'# images':>9} | {'# cameras':>9}",
        rule,
    ]
    for split, records in (("train", ds.train), ("query", ds.query), ("gallery", ds.gallery)):
        ids, images, cameras = _split_row(records)
        lines.append(f"  {split:<8} | {ids:>7} | {images:>9} | {cameras:>9}")
    lines.append(rule)
    return "\n".join(lines)


def require_query(query: Sequence[Record], where: str) -> None:
    """UserError if the query split has no valid (non-junk) image."""
    if not query:
        raise UserError(
            f"no valid query images in {where} (junk images with pid -1 do not count); "
            "evaluation needs at least one labelled query image"
        )


def report(ds: ReidDataset, skipped: int, verbose: bool) -> ReidDataset:
    """Print the statistics table (and the count of skipped non-image files) when verbose."""
    if verbose:
        print(format_statistics(ds))
        if skipped:
            print(
                f"  ({skipped} non-image file(s) skipped: other types than "
                f"{'/'.join(DATASET_EXTENSIONS)} such as Thumbs.db, hidden files, broken "
                "links, names not in UTF-8)"
            )
    return ds
