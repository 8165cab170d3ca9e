"""Tests of the own-folder reader: name patterns, CSV manifests, evaluation folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dataset_layouts import MARKET_SPLITS, assert_in_message, expected, write_image

from maskpre_tf.data.datasets import (
    Record,
    camera_ids,
    format_statistics,
    load_dataset,
    read_folder,
)
from maskpre_tf.errors import UserError


def test_folder_default_pattern_unlabelled(tmp_path: Path) -> None:
    write_image(tmp_path / "crops" / "a_c1_0001.jpg")
    write_image(tmp_path / "crops" / "sub" / "b_c3_0002.png", "PNG")
    (tmp_path / "crops" / "notes.txt").write_text("not an image")
    ds = read_folder(str(tmp_path / "crops"), verbose=False)
    assert [(os.path.basename(r.path), r.pid, r.camid) for r in ds.train] == [
        ("a_c1_0001.jpg", -1, 0),
        ("b_c3_0002.png", -1, 2),
    ]
    assert ds.query == [] and ds.gallery == []
    train_row = [c.strip() for c in format_statistics(ds).splitlines()[4].split("|")]
    assert train_row == ["train", "-", "2", "2"]  # ids unknown, 2 images, 2 cameras


def test_folder_named_pattern_with_labels(tmp_path: Path) -> None:
    write_image(tmp_path / "cam0" / "person12_0001.jpg")
    write_image(tmp_path / "cam2" / "person7_0002.jpg")
    ds = read_folder(
        str(tmp_path), cam_pattern=r"cam(?P<cam>\d+)/person(?P<pid>\d+)", cam_base=0, verbose=False
    )
    assert [(r.pid, r.camid) for r in ds.train] == [(12, 0), (7, 2)]


def test_folder_named_cameras_are_ranked() -> None:
    assert camera_ids(["south", "north", "south"]) == [1, 0, 1]
    assert camera_ids(["1", "6"], cam_base=1) == [0, 5]


def test_folder_manifest_with_and_without_labels(tmp_path: Path) -> None:
    write_image(tmp_path / "imgs" / "x.jpg")
    write_image(tmp_path / "imgs" / "y.jpg")
    write_image(tmp_path / "imgs" / "z.jpg")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,camid,pid\nimgs/x.jpg,2,5\nimgs/y.jpg,0,\nimgs/z.jpg,1\n")
    ds = load_dataset("folder", str(tmp_path), manifest=str(manifest), verbose=False)
    assert ds.train == [
        Record(str(tmp_path / "imgs" / "x.jpg"), 5, 2),
        Record(str(tmp_path / "imgs" / "y.jpg"), -1, 0),
        Record(str(tmp_path / "imgs" / "z.jpg"), -1, 1),
    ]
    # the manifest itself as root, auto-detected
    assert load_dataset("auto", str(manifest), verbose=False).train == ds.train


def test_folder_with_eval_dirs_inside_root(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "t_c2_0001.jpg")
    for name in MARKET_SPLITS["query"]:
        write_image(tmp_path / "query" / name)
    for name in MARKET_SPLITS["bounding_box_test"]:
        write_image(tmp_path / "gallery" / name)
    ds = read_folder(
        str(tmp_path),
        query_dir=str(tmp_path / "query"),
        gallery_dir=str(tmp_path / "gallery"),
        verbose=False,
    )
    assert [os.path.basename(r.path) for r in ds.train] == ["t_c2_0001.jpg"]
    assert ds.query == expected(tmp_path, "query", MARKET_SPLITS["query"])
    assert ds.gallery == expected(tmp_path, "gallery", MARKET_SPLITS["bounding_box_test"])


def test_folder_no_camera_match(tmp_path: Path) -> None:
    write_image(tmp_path / "img001.jpg")
    with pytest.raises(UserError) as err:
        read_folder(str(tmp_path), verbose=False)
    assert_in_message(err, tmp_path, "cam_pattern", "manifest")


def test_folder_bad_manifest(tmp_path: Path) -> None:
    write_image(tmp_path / "x.jpg")
    manifest = tmp_path / "m.csv"
    manifest.write_text("x.jpg,cam-one\n")
    with pytest.raises(UserError) as err:
        read_folder(str(tmp_path), manifest=str(manifest), verbose=False)
    assert_in_message(err, manifest, "row 1")
    manifest.write_text("missing.jpg,0\n")
    with pytest.raises(UserError) as err:
        read_folder(str(tmp_path), manifest=str(manifest), verbose=False)
    assert_in_message(err, tmp_path / "missing.jpg")
