"""Tests of the input pipeline: image decoding/validation, augmentation, P×K sampler, tf.data."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from maskpre_tf.data import pipeline  # noqa: E402
from maskpre_tf.data.augment import augment  # noqa: E402
from maskpre_tf.data.images import decode_image, image_file_problem, validate_images  # noqa: E402
from maskpre_tf.data.sampler import PKSampler  # noqa: E402
from maskpre_tf.errors import UserError  # noqa: E402
from maskpre_tf.models.normalization import IMAGENET_MEAN_PIXEL, normalize_pixels  # noqa: E402

H, W = 32, 16
MEAN = np.array(IMAGENET_MEAN_PIXEL, np.float32)


def _save(path, array, fmt):
    Image.fromarray(array).save(path, format=fmt)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small real image files of each supported kind plus broken ones."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = {"rgb_array": rgb}
    out["jpeg"] = _save(root / "a.jpg", rgb, "JPEG")
    out["png"] = _save(root / "b.png", rgb, "PNG")
    gray = rng.integers(0, 256, (H, W), dtype=np.uint8)
    out["gray_array"] = gray
    out["gray_png"] = _save(root / "c.png", gray, "PNG")
    rgba = np.concatenate([rgb, np.full((H, W, 1), 77, np.uint8)], axis=-1)
    out["rgba_png"] = _save(root / "d.png", rgba, "PNG")
    data = open(out["jpeg"], "rb").read()
    out["truncated_jpeg"] = str(root / "e.jpg")
    open(out["truncated_jpeg"], "wb").write(data[: len(data) // 2])
    data = open(out["png"], "rb").read()
    out["truncated_png"] = str(root / "f.png")
    open(out["truncated_png"], "wb").write(data[: len(data) - 20])
    out["empty"] = str(root / "g.jpg")
    open(out["empty"], "wb").close()
    out["text"] = str(root / "h.jpg")
    open(out["text"], "w").write("not an image at all")
    out["missing"] = str(root / "nope.jpg")
    # Solid-colour training images: colour encodes the row index, so batches can be checked.
    solid = []
    for i in range(24):
        colour = np.array([i * 10, 255 - i * 10, (i * 37) % 256], np.uint8)
        solid.append(_save(root / f"s{i:02d}.png", np.broadcast_to(colour, (H, W, 3)), "PNG"))
    out["solid"] = solid
    return out


def _read(path):
    return tf.constant(open(path, "rb").read())


# --- decode / normalise ---------------------------------------------------------------------


def test_decode_jpeg_and_png_shapes_and_range(files):
    for key in ("jpeg", "png"):
        image = decode_image(_read(files[key]), 2 * H, 2 * W).numpy()
        assert image.shape == (2 * H, 2 * W, 3) and image.dtype == np.float32
        assert image.min() >= 0.0 and image.max() <= 255.0
    same_size = decode_image(_read(files["png"]), H, W).numpy()
    np.testing.assert_allclose(same_size, files["rgb_array"].astype(np.float32), atol=1e-3)


def test_decode_promotes_grayscale_and_drops_alpha(files):
    gray = decode_image(_read(files["gray_png"]), H, W).numpy()
    assert gray.shape == (H, W, 3)
    for channel in range(3):
        np.testing.assert_allclose(gray[..., channel], files["gray_array"], atol=1e-3)
    rgba = decode_image(_read(files["rgba_png"]), H, W).numpy()
    np.testing.assert_allclose(rgba, files["rgb_array"].astype(np.float32), atol=1e-3)


def test_decode_is_graph_safe_and_rejects_corrupt_bytes(files):
    decode = tf.function(
        lambda data: decode_image(data, H, W),
        input_signature=[tf.TensorSpec([], tf.string)],
    )
    assert decode(_read(files["jpeg"])).shape == (H, W, 3)
    with pytest.raises(tf.errors.InvalidArgumentError):
        decode(_read(files["truncated_jpeg"]))


# --- augment --------------------------------------------------------------------------------

AH, AW = 64, 32


def _coordinate_image():
    """channel 0 = 3·row + 10, channel 1 = 6·col + 10, channel 2 = 200: position is readable."""
    rows, cols = np.meshgrid(np.arange(AH), np.arange(AW), indexing="ij")
    return np.stack([3 * rows + 10, 6 * cols + 10, np.full_like(rows, 200)], -1).astype(np.float32)


def _augment_many(image, count, pad, erase_prob, first_seed=0):
    seeds = tf.stack([tf.range(first_seed, first_seed + count), tf.zeros(count, tf.int32)], 1)

    @tf.function
    def run(seeds):
        return tf.map_fn(
            lambda seed: augment(tf.constant(image), seed, pad, erase_prob),
            seeds,
            fn_output_signature=tf.float32,
        )

    return run(seeds).numpy()


def test_augment_is_deterministic_per_seed():
    image = _coordinate_image()
    first = _augment_many(image, 8, 10, 0.5)
    again = _augment_many(image, 8, 10, 0.5)
    other = _augment_many(image, 8, 10, 0.5, first_seed=100)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (8, AH, AW, 3)
    assert not np.array_equal(first, other)
    # Different seeds within a run also give different outputs.
    assert len({out.tobytes() for out in first}) == 8


def test_augment_flip_and_crop_rates():
    out = _augment_many(_coordinate_image(), 300, pad=10, erase_prob=0.0)
    centre_r, centre_c = AH // 2, AW // 2
    flipped = out[:, centre_r, centre_c + 1, 1] < out[:, centre_r, centre_c, 1]
    assert 0.4 < flipped.mean() < 0.6
    dy = (out[:, centre_r, centre_c, 0] - 10) / 3 - centre_r
    col = (out[:, centre_r, centre_c, 1] - 10) / 6
    dx = np.where(flipped, (AW - 1 - col) - centre_c, col - centre_c)
    assert np.all(np.abs(dy) <= 10) and np.all(np.abs(dx) <= 10)
    assert np.mean((dy != 0) | (dx != 0)) > 0.9
    assert len(np.unique(dy)) >= 15 and abs(dy.mean()) < 2.5 and abs(dx.mean()) < 2.5
    # Padding is zero: a shifted crop shows black borders.
    shifted = out[np.abs(dy) >= 2]
    assert np.all(shifted.min(axis=(1, 2, 3)) == 0.0)


def test_augment_random_erasing_rate_area_and_fill():
    out = _augment_many(np.zeros((AH, AW, 3), np.float32), 300, pad=0, erase_prob=0.5)
    erased = np.all(out == MEAN, axis=-1)
    has_erase = erased.any(axis=(1, 2))
    assert 0.4 < has_erase.mean() < 0.6
    fractions = erased[has_erase].mean(axis=(1, 2))
    assert fractions.min() >= 0.015 and fractions.max() <= 0.45
    assert fractions.max() - fractions.min() > 0.15
    for mask in erased[has_erase][:20]:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert mask.sum() == rows.size * cols.size  # a filled rectangle
    # Untouched pixels stay black; erased ones become 0 after torchvision normalisation.
    assert np.all(out[~erased] == 0.0)
    normalised = normalize_pixels(tf.constant(out[has_erase][:5]), "torch").numpy()
    np.testing.assert_allclose(normalised[erased[has_erase][:5]], 0.0, atol=1e-5)


# --- PKSampler ------------------------------------------------------------------------------


def _labels_and_cams():
    labels = np.repeat(np.arange(8), 6)  # 8 clusters × 6 images
    cams = np.tile(np.arange(6), 8)  # each cluster spans 6 cameras
    labels[[0, 7, 13]] = -1  # outliers
    labels[46:48] = 8  # a small cluster of 2 images
    return labels, cams


def test_sampler_batch_structure_and_outliers():
    labels, cams = _labels_and_cams()
    sampler = PKSampler(labels, cams, batch_size=12, num_instances=4, seed=3)
    assert sampler.num_identities == 9 and sampler.num_pids_per_batch == 3
    indices = sampler.epoch_indices(0, 30)
    assert indices.dtype == np.int64 and indices.shape == (30 * 12,)
    groups = labels[indices].reshape(30, 3, 4)
    assert np.all(groups >= 0)
    assert np.all(groups == groups[:, :, :1])  # K consecutive instances share a label
    for batch in groups[:, :, 0]:
        assert len(set(batch)) == 3  # P distinct identities
    sequence = groups[:, :, 0].reshape(-1)
    # Without replacement: every identity once per cycle of 9.
    assert sorted(sequence[:9]) == list(range(9))
    assert sorted(sequence[9:18]) == list(range(9))


def test_sampler_prefers_distinct_cameras_and_fills_small_clusters():
    labels, cams = _labels_and_cams()
    sampler = PKSampler(labels, cams, batch_size=12, num_instances=4, seed=5)
    groups = sampler.epoch_indices(2, 30).reshape(-1, 4)
    for group in groups:
        label = labels[group[0]]
        if label == 8:  # 2 images: both used, then drawn again with replacement
            assert set(group) == {46, 47}
        else:  # ≥ 4 cameras available → 4 distinct cameras
            assert len(set(cams[group])) == 4 and len(set(group)) == 4
    # Two cameras, K = 4: round-robin gives two images from each camera.
    two_cam = PKSampler(
        np.repeat(np.arange(3), 8), np.tile([0, 0, 0, 0, 0, 0, 1, 1], 3), 8, 4, seed=0
    )
    for group in two_cam.epoch_indices(0, 10).reshape(-1, 4):
        cam_of = np.tile([0, 0, 0, 0, 0, 0, 1, 1], 3)[group]
        assert sorted(cam_of) == [0, 0, 1, 1]


def test_sampler_determinism_and_redriving():
    labels, cams = _labels_and_cams()
    a = PKSampler(labels, cams, 12, 4, seed=1)
    b = PKSampler(labels, cams, 12, 4, seed=1)
    np.testing.assert_array_equal(a.epoch_indices(4, 10), b.epoch_indices(4, 10))
    # A longer epoch extends a shorter one (the pipeline's spare chunks rely on this).
    np.testing.assert_array_equal(a.epoch_indices(4, 25)[: 10 * 12], a.epoch_indices(4, 10))
    assert not np.array_equal(a.epoch_indices(4, 10), a.epoch_indices(5, 10))
    c = PKSampler(labels, cams, 12, 4, seed=2)
    assert not np.array_equal(a.epoch_indices(4, 10), c.epoch_indices(4, 10))
    before = a.epoch_indices(4, 10)
    new_labels = np.arange(labels.size) % 5  # 5 new clusters, no outliers
    a.set_labels(new_labels)
    after = a.epoch_indices(4, 10)
    assert a.num_identities == 5 and not np.array_equal(before, after)
    groups = new_labels[after].reshape(-1, 4)
    assert np.all(groups == groups[:, :1])
    np.testing.assert_array_equal(a.labels, new_labels)


def test_sampler_errors():
    labels, cams = _labels_and_cams()
    with pytest.raises(UserError, match="clustering produced 2 clusters but the batch needs 3"):
        PKSampler(np.where(labels < 2, labels, -1), cams, 12, 4, seed=0)
    sampler = PKSampler(labels, cams, 12, 4, seed=0)
    with pytest.raises(UserError, match="--eps"):
        sampler.set_labels(np.full_like(labels, -1))
    assert sampler.num_identities == 9  # a failed update keeps the old labels
    with pytest.raises(UserError, match="multiple"):
        PKSampler(labels, cams, 10, 4, seed=0)
    with pytest.raises(UserError, match="one entry per training image"):
        sampler.set_labels(labels[:-1])


# --- validate_images ------------------------------------------------------------------------


def test_validate_images_finds_bad_files(files):
    good = [files[k] for k in ("jpeg", "png", "gray_png", "rgba_png")]
    bad = [files[k] for k in ("truncated_jpeg", "truncated_png", "empty", "text", "missing")]
    mixed = [good[0], bad[0], good[1], bad[1], bad[2], good[2], bad[3], good[3], bad[4]]
    assert validate_images(mixed) == bad
    assert validate_images(good) == []
    assert image_file_problem(files["truncated_png"]) == "truncated PNG (no IEND chunk)"
    assert image_file_problem(files["missing"]) == "missing"


# --- datasets -------------------------------------------------------------------------------


def _solid_index(images):
    """Recover the solid-colour file index from pixel batches (centre pixel, channel 0)."""
    centre = images[:, images.shape[1] // 2, images.shape[2] // 2, 0]
    return np.round(centre / 10).astype(int)


def _train_setup(paths, labels, erase_prob=0.0, extra_batches=None):
    cams = np.arange(len(paths)) % 3
    sampler = PKSampler(labels, cams, batch_size=8, num_instances=2, seed=0)
    epoch = [0]
    dataset = pipeline.make_train_dataset(
        paths,
        sampler,
        lambda: epoch[0],
        3,
        H,
        W,
        8,
        seed=7,
        pad=2,
        erase_prob=erase_prob,
        extra_batches=extra_batches,
    )
    return sampler, epoch, dataset


def test_train_dataset_shapes_labels_and_redriving(files):
    paths = files["solid"]
    labels = np.arange(len(paths)) // 3
    sampler, epoch, dataset = _train_setup(paths, labels)
    assert dataset.cardinality().numpy() == 3
    assert dataset.element_spec["image"].shape == (8, H, W, 3)
    assert dataset.element_spec["label"].shape == (8,)
    batches = list(dataset)
    assert len(batches) == 3
    for batch in batches:
        assert batch["image"].shape == (8, H, W, 3) and batch["image"].dtype == tf.float32
        assert batch["index"].dtype == tf.int64 and batch["label"].dtype == tf.int64
        index = batch["index"].numpy()
        np.testing.assert_array_equal(batch["label"].numpy(), labels[index])
        # The pixels come from the indexed file (centre pixel is never padding at pad 2).
        np.testing.assert_array_equal(_solid_index(batch["image"].numpy()), index)
    first = np.concatenate([b["index"].numpy() for b in batches])
    np.testing.assert_array_equal(first, sampler.epoch_indices(0, 3 + 4)[:24])
    again = list(dataset)
    for x, y in zip(batches, again, strict=True):
        np.testing.assert_array_equal(x["image"].numpy(), y["image"].numpy())

    epoch[0] = 1
    new_labels = (np.arange(len(paths)) % 4).astype(np.int64)
    sampler.set_labels(new_labels)
    redriven = list(dataset)
    assert len(redriven) == 3
    second = np.concatenate([b["index"].numpy() for b in redriven])
    assert not np.array_equal(first, second)
    for batch in redriven:
        index = batch["index"].numpy()
        np.testing.assert_array_equal(batch["label"].numpy(), new_labels[index])
        groups = batch["label"].numpy().reshape(4, 2)
        assert np.all(groups == groups[:, :1]) and len(set(groups[:, 0])) == 4


def test_train_dataset_survives_corrupt_file(files, capfd):
    paths = list(files["solid"])
    paths[4] = files["truncated_jpeg"]
    paths[9] = files["missing"]
    labels = np.arange(len(paths)) // 2  # 12 clusters of 2: the bad files are drawn every epoch
    _, _, dataset = _train_setup(paths, labels, erase_prob=0.5)
    batches = list(dataset)
    assert len(batches) == 3
    for batch in batches:
        index = batch["index"].numpy()
        assert 4 not in index and 9 not in index
        groups = batch["label"].numpy().reshape(4, 2)
        assert np.all(groups == groups[:, :1]) and len(set(groups[:, 0])) == 4
    assert files["truncated_jpeg"] in capfd.readouterr().err  # the skip is reported


def test_train_dataset_refills_from_spare_chunks_then_reports_exhaustion(files):
    paths = list(files["solid"])
    for bad in range(0, 24, 3):  # one image in three is unreadable
        paths[bad] = files["truncated_png"]
    labels = np.arange(len(paths)) // 2
    _, _, dataset = _train_setup(paths, labels, extra_batches=1)
    batches = list(dataset)  # needs several 1-batch spare chunks
    assert len(batches) == 3
    index = np.concatenate([b["index"].numpy() for b in batches])
    assert not np.isin(index, np.arange(0, 24, 3)).any()
    all_bad = [files["truncated_png"]] * 24
    _, _, dataset = _train_setup(all_bad, labels, extra_batches=1)
    with pytest.raises(tf.errors.OpError, match="ran out of readable images"):
        list(dataset)


def test_eval_dataset_preserves_order_and_keeps_last_batch(files):
    paths = files["solid"][:7]
    batches = list(pipeline.make_eval_dataset(paths, H, W, batch_size=3))
    assert [b.shape[0] for b in batches] == [3, 3, 1]
    images = np.concatenate([b.numpy() for b in batches])
    assert images.dtype == np.float32 and images.shape == (7, H, W, 3)
    np.testing.assert_array_equal(_solid_index(images), np.arange(7))
    colour = np.array([30, 225, 111], np.float32)  # file 3
    np.testing.assert_allclose(images[3], np.broadcast_to(colour, (H, W, 3)), atol=1e-4)


def test_singletons_do_not_flood_the_batches():
    # 10 real clusters of 6 images and 500 single-image identities (outliers as instances).
    labels = np.concatenate([np.repeat(np.arange(10), 6), 10 + np.arange(500)])
    cams = np.arange(labels.size) % 3
    sampler = PKSampler(labels, cams, batch_size=32, num_instances=4, seed=0)  # P = 8
    groups = labels[sampler.epoch_indices(0, 50)].reshape(50, 8, 4)
    singletons = (groups[:, :, 0] >= 10).sum(axis=1)
    assert singletons.max() <= 2  # at most a quarter of P
    assert singletons.min() == 2  # the share is used, so singletons are still trained on
    for batch in groups:
        assert len(set(batch[:, 0])) == 8  # distinct identities
    # Too few real clusters: singletons fill the batch rather than fail.
    few = np.concatenate([np.repeat(np.arange(3), 6), 3 + np.arange(40)])
    sampler = PKSampler(few, np.arange(few.size) % 2, batch_size=32, num_instances=4, seed=0)
    groups = few[sampler.epoch_indices(0, 5)].reshape(5, 8, 4)
    assert np.all((groups[:, :, 0] >= 3).sum(axis=1) == 5)


def test_train_keys_are_unique_per_draw_even_for_repeated_images(files):
    paths = files["solid"]
    labels = np.arange(len(paths))  # every image its own identity: each batch repeats them
    _, epoch, dataset = _train_setup(paths, labels)
    keys = []
    for e in (0, 1):
        epoch[0] = e
        for batch in dataset:
            index, key = batch["index"].numpy(), batch["key"].numpy()
            assert len(set(index)) < len(index)  # K copies of each image ...
            keys.append(key)
    keys = np.concatenate(keys)
    assert len(set(keys.tolist())) == keys.size  # ... and yet one key per draw, across epochs
