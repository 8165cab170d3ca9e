"""Tests of the generated set as written: Market-1501 layout, splits, determinism, markers, CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from maskpre_tf.data import synth
from maskpre_tf.data.datasets import read_market1501
from maskpre_tf.errors import UserError

# Market-1501 file names: pid (4 digits, or -1 for junk), 1-based camera, sequence, frame, box.
NAME = re.compile(r"^(-1|\d{4})_c([1-9])s(\d)_(\d{6})_(\d{2})\.jpg$")


SPLITS = (synth.TRAIN_DIR, synth.QUERY_DIR, synth.GALLERY_DIR)


# A very small set for tests that generate their own copies (about 20 images, a fraction of a s).
MINI = {"identities": 4, "cameras": 2, "images_per_camera": 2.0, "seed": 5}


def _parse(root: str) -> dict[str, list[tuple[str, int, int]]]:
    """(name, pid, camera 1-based) of every file per split folder; fails on a non-Market name."""
    out = {}
    for split in SPLITS:
        rows = []
        for name in sorted(os.listdir(os.path.join(root, split))):
            m = NAME.match(name)
            assert m is not None, f"{split}/{name} is not a Market-1501 name"
            rows.append((name, int(m.group(1)), int(m.group(2))))
        out[split] = rows
    return out


def _settings(root: str) -> dict:
    """Generator settings recorded in the completion marker of ``root``."""
    with open(os.path.join(root, synth.COMPLETE_MARKER)) as f:
        return json.load(f)["params"]


def _tree_bytes(root: str) -> dict[str, bytes]:
    """Relative path -> bytes of every image under the three split folders."""
    return {
        f"{split}/{name}": open(os.path.join(root, split, name), "rb").read()
        for split in SPLITS
        for name in sorted(os.listdir(os.path.join(root, split)))
    }


def test_layout_names_and_image_size(synth_market: str) -> None:
    parsed = _parse(synth_market)
    cameras = _settings(synth_market)["cameras"]
    for split in SPLITS:
        assert parsed[split], f"{split} is empty"
        assert {cam for _, _, cam in parsed[split]} <= set(range(1, cameras + 1))
    all_names = [name for rows in parsed.values() for name, _, _ in rows]
    assert len(all_names) == len(set(all_names))
    for split in SPLITS:
        for name, _, _ in parsed[split][:5]:
            with Image.open(os.path.join(synth_market, split, name)) as img:
                assert img.format == "JPEG"
                arr = np.asarray(img)
            assert arr.shape == (128, 64, 3) and arr.dtype == np.uint8
            assert arr.std() > 5.0  # not a blank image


def test_identity_splits_are_disjoint_and_halved(synth_market: str) -> None:
    parsed = _parse(synth_market)
    train = {pid for _, pid, _ in parsed[synth.TRAIN_DIR]}
    query = {pid for _, pid, _ in parsed[synth.QUERY_DIR]}
    gallery = {pid for _, pid, _ in parsed[synth.GALLERY_DIR]}
    assert not train & (query | gallery)
    identities = _settings(synth_market)["identities"]
    assert len(train) == identities // 2
    assert len(query) == identities - len(train)
    assert min(train | query) >= 1
    # gallery = query identities + distractors (0000) + junk (-1), as in Market-1501
    assert gallery == query | {0, -1}


def test_every_identity_appears_in_two_cameras(synth_market: str) -> None:
    cams: dict[int, set[int]] = defaultdict(set)
    for rows in _parse(synth_market).values():
        for _, pid, cam in rows:
            if pid > 0:
                cams[pid].add(cam)
    assert len(cams) == _settings(synth_market)["identities"]
    assert all(len(c) >= 2 for c in cams.values())


def test_query_one_per_camera_and_cross_camera_match(synth_market: str) -> None:
    parsed = _parse(synth_market)
    query_cams: dict[int, list[int]] = defaultdict(list)
    for _, pid, cam in parsed[synth.QUERY_DIR]:
        query_cams[pid].append(cam)
    gallery_cams: dict[int, set[int]] = defaultdict(set)
    for _, pid, cam in parsed[synth.GALLERY_DIR]:
        gallery_cams[pid].add(cam)
    for pid, cams in query_cams.items():
        assert len(cams) == len(set(cams)), f"pid {pid}: more than one query in a camera"
        # Market-style: a query in every camera the identity appears in
        assert set(cams) == gallery_cams[pid]
        for cam in cams:
            assert gallery_cams[pid] - {cam}, f"pid {pid} cam {cam}: no cross-camera match"


def test_marker_counts_match_files_and_reader(synth_market: str) -> None:
    with open(os.path.join(synth_market, synth.COMPLETE_MARKER)) as f:
        marker = json.load(f)
    counts = marker["counts"]
    parsed = _parse(synth_market)
    assert counts["train"] == len(parsed[synth.TRAIN_DIR])
    assert counts["query"] == len(parsed[synth.QUERY_DIR])
    assert counts["gallery"] == len(parsed[synth.GALLERY_DIR])
    assert counts["distractors"] == sum(pid == 0 for _, pid, _ in parsed[synth.GALLERY_DIR]) > 0
    assert counts["junk"] == sum(pid == -1 for _, pid, _ in parsed[synth.GALLERY_DIR]) > 0
    assert not os.path.exists(os.path.join(synth_market, synth.PARTIAL_MARKER))
    # the project's Market-1501 reader accepts the folder (junk is dropped, cameras 0-based)
    ds = read_market1501(synth_market, verbose=False)
    assert len(ds.train) == counts["train"] and len(ds.query) == counts["query"]
    assert len(ds.gallery) == counts["gallery"] - counts["junk"]
    assert {r.camid for r in ds.gallery} <= set(range(marker["params"]["cameras"]))


def test_same_seed_gives_identical_bytes(synth_market: str, tmp_path) -> None:
    again = str(tmp_path / "again")
    settings = _settings(synth_market)
    synth.generate(
        again,
        verbose=False,
        **{k: settings[k] for k in ("identities", "cameras", "seed", "images_per_camera")},
    )
    assert _tree_bytes(again) == _tree_bytes(synth_market)


def test_different_seed_gives_different_set(tmp_path) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    synth.generate(a, verbose=False, **MINI)
    synth.generate(b, verbose=False, **{**MINI, "seed": MINI["seed"] + 1})
    bytes_a, bytes_b = _tree_bytes(a), _tree_bytes(b)
    assert set(bytes_a) != set(bytes_b)
    assert not set(bytes_a.values()) & set(bytes_b.values())


def test_ensure_demo_data_uses_the_completion_marker(tmp_path) -> None:
    out = str(tmp_path / "demo")
    assert not synth.is_complete(out, **MINI)
    assert synth.ensure_demo_data(out, verbose=False, **MINI) == out
    assert synth.is_complete(out, **MINI)
    before = _tree_bytes(out)
    sentinel = os.path.join(out, synth.TRAIN_DIR, "sentinel.txt")

    # complete: left alone
    open(sentinel, "w").close()
    synth.ensure_demo_data(out, verbose=False, **MINI)
    assert os.path.exists(sentinel)

    # interrupted half-way (as generate leaves it: in-progress marker, no completion marker,
    # files missing): regenerated from scratch
    os.remove(os.path.join(out, synth.COMPLETE_MARKER))
    open(os.path.join(out, synth.PARTIAL_MARKER), "w").close()
    os.remove(os.path.join(out, sorted(before)[0]))
    synth.ensure_demo_data(out, verbose=False, **MINI)
    assert not os.path.exists(sentinel)
    assert not os.path.exists(os.path.join(out, synth.PARTIAL_MARKER))
    assert _tree_bytes(out) == before

    # killed at the start (both markers), an unreadable marker, other settings: regenerated
    other = {**MINI, "images_per_camera": 1.0}
    for spoil in ("both markers", "unreadable", "settings"):
        open(sentinel, "w").close()
        settings = MINI
        if spoil == "both markers":
            open(os.path.join(out, synth.PARTIAL_MARKER), "w").close()
        elif spoil == "unreadable":
            with open(os.path.join(out, synth.COMPLETE_MARKER), "w") as f:
                f.write("{truncated")
        else:
            settings = other
        synth.ensure_demo_data(out, verbose=False, **settings)
        assert not os.path.exists(sentinel), spoil
        assert synth.is_complete(out, **settings)
        assert not os.path.exists(os.path.join(out, synth.PARTIAL_MARKER))
    assert not synth.is_complete(out, **MINI)


def test_refuses_to_overwrite_foreign_market_folder(tmp_path) -> None:
    os.makedirs(tmp_path / synth.TRAIN_DIR)
    theirs = tmp_path / synth.TRAIN_DIR / "0001_c1s1_000151_01.jpg"
    theirs.write_bytes(b"not ours")
    with pytest.raises(UserError, match="not generated here"):
        synth.generate(str(tmp_path), verbose=False, **MINI)
    assert theirs.read_bytes() == b"not ours"


@pytest.mark.parametrize(
    "bad",
    [
        {"identities": 1},
        {"identities": 10000},
        {"cameras": 1},
        {"cameras": 10},
        {"images_per_camera": 0.5},
        {"seed": -1},
    ],
)
def test_bad_sizes_raise_user_error(tmp_path, bad: dict) -> None:
    with pytest.raises(UserError):
        synth.generate(str(tmp_path / "x"), verbose=False, **{**MINI, **bad})
    assert not os.path.exists(tmp_path / "x")


def test_output_path_that_is_a_file_raises_user_error(tmp_path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        synth.generate(str(path), verbose=False, **MINI)


def test_command_line(tmp_path, capsys) -> None:
    out = str(tmp_path / "cli")
    synth.main(
        [
            "synth",
            "--out",
            out,
            "--identities",
            "4",
            "--cameras",
            "3",
            "--seed",
            "2",
            "--images_per_camera",
            "1.5",
        ]
    )
    assert "train" in capsys.readouterr().out
    assert synth.is_complete(out, identities=4, cameras=3, seed=2, images_per_camera=1.5)
    cams = {cam for rows in _parse(out).values() for _, _, cam in rows}
    assert cams <= {1, 2, 3} and len(cams) >= 2
    # a user error: message on stderr, exit status 2, no traceback
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "maskpre_tf.data.synth",
            "--out",
            str(tmp_path / "bad"),
            "--cameras",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "--cameras" in proc.stderr
    assert "Traceback" not in proc.stderr


def _pixels(root: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images as float vectors (N, 32*16*3) at half resolution, with pids and cameras."""
    feats, pids, cams = [], [], []
    for name in sorted(os.listdir(os.path.join(root, split))):
        m = NAME.match(name)
        assert m is not None
        with Image.open(os.path.join(root, split, name)) as img:
            feats.append(np.asarray(img.resize((16, 32)), np.float32).ravel())
        pids.append(int(m.group(1)))
        cams.append(int(m.group(2)))
    return np.stack(feats), np.array(pids), np.array(cams)


def test_identity_is_visible_in_pixels(synth_market: str) -> None:
    """Pixels carry identity: same-person pairs are closer, within and across cameras."""
    x, pids, cams = _pixels(synth_market, synth.TRAIN_DIR)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    same_cam = cams[:, None] == cams[None, :]
    off_diag = ~np.eye(len(x), dtype=bool)
    same_id = (pids[:, None] == pids[None, :]) & same_cam & off_diag
    other_id = (pids[:, None] != pids[None, :]) & same_cam
    assert same_id.any() and other_id.any()
    # probability that a same-person pair is closer than a different-person pair (AUC); 0.5 would
    # mean pixels carry no identity, 1.0 perfect separation
    auc = (d[same_id][:, None] < d[other_id][None, :]).mean()
    assert auc > 0.6
    # and across cameras: a same-person image is the nearest neighbour well above chance
    other_cam_hit = []
    for i in range(len(x)):
        keep = cams != cams[i]
        other_cam_hit.append(pids[keep][np.argmin(d[i, keep])] == pids[i])
    chance = 1.0 / len(set(pids.tolist()))
    assert np.mean(other_cam_hit) > 3 * chance
