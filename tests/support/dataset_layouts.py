"""Dataset layouts for the reader tests, built from real image files (imported by test_datasets_*).

Every layout is written with real (tiny) JPEG/PNG files, so the readers run unmocked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from maskpre_tf.data.datasets import Record

MARKET_SPLITS = {
    "bounding_box_train": [
        "0002_c1s1_000451_03.jpg",
        "0002_c2s1_000551_01.jpg",
        "0007_c3s1_000101_01.jpg",
    ],
    "query": ["0002_c6s1_000101_00.jpg", "0007_c1s1_000201_00.jpg"],
    "bounding_box_test": [
        "0002_c3s1_000301_02.jpg",
        "0007_c2s1_000301_02.jpg",
        "0000_c4s1_000001_01.jpg",
        "-1_c5s1_000001_01.jpg",
    ],
}


DUKE_SPLITS = {
    "bounding_box_train": ["0001_c2_f0046182.jpg", "0001_c8_f0050001.jpg"],
    "query": ["0005_c1_f0001000.jpg"],
    "bounding_box_test": ["0005_c3_f0002000.jpg", "0100_c7_f0003000.jpg"],
}


# (list file, image folder, relative image paths with their 0-based labels)
MSMT_LISTS = {
    "list_train.txt": ("train", [("0000/0000_000_01_0303morning_0015_0.jpg", 0)]),
    "list_val.txt": ("train", [("0001/0001_003_15_0303noon_0100_1.jpg", 1)]),
    "list_query.txt": ("test", [("0000/0000_000_04_0303afternoon_0200_0.jpg", 0)]),
    "list_gallery.txt": (
        "test",
        [
            ("0000/0000_001_02_0303morning_0300_0.jpg", 0),
            ("0001/0001_002_07_0303noon_0400_0.jpg", 1),
        ],
    ),
}


def write_image(path: Path, fmt: str = "JPEG") -> Path:
    """Write a real 4×8 RGB image (a few hundred bytes) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 8), (40, 80, 120)).save(path, fmt)
    return path


def make_bbox_layout(base: Path, splits: dict[str, list[str]]) -> Path:
    """Write a Market/Duke-style layout under ``base``; returns ``base``."""
    for split, names in splits.items():
        for name in names:
            write_image(base / split / name)
    return base


def make_market(tmp_path: Path) -> Path:
    """A Market layout inside tmp_path/Market-1501-v15.09.15/ with a Thumbs.db in the gallery."""
    base = make_bbox_layout(tmp_path / "Market-1501-v15.09.15", MARKET_SPLITS)
    (base / "bounding_box_test" / "Thumbs.db").write_bytes(b"\x00thumbs")
    return base


def make_msmt(base: Path, version: str = "V1") -> Path:
    """Write an MSMT17 V1 or V2 layout (lists + image folders) under ``base``."""
    dirs = {"train": "train", "test": "test"}
    if version == "V2":
        dirs = {"train": "mask_train_v2", "test": "mask_test_v2"}
    for list_name, (folder, entries) in MSMT_LISTS.items():
        lines = []
        for rel, label in entries:
            write_image(base / dirs[folder] / rel)
            lines.append(f"{rel} {label}\n")
        (base / list_name).write_text("".join(lines))
    return base


def parse_name(name: str) -> tuple[int, int]:
    """(pid, 0-based camid) of a Market/Duke file name, independently of the reader."""
    pid_text, rest = name.split("_", 1)
    cam_digits = ""
    for char in rest[1:]:
        if not char.isdigit():
            break
        cam_digits += char
    return int(pid_text), int(cam_digits) - 1


def expected(base: Path, split: str, names: list[str]) -> list[Record]:
    """Records the reader should return for a split: junk dropped, sorted by path."""
    records = []
    for name in names:
        pid, camid = parse_name(name)
        if pid != -1:
            records.append(Record(str(base / split / name), pid, camid))
    return sorted(records, key=lambda r: r.path)


def assert_in_message(err: pytest.ExceptionInfo, *parts: object) -> None:
    """Every one of ``parts`` appears in the UserError message."""
    message = str(err.value)
    for part in parts:
        assert str(part) in message, (part, message)
