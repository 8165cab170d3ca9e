"""Dataset readers: on-disk re-ID layouts (Market-1501, DukeMTMC-reID, MSMT17, own folder) → records.

Every reader returns a :class:`ReidDataset` of :class:`Record` lists. Identity labels of the
training split are carried for diagnostics only; unsupervised training never reads them.
"""

from __future__ import annotations

from dataclasses import dataclass


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
