"""Tests for maskpre_tf.models.layers: the counter-based hash, DropBlock and GeM pooling.

The mask-prediction head is tested in test_heads.py, the cluster and camera memories in
test_memory.py and test_camera_memory.py.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from maskpre_tf.models.layers import (  # noqa: E402
    DropBlock,
    GeMPooling,
    block_coverage_counts,
    calibrated_gamma,
    dropblock_keep_mask,
    hash_uniform,
    linear_drop_rate,
    paper_gamma,
)

H, W, BLOCK = 16, 8, 3
REPO_ROOT = str(Path(__file__).resolve().parents[2])


def _reference_mix32(value: int) -> int:
    """Plain-Python lowbias32, the hash the layer implements with int64 tensor ops."""
    value &= 0xFFFFFFFF
    value ^= value >> 16
    value = (value * 0x7FEB352D) & 0xFFFFFFFF
    value ^= value >> 15
    value = (value * 0x846CA68B) & 0xFFFFFFFF
    value ^= value >> 16
    return value


def _masks(keys, rate, block=BLOCK, height=H, width=W, calibrated=True) -> np.ndarray:
    mask = dropblock_keep_mask(
        tf.constant(keys, tf.int64),
        tf.constant(rate, tf.float32),
        height,
        width,
        block,
        calibrated=calibrated,
    )
    return mask.numpy()[..., 0]


def _union_of_full_blocks(dropped: np.ndarray, block: int) -> np.ndarray:
    """Union of every block x block square (fully inside the map) that is entirely dropped."""
    height, width = dropped.shape
    covered = np.zeros_like(dropped, dtype=bool)
    for i in range(height - block + 1):
        for j in range(width - block + 1):
            if dropped[i : i + block, j : j + block].all():
                covered[i : i + block, j : j + block] = True
    return covered


# ----------------------------------------------------------------------------- hashing


def test_hash_matches_python_reference_of_lowbias32():
    from maskpre_tf.models.layers import _mix32

    values = [0, 1, 2, 12345, 0xDEADBEEF, 2**32 - 1]
    got = _mix32(tf.constant(values, tf.int64)).numpy().tolist()
    assert got == [_reference_mix32(v) for v in values]


def test_hash_uniform_is_uniform_and_key_sensitive():
    u = hash_uniform(tf.range(64), tf.range(2048)).numpy()
    assert u.shape == (64, 2048) and u.min() >= 0.0 and u.max() < 1.0
    counts = np.histogram(u, bins=16, range=(0.0, 1.0))[0]
    expected = u.size / 16
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 50.0  # 15 degrees of freedom: P(chi2 > 50) ~ 1e-5 for uniform draws
    # neighbouring keys are uncorrelated
    assert abs(np.corrcoef(u[0], u[1])[0, 1]) < 0.1
    # negative and 64-bit keys are valid and distinct from their low 32 bits
    big = hash_uniform(tf.constant([-1, 2**40 + 7, 7], tf.int64), tf.range(16)).numpy()
    assert not np.array_equal(big[1], big[2])


# ----------------------------------------------------------------------------- DropBlock


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.3])
def test_calibrated_drop_fraction_matches_rate(rate):
    # 4096 samples of a 16x8 map. Tolerance: 4 standard errors of the mean, estimated from the
    # per-sample spread itself (about 0.005 at rate 0.3), plus 0.002 for the finite bisection.
    dropped = 1.0 - _masks(np.arange(4096) + 1000 * int(rate * 10), rate).mean(axis=(1, 2))
    tolerance = 4.0 * dropped.std() / np.sqrt(dropped.size) + 0.002
    assert abs(dropped.mean() - rate) < tolerance


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_paper_gamma_undershoots_as_predicted_by_block_overlap(rate):
    gamma = float(paper_gamma(rate, H, W, BLOCK))
    assert gamma == pytest.approx(rate / 9 * (16 * 8) / (14 * 6), rel=1e-6)
    counts = block_coverage_counts(H, W, BLOCK).numpy()
    predicted = np.mean(1.0 - (1.0 - gamma) ** counts)
    dropped = 1.0 - _masks(np.arange(4096), rate, calibrated=False).mean(axis=(1, 2))
    tolerance = 4.0 * dropped.std() / np.sqrt(dropped.size)
    assert abs(dropped.mean() - predicted) < tolerance
    # overlapping blocks: the paper's gamma drops less than asked (0.095 at 0.1, 0.257 at 0.3)
    assert predicted < rate - 0.004


def test_calibrated_gamma_solves_expected_fraction():
    counts = block_coverage_counts(H, W, BLOCK).numpy()
    assert counts.min() == 1 and counts.max() == 9 and counts.sum() == 9 * 14 * 6
    for rate in (0.0, 0.05, 0.5, 0.9):
        gamma = float(calibrated_gamma(tf.constant(rate), H, W, BLOCK))
        assert np.mean(1.0 - (1.0 - gamma) ** counts) == pytest.approx(rate, abs=1e-5)
    assert float(calibrated_gamma(tf.constant(0.0), H, W, BLOCK)) == 0.0


@pytest.mark.parametrize(
    ("block", "height", "width"), [(1, 6, 5), (2, 9, 7), (3, 16, 8), (5, 16, 8)]
)
def test_dropped_regions_are_unions_of_full_blocks(block, height, width):
    masks = _masks(np.arange(64), 0.35, block=block, height=height, width=width)
    dropped = masks == 0.0
    assert set(np.unique(masks)) <= {0.0, 1.0}
    assert dropped.any(axis=(1, 2)).mean() > 0.8
    for sample in dropped:
        np.testing.assert_array_equal(_union_of_full_blocks(sample, block), sample)


def test_masks_differ_per_sample_and_per_key_and_repeat_per_key():
    layer = DropBlock(block_size=BLOCK)
    x = tf.random.stateless_normal([8, H, W, 4], seed=[1, 2])
    keys_view0 = tf.range(8, dtype=tf.int64)
    keys_view1 = keys_view0 + 1_000_000
    _, mask0 = layer(x, keys_view0, tf.constant(0.3), training=True)
    _, mask1 = layer(x, keys_view1, tf.constant(0.3), training=True)
    _, again = layer(x, keys_view0, tf.constant(0.3), training=True)
    mask0, mask1 = mask0.numpy(), mask1.numpy()
    np.testing.assert_array_equal(mask0, again.numpy())
    assert all(not np.array_equal(mask0[i], mask1[i]) for i in range(8))
    assert len({mask0[i].tobytes() for i in range(8)}) == 8


def test_same_mask_in_tf_function_with_unknown_batch():
    layer = DropBlock(block_size=BLOCK)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, H, W, 4], tf.float32),
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([], tf.float32),
        ]
    )
    def run(x, keys, rate):
        return layer(x, keys, rate, training=True)

    x = tf.random.stateless_normal([5, H, W, 4], seed=[3, 4])
    keys = tf.constant([11, 12, 13, 14, 15], tf.int64)
    y_graph, mask_graph = run(x, keys, tf.constant(0.25))
    y_eager, mask_eager = layer(x, keys, tf.constant(0.25), training=True)
    assert mask_graph.shape == (5, H, W, 1)
    np.testing.assert_array_equal(mask_graph.numpy(), mask_eager.numpy())
    np.testing.assert_allclose(y_graph.numpy(), y_eager.numpy(), rtol=1e-6)
    y3, mask3 = run(x[:3], keys[:3], tf.constant(0.25))  # another batch size, same trace
    np.testing.assert_array_equal(mask3.numpy(), mask_eager.numpy()[:3])


def test_mask_of_a_sample_does_not_depend_on_the_batch_split():
    # What a 2-replica strategy does: each replica sees half of the global batch.
    layer = DropBlock(block_size=BLOCK)
    x = tf.random.stateless_normal([6, H, W, 2], seed=[5, 6])
    keys = tf.constant([3, 1, 4, 1_000_001, 5, 9], tf.int64)
    _, whole = layer(x, keys, tf.constant(0.3), training=True)
    _, first = layer(x[:3], keys[:3], tf.constant(0.3), training=True)
    _, second = layer(x[3:], keys[3:], tf.constant(0.3), training=True)
    np.testing.assert_array_equal(whole.numpy(), np.concatenate([first, second]))


def test_higher_rate_drops_a_superset():
    low = _masks(np.arange(32), 0.1)
    high = _masks(np.arange(32), 0.3)
    assert np.all(high <= low) and (high < low).any()


@pytest.mark.parametrize(("training", "rate"), [(False, 0.3), (None, 0.3), (True, 0.0)])
def test_identity_at_inference_or_zero_rate(training, rate):
    layer = DropBlock(block_size=BLOCK)
    x = tf.random.stateless_normal([4, H, W, 3], seed=[7, 8])
    y, mask = layer(x, tf.range(4), tf.constant(rate), training=training)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_array_equal(mask.numpy(), np.ones([4, H, W, 1], np.float32))


def test_output_is_renormalised_by_kept_fraction_and_gradient_flows_through_kept():
    layer = DropBlock(block_size=BLOCK)
    x = tf.random.stateless_normal([4, H, W, 3], seed=[9, 10])
    weights = tf.random.stateless_normal([4, H, W, 3], seed=[11, 12])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y, mask = layer(x, tf.range(4), tf.constant(0.3), training=True)
        objective = tf.reduce_sum(y * weights)
    grad = tape.gradient(objective, x).numpy()
    mask = mask.numpy()
    scale = (H * W) / mask.sum(axis=(1, 2, 3), keepdims=True)
    assert (mask == 0).any() and (scale > 1.0).all()
    np.testing.assert_allclose(y.numpy(), x.numpy() * mask * scale, rtol=1e-6)
    np.testing.assert_allclose(grad, weights.numpy() * mask * scale, rtol=1e-6)
    assert np.all(grad[np.broadcast_to(mask == 0, grad.shape)] == 0.0)


def test_everything_dropped_gives_zeros_not_nan():
    layer = DropBlock(block_size=BLOCK)
    x = tf.ones([2, H, W, 1])
    y, mask = layer(x, tf.range(2), tf.constant(1.0), training=True)
    assert float(tf.reduce_sum(mask)) == 0.0
    np.testing.assert_array_equal(y.numpy(), np.zeros([2, H, W, 1], np.float32))


def test_seed_and_tensor_training_flag():
    x = tf.ones([4, H, W, 1])
    _, mask_a = DropBlock(seed=0)(x, tf.range(4), tf.constant(0.3), training=True)
    _, mask_b = DropBlock(seed=1)(x, tf.range(4), tf.constant(0.3), training=True)
    assert not np.array_equal(mask_a.numpy(), mask_b.numpy())
    _, mask_off = DropBlock(seed=0)(x, tf.range(4), tf.constant(0.3), training=tf.constant(False))
    assert float(tf.reduce_min(mask_off)) == 1.0
    _, mask_on = DropBlock(seed=0)(x, tf.range(4), tf.constant(0.3), training=tf.constant(True))
    np.testing.assert_array_equal(mask_on.numpy(), mask_a.numpy())


def test_mixed_precision_keeps_the_mask_float32_and_the_rate_exact():
    layer = DropBlock(block_size=BLOCK, dtype="mixed_bfloat16")
    x = tf.random.stateless_normal([4, H, W, 2], seed=[13, 14])
    y, mask = layer(x, tf.range(4), tf.constant(0.3), training=True)
    assert y.dtype == tf.bfloat16 and mask.dtype == tf.float32
    reference = dropblock_keep_mask(tf.range(4), tf.constant(0.3), H, W, BLOCK)
    np.testing.assert_array_equal(mask.numpy(), reference.numpy())


def test_block_larger_than_map_is_clamped_and_config_round_trips():
    layer = DropBlock(block_size=7, calibrated=False, seed=3)
    y, mask = layer(tf.ones([2, 4, 5, 1]), tf.range(2), tf.constant(0.5), training=True)
    assert y.shape == (2, 4, 5, 1) and mask.shape == (2, 4, 5, 1)
    clone = DropBlock.from_config(layer.get_config())
    assert (clone.block_size, clone.calibrated, clone.seed) == (7, False, 3)


def test_works_under_mirrored_strategy_run():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        layer = DropBlock(block_size=BLOCK)

    @tf.function
    def step(x, keys):
        return strategy.run(lambda a, k: layer(a, k, tf.constant(0.2), training=True), (x, keys))

    x = tf.ones([4, H, W, 2])
    _, mask = step(x, tf.range(4, dtype=tf.int64))
    reference = dropblock_keep_mask(tf.range(4), tf.constant(0.2), H, W, BLOCK)
    np.testing.assert_array_equal(strategy.experimental_local_results(mask)[0], reference)


@pytest.mark.slow
def test_two_replicas_give_the_masks_of_one_replica():
    # Logical devices must be configured before TensorFlow starts, hence a fresh process (7-10 s).
    script = textwrap.dedent(
        f"""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from maskpre_tf.models.layers import DropBlock, dropblock_keep_mask
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        layer = DropBlock(block_size={BLOCK})
        keys = tf.range(8, dtype=tf.int64) * 7919
        data = tf.data.Dataset.from_tensor_slices((tf.ones([8, {H}, {W}, 1]), keys)).batch(8)
        x, k = next(iter(strategy.experimental_distribute_dataset(data)))
        fn = tf.function(lambda a, b: layer(a, b, tf.constant(0.3), training=True)[1])
        masks = strategy.gather(strategy.run(fn, (x, k)), axis=0)
        reference = dropblock_keep_mask(keys, tf.constant(0.3), {H}, {W}, {BLOCK})
        assert masks.shape[0] == 8
        np.testing.assert_array_equal(masks.numpy(), reference.numpy())
        print("OK", strategy.num_replicas_in_sync)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": REPO_ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK 2" in result.stdout


def test_linear_drop_rate_ramps_from_zero_to_target():
    rates = [float(linear_drop_rate(step, 100, 0.3)) for step in (0, 25, 50, 100, 1000)]
    np.testing.assert_allclose(rates, [0.0, 0.075, 0.15, 0.3, 0.3], rtol=1e-6)
    assert float(linear_drop_rate(tf.constant(5, tf.int64), 0, 0.2)) == pytest.approx(0.2)
    assert linear_drop_rate(tf.constant(5), 10, 0.2).dtype == tf.float32


# ----------------------------------------------------------------------------- GeM


def _feature_map(seed: int, shape=(3, 4, 5, 6)) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed=[seed, 0], minval=0.05, maxval=2.0)


def test_gem_with_p_one_is_average_pooling():
    x = _feature_map(1)
    pooled = GeMPooling(p=1.0)(x)
    np.testing.assert_allclose(pooled.numpy(), tf.reduce_mean(x, axis=[1, 2]).numpy(), rtol=1e-5)


def test_gem_matches_power_mean_and_large_p_approaches_max():
    x = _feature_map(2)
    numpy_x = x.numpy().astype(np.float64)
    expected = np.mean(numpy_x**3, axis=(1, 2)) ** (1 / 3)
    np.testing.assert_allclose(GeMPooling(p=3.0)(x).numpy(), expected, rtol=1e-5)
    maximum = numpy_x.max(axis=(1, 2))
    gap_small = np.abs(GeMPooling(p=10.0)(x).numpy() - maximum).max()
    gap_large = np.abs(GeMPooling(p=500.0)(x).numpy() - maximum).max()
    assert gap_large < gap_small and gap_large < 0.01 * maximum.max()
    assert np.all(np.isfinite(GeMPooling(p=500.0)(x * 100.0).numpy()))  # no overflow


def test_gem_p_receives_the_analytic_gradient():
    layer = GeMPooling(p=3.0)
    x = _feature_map(3)
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(layer(x))
    (grad,) = tape.gradient(out, [layer.p])
    assert len(layer.trainable_weights) == 1
    step = 1e-3
    plus = float(tf.reduce_sum(GeMPooling(p=3.0 + step)(x)))
    minus = float(tf.reduce_sum(GeMPooling(p=3.0 - step)(x)))
    assert float(grad) != 0.0
    assert float(grad) == pytest.approx((plus - minus) / (2 * step), rel=1e-2)


def test_gem_clamps_negatives_and_serialises():
    x = tf.constant([[[[-5.0]], [[-1.0]]]])  # [1, 2, 1, 1], all below eps
    assert float(GeMPooling(p=3.0, eps=1e-6)(x)[0, 0]) == pytest.approx(1e-6, rel=1e-4)
    layer = GeMPooling(p=4.0, trainable_p=False, eps=1e-5)
    layer(x)
    assert layer.trainable_weights == []
    clone = GeMPooling.from_config(layer.get_config())
    assert (clone.initial_p, clone.trainable_p, clone.eps) == (4.0, False, 1e-5)


def test_gem_under_mixed_precision_outputs_compute_dtype():
    layer = GeMPooling(p=3.0, dtype="mixed_bfloat16")
    out = layer(_feature_map(4))
    assert out.dtype == tf.bfloat16 and layer.p.dtype == "float32"
