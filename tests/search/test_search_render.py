"""Tests of the search outputs: ranked-list PNGs (frames, colours, thumbnails) and the HTML page."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from search_setup import make_gallery, make_run_dir

from maskpre_tf import inference, search
from maskpre_tf.search.render import picture_name


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    return inference.load_embedder(make_run_dir(tmp_path_factory.mktemp("search_run")))


@pytest.fixture()
def gallery(synth_market, tmp_path):
    """(gallery dir, query dir, picked names): see :func:`search_setup.make_gallery`."""
    return make_gallery(synth_market, tmp_path)


def test_ranked_list_png_and_html(embedder, gallery, tmp_path):
    gallery_dir, query_dir, picks = gallery
    out = tmp_path / "out"
    report = search.run_search(embedder, gallery_dir, query_dir, str(out), top_k=3, verbose=False)
    ranking = report.rankings[0]
    png = out / ranking["picture"]
    with Image.open(png) as img:
        img.verify()
    with Image.open(png) as img:
        assert img.format == "PNG"
        pixels = np.asarray(img.convert("RGB"))
    frame_w = search.CELL_WIDTH + 2 * search.OUTLINE
    assert pixels.shape[1] == frame_w * 4 + search.GAP + 2 * search.OUTLINE
    # Query frame black, then one outline per match in its colour (top-left corner pixel).
    corners = [search.OUTLINE + i * frame_w + (search.GAP if i else 0) for i in range(4)]
    assert tuple(pixels[search.OUTLINE + 1, corners[0] + 1]) == (0, 0, 0)
    for corner, match in zip(corners[1:], ranking["matches"], strict=True):
        assert tuple(pixels[search.OUTLINE + 1, corner + 1]) == search.COLOURS[match["correct"]]
    # The thumbnail inside the first match frame is the query's own image (same pixels).
    inner = pixels[2 * search.OUTLINE : 2 * search.OUTLINE + search.CELL_HEIGHT]
    query_cell = inner[:, corners[0] + search.OUTLINE : corners[0] + search.OUTLINE + 64]
    match_cell = inner[:, corners[1] + search.OUTLINE : corners[1] + search.OUTLINE + 64]
    assert np.array_equal(query_cell, match_cell) and query_cell.std() > 5
    page = (out / "index.html").read_text()
    for r in report.rankings:
        assert f"<img src='{r['picture']}'" in page
        assert (out / r["picture"]).is_file()
    assert "top-1 correct 100.0%" in page


def test_picture_names_are_file_name_safe_and_unique():
    used: set[str] = set()
    names = [picture_name(p, used) for p in ("/a/x y.jpg", "/b/x y.png", "/c/é.jpg", "/d/x_y.jpg")]
    assert names == ["ranked_x_y.png", "ranked_x_y_2.png", "ranked__.png", "ranked_x_y_3.png"]


def test_html_escapes_names_and_links_files_relative_to_the_page(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    gallery_file = str(tmp_path / "gallery" / "<b>.jpg")
    entries = [
        {
            "query": str(tmp_path / "q&1.jpg"),
            "picture": "ranked_q_1.png",
            "matches": [
                {"path": gallery_file, "similarity": 0.5, "correct": None},
                {"path": gallery_file, "similarity": 0.25, "correct": False},
            ],
        }
    ]
    search.write_html(str(out / "index.html"), "T <1>", ["a & b"], entries)
    page = (out / "index.html").read_text()
    assert "<title>T &lt;1&gt;</title>" in page and "<li>a &amp; b</li>" in page
    assert "<h2>q&amp;1.jpg</h2>" in page and "<img src='ranked_q_1.png'" in page
    link = "<a href='../gallery/&lt;b&gt;.jpg'>&lt;b&gt;.jpg</a>"
    assert f"<tr><td>1</td><td>0.5000</td><td>?</td><td>{link}</td></tr>" in page
    assert "<span class='no'>no</span>" in page
