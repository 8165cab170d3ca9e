"""Odd training folders: odd names and formats, link loops, unusable files, too few images.

A folder is read, odd files included, or its unusable files are skipped with one counted line;
nothing hangs and nothing fails later, in the middle of an epoch.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from dataset_layouts import write_image
from odd_image_files import write_odd_files

from maskpre_tf.data.datasets import detect_layout, load_dataset, read_folder
from maskpre_tf.data.images import validate_images
from maskpre_tf.errors import UserError

WALK_SECONDS = 20  # a walk that takes longer is taken to loop forever


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fail (not hang) a test whose folder walk does not end within WALK_SECONDS."""

    def expire(signum, frame):
        raise TimeoutError(f"the folder walk did not end within {WALK_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(WALK_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _names(records, root: Path) -> list[str]:
    return [os.path.relpath(r.path, root) for r in records]


def test_odd_names_and_formats_are_listed_and_other_files_counted(tmp_path, capsys):
    root = tmp_path / "crops"
    write_image(root / "0001_c1s1_000001_00 copy.jpg")
    write_image(root / "0002_c2_é.jpg")
    write_image(root / "人" / "0003_c3_行人.png", "PNG")
    for name, fmt in (("0004_c4.gif", "GIF"), ("0005_c5.bmp", "BMP"), ("0006_c6.webp", "WEBP")):
        write_image(root / name, fmt)
    write_image(root / "0007_c1.tif", "TIFF")
    (root / "Thumbs.db").write_bytes(b"\0thumbs")
    ds = read_folder(str(root))
    assert [(name, r.camid) for name, r in zip(_names(ds.train, root), ds.train, strict=True)] == [
        ("0001_c1s1_000001_00 copy.jpg", 0),
        ("0002_c2_é.jpg", 1),
        ("0004_c4.gif", 3),
        ("0005_c5.bmp", 4),
        ("0006_c6.webp", 5),
        ("人/0003_c3_行人.png", 2),
    ]
    assert validate_images([r.path for r in ds.train]) == []
    skipped = [line for line in capsys.readouterr().out.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and "2 non-image file(s) skipped" in skipped[0], skipped


def test_a_name_that_is_not_utf8_is_skipped_and_counted(tmp_path, capsys):
    """Latin-1 bytes in a name (an old zip) cannot reach TensorFlow or a printed message."""
    root = tmp_path / "crops"
    write_image(root / "0001_c1_0001.jpg")
    write_image(Path(os.fsdecode(os.fsencode(root) + b"/0002_c2_\xe9.jpg")))
    ds = read_folder(str(root))
    assert _names(ds.train, root) == ["0001_c1_0001.jpg"]
    assert "1 non-image file(s) skipped" in capsys.readouterr().out


def _link_loops(root: Path) -> None:
    """A tree of crops with every kind of link trouble (see the test below)."""
    write_image(root / "cam1" / "0001_c1_0001.jpg")
    write_image(root.parent / "elsewhere" / "0002_c2_0001.jpg")
    write_image(root.parent / "beside_c9.jpg")  # beside root: must not be listed
    (root / "cam1" / "loop").symlink_to("..")  # back to root
    (root / "cam1" / "self").symlink_to(".")
    (root / "up").symlink_to("..")  # above root
    (root / "twice").symlink_to("cam1")  # the same folder again
    (root / "far").symlink_to(root.parent / "elsewhere")  # a real folder outside: followed
    (root / "x_c1_self.jpg").symlink_to("x_c1_self.jpg")  # a file link loop
    (root / "y_c1_gone.jpg").symlink_to("nowhere.jpg")  # a dangling link


def test_link_loops_end_the_walk_and_broken_links_are_counted(tmp_path, capsys, deadline):
    root = tmp_path / "crops"
    _link_loops(root)
    assert detect_layout(str(root)) == "folder"
    ds = load_dataset("folder", str(root))
    assert _names(ds.train, root) == ["cam1/0001_c1_0001.jpg", "far/0002_c2_0001.jpg"]
    assert [r.camid for r in ds.train] == [0, 1]
    assert "2 non-image file(s) skipped" in capsys.readouterr().out  # the two broken links


def test_a_folder_reached_only_through_a_link_is_read(tmp_path, deadline):
    write_image(tmp_path / "store" / "0001_c3_0001.jpg")
    (tmp_path / "crops").mkdir()
    (tmp_path / "crops" / "day1").symlink_to(tmp_path / "store")
    assert detect_layout(str(tmp_path / "crops")) == "folder"
    ds = read_folder(str(tmp_path / "crops"), verbose=False)
    assert _names(ds.train, tmp_path / "crops") == ["day1/0001_c3_0001.jpg"]


def test_a_query_folder_linked_into_the_training_root_stays_out_of_training(tmp_path):
    write_image(tmp_path / "train" / "t_c2_0001.jpg")
    write_image(tmp_path / "query" / "0001_c1s1_000001_00.jpg")
    write_image(tmp_path / "gallery" / "0001_c2s1_000001_00.jpg")
    (tmp_path / "train" / "q").symlink_to(tmp_path / "query")
    ds = read_folder(
        str(tmp_path / "train"),
        query_dir=str(tmp_path / "query"),
        gallery_dir=str(tmp_path / "gallery"),
        verbose=False,
    )
    assert _names(ds.train, tmp_path / "train") == ["t_c2_0001.jpg"]


def _load_data(data_dir: Path, **changes):
    """train_lib.load_data on a folder dataset (the training package is imported lazily)."""
    train_lib = pytest.importorskip("maskpre_tf.training.train_lib", exc_type=ImportError)
    from maskpre_tf.config import TrainConfig

    cfg = TrainConfig().replace(dataset="folder", data_dir=str(data_dir), **changes)
    return train_lib.load_data(cfg)


def test_training_skips_unsupported_files_with_one_counted_line(tmp_path, capsys):
    odd = write_odd_files(tmp_path / "odd")
    refused = [case for case in odd.values() if case.problem is not None]
    readable = len(odd) - len(refused)
    data = _load_data(tmp_path / "odd", cam_pattern=r"^(?P<cam>\w)", batch_size=8, num_instances=4)
    assert len(data.train) == readable  # photo.tif is not even listed (its extension)
    lines = [line for line in capsys.readouterr().out.splitlines() if "skipping" in line]
    assert len(lines) == 1 and f"skipping {len(refused) - 1} unreadable" in lines[0], lines


def test_ten_images_cannot_fill_a_batch(tmp_path):
    for i in range(10):
        write_image(tmp_path / "crops" / f"{i:04d}_c{i % 3 + 1}_0001.jpg")
    with pytest.raises(UserError) as err:
        _load_data(tmp_path / "crops", batch_size=16, num_instances=4)
    message = str(err.value)
    assert "10 training images" in message and "--batch_size=16" in message
