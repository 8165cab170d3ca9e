"""Tests of archive extraction and download_and_extract (a file:// URL, no network)."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import pytest
from dataset_layouts import MARKET_SPLITS, assert_in_message, make_bbox_layout

from maskpre_tf.data.datasets import download_and_extract, extract_archive, read_market1501
from maskpre_tf.errors import UserError


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
