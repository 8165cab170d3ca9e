"""Tests of the MSMT17 reader (V1 and V2 list files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dataset_layouts import MSMT_LISTS, assert_in_message, make_msmt

from maskpre_tf.data.datasets import Record, read_msmt17
from maskpre_tf.errors import UserError


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_msmt17_lists(tmp_path: Path, version: str) -> None:
    base = make_msmt(tmp_path / f"MSMT17_{version}", version)
    ds = read_msmt17(str(tmp_path), verbose=False)
    assert ds.root == str(base)
    train_dir = "train" if version == "V1" else "mask_train_v2"
    test_dir = "test" if version == "V1" else "mask_test_v2"

    def from_lists(list_names: list[str], folder: str) -> list[Record]:
        records = []
        for list_name in list_names:
            for rel, label in MSMT_LISTS[list_name][1]:
                camera = int(rel.split("/")[1].split("_")[2])
                records.append(Record(str(base / folder / rel), label + 1, camera - 1))
        return sorted(records, key=lambda r: r.path)

    # training = train + val lists
    assert ds.train == from_lists(["list_train.txt", "list_val.txt"], train_dir)
    assert ds.query == from_lists(["list_query.txt"], test_dir)
    assert ds.gallery == from_lists(["list_gallery.txt"], test_dir)
    assert {r.camid for r in ds.train} == {0, 14}
    assert all(os.path.isfile(r.path) for r in ds.train + ds.query + ds.gallery)


def test_msmt17_bad_list_line(tmp_path: Path) -> None:
    base = make_msmt(tmp_path / "MSMT17_V1")
    (base / "list_query.txt").write_text("0000/0000_000_04_x.jpg 0\nnot-a-valid-line\n")
    with pytest.raises(UserError) as err:
        read_msmt17(str(base), verbose=False)
    assert_in_message(err, base / "list_query.txt", "line 2")


def test_msmt17_missing_image(tmp_path: Path) -> None:
    base = make_msmt(tmp_path / "MSMT17_V1")
    missing = base / "test" / "0001" / "0001_002_07_0303noon_0400_0.jpg"
    missing.unlink()
    with pytest.raises(UserError) as err:
        read_msmt17(str(base), verbose=False)
    assert_in_message(err, missing, "do not exist")
