"""Tests of the Market-1501 and DukeMTMC-reID readers, their errors and the statistics table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dataset_layouts import (
    DUKE_SPLITS,
    MARKET_SPLITS,
    assert_in_message,
    expected,
    make_bbox_layout,
    make_market,
    write_image,
)

from maskpre_tf.data.datasets import format_statistics, read_dukemtmc, read_market1501
from maskpre_tf.errors import UserError


@pytest.fixture()
def market(tmp_path: Path) -> Path:
    """A Market layout inside Market-1501-v15.09.15/ with a Thumbs.db in the gallery."""
    return make_market(tmp_path)


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


# ----------------------------------------------------------------------------- bad input


def test_market_reader_on_wrong_layout(tmp_path: Path) -> None:
    write_image(tmp_path / "other" / "a.jpg")
    with pytest.raises(UserError) as err:
        read_market1501(str(tmp_path), verbose=False)
    assert_in_message(err, tmp_path, "bounding_box_train/", "query/")


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
