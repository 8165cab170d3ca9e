"""Tests of layout detection, the reader registry and load_dataset (names, options, bad roots)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dataset_layouts import (
    DUKE_SPLITS,
    MARKET_SPLITS,
    assert_in_message,
    make_bbox_layout,
    make_market,
    make_msmt,
    write_image,
)

from maskpre_tf.data.datasets import DATASET_NAMES, READERS, detect_layout, load_dataset
from maskpre_tf.errors import UserError


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


def test_load_dataset_rejects_folder_options_for_benchmarks(tmp_path: Path) -> None:
    market = make_market(tmp_path)
    with pytest.raises(UserError) as err:
        load_dataset("auto", str(market), cam_pattern="x(?P<cam>1)", verbose=False)
    assert_in_message(err, market, "cam_pattern")
    with pytest.raises(UserError):
        load_dataset("cuhk03", str(market))
    # options left at None (unset flags) are ignored
    assert load_dataset("market1501", str(market), manifest=None, verbose=False).query


def test_every_dataset_name_has_a_registered_reader() -> None:
    assert set(READERS) == set(DATASET_NAMES) - {"auto"}


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


def test_partial_market_layout(tmp_path: Path) -> None:
    splits = {k: v for k, v in MARKET_SPLITS.items() if k != "query"}
    base = make_bbox_layout(tmp_path / "Market-1501-v15.09.15", splits)
    with pytest.raises(UserError) as err:
        detect_layout(str(tmp_path))
    assert_in_message(err, base, "query/")


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
