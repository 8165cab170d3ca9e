"""Tests for the dataset readers: each on-disk layout built from real image files in tmp_path."""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from maskpre_tf.data.datasets import (
    Record,
    camera_ids,
    detect_layout,
    download_and_extract,
    extract_archive,
    format_statistics,
    load_dataset,
    read_dukemtmc,
    read_folder,
    read_market1501,
    read_msmt17,
)
from maskpre_tf.errors import UserError

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


# ----------------------------------------------------------------------------- Market / Duke


@pytest.fixture()
def market(tmp_path: Path) -> Path:
    """A Market layout inside Market-1501-v15.09.15/ with a Thumbs.db in the gallery."""
    base = make_bbox_layout(tmp_path / "Market-1501-v15.09.15", MARKET_SPLITS)
    (base / "bounding_box_test" / "Thumbs.db").write_bytes(b"\x00thumbs")
    return base


@pytest.mark.parametrize("use_parent", [False, True])
def test_market_records(market: Path, use_parent: bool) -> None:
    root = market.parent if use_parent else market
    ds = read_market1501(str(root), verbose=False)
    assert ds.name == "market1501"
    assert ds.root == str(market)
    assert ds.train == expected(market, "bounding_box_train", MARKET_SPLITS["bounding_box_train"])
    assert ds.query == expected(market, "query", MARKET_SPLITS["query"])
    assert ds.gallery == expected(market, "bounding_box_test", MARKET_SPLITS["bounding_box_test"])
    assert all(os.path.isabs(r.path) for r in ds.train + ds.query + ds.gallery)


def test_market_junk_dropped_distractor_kept(market: Path) -> None:
    ds = read_market1501(str(market), verbose=False)
    assert -1 not in {r.pid for r in ds.gallery}
    assert 0 in {r.pid for r in ds.gallery}
    assert len(ds.gallery) == len(MARKET_SPLITS["bounding_box_test"]) - 1
    assert not any(r.path.endswith("Thumbs.db") for r in ds.gallery)
    assert {r.camid for r in ds.query} == {5, 0}  # c6 and c1


def test_market_prints_statistics(market: Path, capsys: pytest.CaptureFixture) -> None:
    read_market1501(str(market))
    out = capsys.readouterr().out
    assert "market1501" in out
    assert "1 non-image file(s) skipped" in out
    read_market1501(str(market), verbose=False)
    assert capsys.readouterr().out == ""


def test_duke_records(tmp_path: Path) -> None:
    base = make_bbox_layout(tmp_path / "DukeMTMC-reID", DUKE_SPLITS)
    ds = read_dukemtmc(str(tmp_path), verbose=False)
    assert ds.root == str(base)
    assert ds.train == expected(base, "bounding_box_train", DUKE_SPLITS["bounding_box_train"])
    assert ds.gallery == expected(base, "bounding_box_test", DUKE_SPLITS["bounding_box_test"])
    assert [r.camid for r in ds.train] == [1, 7]


# ----------------------------------------------------------------------------- MSMT17


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


# ----------------------------------------------------------------------------- own folder


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


# ----------------------------------------------------------------------------- detection


def test_detect_layout_each_reader(tmp_path: Path) -> None:
    make_bbox_layout(tmp_path / "m" / "Market-1501-v15.09.15", MARKET_SPLITS)
    make_bbox_layout(tmp_path / "d" / "DukeMTMC-reID", DUKE_SPLITS)
    make_msmt(tmp_path / "s" / "MSMT17_V2", "V2")
    write_image(tmp_path / "f" / "deep" / "x_c1_1.jpg")
    assert detect_layout(str(tmp_path / "m")) == "market1501"
    assert detect_layout(str(tmp_path / "m" / "Market-1501-v15.09.15")) == "market1501"
    assert detect_layout(str(tmp_path / "d")) == "dukemtmc"
    assert detect_layout(str(tmp_path / "s")) == "msmt17"
    assert detect_layout(str(tmp_path / "f")) == "folder"
    ds = load_dataset("auto", str(tmp_path / "d"), verbose=False)
    assert ds.name == "dukemtmc" and len(ds.train) == 2


def test_load_dataset_rejects_folder_options_for_benchmarks(market: Path) -> None:
    with pytest.raises(UserError) as err:
        load_dataset("auto", str(market), cam_pattern="x(?P<cam>1)", verbose=False)
    assert_in_message(err, market, "cam_pattern")
    with pytest.raises(UserError):
        load_dataset("cuhk03", str(market))
    # options left at None (unset flags) are ignored
    assert load_dataset("market1501", str(market), manifest=None, verbose=False).query


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("reader", ["auto", "market1501", "dukemtmc", "msmt17", "folder"])
def test_missing_and_empty_root(tmp_path: Path, reader: str) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(UserError) as err:
        load_dataset(reader, str(missing), verbose=False)
    assert_in_message(err, missing, "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError) as err:
        load_dataset(reader, str(empty), verbose=False)
    assert_in_message(err, empty, "empty")


def test_no_layout_matches(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(UserError) as err:
        detect_layout(str(tmp_path))
    assert_in_message(err, tmp_path, "no known dataset layout")


def test_market_reader_on_wrong_layout(tmp_path: Path) -> None:
    write_image(tmp_path / "other" / "a.jpg")
    with pytest.raises(UserError) as err:
        read_market1501(str(tmp_path), verbose=False)
    assert_in_message(err, tmp_path, "bounding_box_train/", "query/")


def test_partial_market_layout(tmp_path: Path) -> None:
    splits = {k: v for k, v in MARKET_SPLITS.items() if k != "query"}
    base = make_bbox_layout(tmp_path / "Market-1501-v15.09.15", splits)
    with pytest.raises(UserError) as err:
        detect_layout(str(tmp_path))
    assert_in_message(err, base, "query/")


def test_empty_split_folder(market: Path) -> None:
    for path in (market / "query").iterdir():
        path.unlink()
    with pytest.raises(UserError) as err:
        read_market1501(str(market), verbose=False)
    assert_in_message(err, market / "query", "no images")


def test_unparsable_image_name(market: Path) -> None:
    bad = write_image(market / "bounding_box_train" / "holiday_photo.jpg")
    with pytest.raises(UserError) as err:
        read_market1501(str(market), verbose=False)
    assert_in_message(err, bad, "0002_c1s1_000451_03.jpg")


def test_zero_valid_queries(market: Path) -> None:
    for path in (market / "query").iterdir():
        path.unlink()
    write_image(market / "query" / "-1_c1s1_000001_00.jpg")
    with pytest.raises(UserError) as err:
        read_market1501(str(market), verbose=False)
    assert_in_message(err, market / "query", "no valid query")


def test_zero_byte_files_listed(market: Path) -> None:
    empties = [market / "bounding_box_test" / f"0002_c1s1_00{i}000_01.jpg" for i in range(7)]
    for path in empties:
        path.write_bytes(b"")
    with pytest.raises(UserError) as err:
        read_market1501(str(market), verbose=False)
    message = str(err.value)
    assert "corrupt" in message and "7 in all" in message
    assert sum(str(p) in message for p in empties) == 5


# ----------------------------------------------------------------------------- statistics


def test_format_statistics_counts(market: Path) -> None:
    ds = read_market1501(str(market), verbose=False)
    rows = {}
    for line in format_statistics(ds).splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 4 and cells[0] in ("train", "query", "gallery"):
            rows[cells[0]] = tuple(int(c) for c in cells[1:])
    for split, records in (("train", ds.train), ("query", ds.query), ("gallery", ds.gallery)):
        ids = len({r.pid for r in records})
        assert rows[split] == (ids, len(records), len({r.camid for r in records}))
    assert ds.statistics() == format_statistics(ds)


# ----------------------------------------------------------------------------- archives


def _make_archives(tmp_path: Path) -> dict[str, Path]:
    """A tiny Market layout packed as .zip and .tar.gz under one top folder."""
    source = make_bbox_layout(tmp_path / "src" / "Market-1501-v15.09.15", MARKET_SPLITS)
    zip_path = tmp_path / "Market-1501-v15.09.15.zip"
    with zipfile.ZipFile(zip_path, "w") as handle:
        for path in sorted(source.rglob("*.jpg")):
            handle.write(path, path.relative_to(source.parent).as_posix())
    tar_path = tmp_path / "market.tar.gz"
    with tarfile.open(tar_path, "w:gz") as handle:
        handle.add(source, arcname=source.name)
    return {"zip": zip_path, "tar": tar_path}


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_extract_archive_then_read(tmp_path: Path, kind: str) -> None:
    archive = _make_archives(tmp_path)[kind]
    top = extract_archive(str(archive), str(tmp_path / "out"))
    assert top == str(tmp_path / "out" / "Market-1501-v15.09.15")
    ds = read_market1501(str(tmp_path / "out"), verbose=False)
    assert len(ds.train) == len(MARKET_SPLITS["bounding_box_train"])


def test_extract_rejects_unsafe_and_unknown(tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as handle:
        handle.writestr("../escape.txt", "x")
    with pytest.raises(UserError) as err:
        extract_archive(str(evil), str(tmp_path / "out"))
    assert_in_message(err, evil, "unsafe")
    assert not (tmp_path / "escape.txt").exists()
    with pytest.raises(UserError) as err:
        extract_archive(str(tmp_path / "data.rar"), str(tmp_path / "out"))
    assert_in_message(err, tmp_path / "data.rar")


def test_download_and_extract_file_url(tmp_path: Path) -> None:
    archive = _make_archives(tmp_path)["zip"]
    dest = tmp_path / "downloads"
    top = download_and_extract(archive.as_uri(), str(dest))
    assert top == str(dest / "Market-1501-v15.09.15")
    assert (dest / archive.name).is_file()
    assert read_market1501(top, verbose=False).query
    # second call: cached archive and extraction reused
    assert download_and_extract(archive.as_uri(), str(dest)) == top


# ----------------------------------------------------------------------------- shared fixture


def test_synth_market_fixture_if_present(request: pytest.FixtureRequest) -> None:
    try:
        root = request.getfixturevalue("synth_market")
    except pytest.FixtureLookupError:
        pytest.skip("synth_market fixture not available")
    assert detect_layout(str(root)) == "market1501"
    ds = load_dataset("auto", str(root), verbose=False)
    assert ds.train and ds.query and ds.gallery
    assert all(r.pid != -1 for r in ds.query + ds.gallery)
    assert all(os.path.isfile(r.path) for r in ds.train[:10])
