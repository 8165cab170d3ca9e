"""Tests of the search's file handling: listing, Market-1501-style labels, the query argument."""

from __future__ import annotations

import pytest

from maskpre_tf import search
from maskpre_tf.errors import UserError
from maskpre_tf.search.files import query_files


def test_labels():
    assert search.parse_label("/x/0002_c3s1_000451_03.jpg") == (2, 2)
    assert search.parse_label("/x/-1_c1s1_000001_00.jpg") == (-1, 0)
    assert search.parse_label("/x/person.jpg") is None
    assert search.is_match((2, 0), (2, 1)) is True
    assert search.is_match((2, 0), (3, 0)) is False
    assert search.is_match((2, 0), (0, 1)) is False  # distractor
    assert search.is_match(None, (2, 1)) is None


def test_listing_skips_hidden_files_and_folders(tmp_path):
    for rel in ("b.JPG", "a.png", "sub/c.jpeg", ".hidden.jpg", ".cache/d.jpg", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    expected = [str(tmp_path / rel) for rel in ("a.png", "b.JPG", "sub/c.jpeg")]
    assert search.list_images(str(tmp_path)) == expected
    assert query_files(str(tmp_path)) == expected
    assert query_files(str(tmp_path / "a.png")) == expected[:1]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="--query=.*no .jpg"):
        query_files(str(tmp_path / "empty"))
