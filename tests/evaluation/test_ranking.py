"""Tests for the Market-1501 ranking protocol (whole matrices and blocks of query rows)."""

from __future__ import annotations

import numpy as np
import pytest

from maskpre_tf.errors import UserError
from maskpre_tf.evaluation import ranking
from maskpre_tf.evaluation.ranking import evaluate_rank, evaluate_rank_blocks

# --------------------------------------------------------------------------------------------
# Straightforward references, written for these tests (one query / one row at a time).
# --------------------------------------------------------------------------------------------


def reference_evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """Per-query reference of the protocol: stable argsort, drop same pid+cam, cumsum."""
    num_q, num_g = distmat.shape
    curve_len = min(max_rank, num_g)
    curves, aps = [], []
    for i in range(num_q):
        order = np.argsort(distmat[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        hits = (g_pids[order][keep] == q_pids[i]).astype(np.float64)
        if hits.sum() == 0:
            continue
        found = np.minimum(np.cumsum(hits), 1.0)
        curve = np.ones(curve_len)
        curve[: min(curve_len, found.size)] = found[:curve_len]
        curves.append(curve)
        precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
        aps.append(float((precision * hits).sum() / hits.sum()))
    return np.mean(curves, axis=0), float(np.mean(aps))


def ids(*values):
    return np.array(values, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# evaluate_rank: hand-worked cases
# --------------------------------------------------------------------------------------------


def test_perfect_ranking():
    # Query pid 1 (cam 0); its two gallery images (cam 1) are the two nearest.
    # Ranked list: 1, 1, 2, 3 -> first hit at rank 1; AP = (1/1 + 2/2) / 2 = 1.
    dist = np.array([[0.1, 0.2, 0.5, 0.9]], dtype=np.float32)
    cmc, m_ap = evaluate_rank(dist, ids(1), ids(1, 1, 2, 3), ids(0), ids(1, 1, 1, 1), max_rank=4)
    np.testing.assert_array_equal(cmc, [1, 1, 1, 1])
    assert m_ap == pytest.approx(1.0)
    assert cmc.dtype == np.float32 and isinstance(m_ap, float)


def test_match_at_rank_three():
    # Ranked list by distance: pid 2, pid 3, pid 1, pid 4 -> only hit at rank 3.
    # CMC = [0, 0, 1, 1]; AP = 1/3.
    dist = np.array([[0.3, 0.1, 0.2, 0.4]], dtype=np.float32)
    g_pids = ids(1, 2, 3, 4)
    cmc, m_ap = evaluate_rank(dist, ids(1), g_pids, ids(0), ids(1, 1, 1, 1), max_rank=4)
    np.testing.assert_array_equal(cmc, [0, 0, 1, 1])
    assert m_ap == pytest.approx(1 / 3)


def test_several_matches_and_two_queries():
    # Query A (pid 1): ranked pids 1, 5, 1, 5, 1 -> hits at ranks 1, 3, 5:
    #   AP_A = (1/1 + 2/3 + 3/5) / 3 = 0.7555...
    # Query B (pid 5): the same gallery, ranked 1, 1, 5, 5, 1 -> hits at ranks 3, 4:
    #   AP_B = (1/3 + 2/4) / 2 = 0.41666...; first hit at rank 3.
    # mAP = (AP_A + AP_B) / 2; CMC = mean of [1,1,1,1,1] and [0,0,1,1,1] = [.5, .5, 1, 1, 1].
    g_pids = ids(1, 5, 1, 5, 1)
    dist = np.array(
        [[0.1, 0.2, 0.3, 0.4, 0.5], [0.2, 0.5, 0.1, 0.6, 0.9]],
        dtype=np.float32,
    )
    cmc, m_ap = evaluate_rank(dist, ids(1, 5), g_pids, ids(0, 0), ids(1, 1, 1, 1, 1))
    ap_a = (1 + 2 / 3 + 3 / 5) / 3
    ap_b = (1 / 3 + 2 / 4) / 2
    assert m_ap == pytest.approx((ap_a + ap_b) / 2)
    np.testing.assert_allclose(cmc, [0.5, 0.5, 1, 1, 1])


def test_same_pid_same_camera_is_removed():
    # Query pid 1, cam 0. Ranked gallery: (1, cam 0) junk, (2, cam 0), (1, cam 1), (1, cam 0).
    # Both (pid 1, cam 0) items are removed; (pid 2, cam 0) stays as a non-match:
    # filtered list = pid 2, pid 1 -> first hit at rank 2, AP = 1/2.
    # The curve has min(50, 4) = 4 entries; the filtered list has only 2, and the query's
    # first hit lies inside it, so the entries past its end count as matched.
    dist = np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    cmc, m_ap = evaluate_rank(dist, ids(1), ids(1, 2, 1, 1), ids(0), ids(0, 0, 1, 0))
    np.testing.assert_array_equal(cmc, [0, 1, 1, 1])
    assert m_ap == pytest.approx(0.5)


def test_query_without_valid_match_is_skipped():
    # Query 0 (pid 1, cam 0): ranked pid 2, pid 1 (cam 1), pid 3 -> AP 1/2, first hit rank 2.
    # Query 1 (pid 3, cam 0): its only gallery image is on cam 0 -> skipped.
    # Query 2 (pid 9): not in the gallery -> skipped. Result = query 0 alone.
    g_pids = ids(2, 1, 3)
    g_cams = ids(1, 1, 0)
    dist = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3]], dtype=np.float32)
    cmc, m_ap = evaluate_rank(dist, ids(1, 3, 9), g_pids, ids(0, 0, 0), g_cams)
    assert m_ap == pytest.approx(0.5)
    np.testing.assert_array_equal(cmc, [0, 1, 1])


def test_no_valid_query_raises_user_error():
    dist = np.array([[0.1, 0.2]], dtype=np.float32)
    with pytest.raises(UserError, match="no query has a valid gallery match"):
        evaluate_rank(dist, ids(1), ids(1, 2), ids(0), ids(0, 1))


def test_distractors_and_unknown_ids_are_plain_non_matches():
    # Gallery pids 0 (distractor) and -1 are ranked before the true match: they push the
    # match to rank 3 (no junk removal beyond same pid + same camera). AP = 1/3.
    dist = np.array([[0.1, 0.2, 0.3]], dtype=np.float32)
    cmc, m_ap = evaluate_rank(dist, ids(4), ids(0, -1, 4), ids(0), ids(1, 1, 1))
    np.testing.assert_array_equal(cmc, [0, 0, 1])
    assert m_ap == pytest.approx(1 / 3)
    # A distractor on the query's own camera is not removed either.
    cmc, m_ap = evaluate_rank(dist, ids(4), ids(0, 0, 4), ids(0), ids(0, 0, 1))
    assert m_ap == pytest.approx(1 / 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ties_are_broken_by_gallery_index(dtype):
    # Both items at distance 0.5: the lower gallery index ranks first.
    # Gallery [pid 2, pid 1]: match at rank 2 -> AP 1/2. Gallery [pid 1, pid 2]: AP 1.
    # The float64 values 0.5 + 1e-12 are not float32 numbers: that input takes the
    # argsort path, 0.5 the packed-key path.
    for value in (0.5, 0.5 + 1e-12):
        dist = np.full((1, 2), value, dtype=dtype)
        _, ap_late = evaluate_rank(dist, ids(1), ids(2, 1), ids(0), ids(1, 1))
        cmc, ap_early = evaluate_rank(dist, ids(1), ids(1, 2), ids(0), ids(1, 1))
        assert ap_late == pytest.approx(0.5)
        assert ap_early == pytest.approx(1.0)
        np.testing.assert_array_equal(cmc, [1, 1])


def test_ties_with_negative_zero_and_removed_items():
    # -0.0 and 0.0 are equal distances: index order decides -> pid 2 first, match at rank 2.
    dist = np.array([[0.0, -0.0]], dtype=np.float32)
    _, m_ap = evaluate_rank(dist, ids(1), ids(2, 1), ids(0), ids(1, 1))
    assert m_ap == pytest.approx(0.5)
    # Three tied items; the first (same pid, same cam) is removed, then pid 3, then pid 1:
    # filtered list = pid 3, pid 1 -> AP 1/2.
    dist = np.zeros((1, 3), dtype=np.float32)
    cmc, m_ap = evaluate_rank(dist, ids(1), ids(1, 3, 1), ids(0), ids(0, 1, 1))
    assert m_ap == pytest.approx(0.5)
    np.testing.assert_array_equal(cmc, [0, 1, 1])


def test_max_rank_larger_than_gallery_shortens_the_curve():
    dist = np.array([[0.2, 0.1, 0.3]], dtype=np.float32)
    cmc, _ = evaluate_rank(dist, ids(1), ids(1, 2, 3), ids(0), ids(1, 1, 1), max_rank=50)
    np.testing.assert_array_equal(cmc, [0, 1, 1])
    cmc, _ = evaluate_rank(dist, ids(1), ids(1, 2, 3), ids(0), ids(1, 1, 1), max_rank=1)
    np.testing.assert_array_equal(cmc, [0])


def test_nan_and_empty_inputs_raise_user_error():
    dist = np.array([[0.1, np.nan]], dtype=np.float32)
    with pytest.raises(UserError, match="NaN"):
        evaluate_rank(dist, ids(1), ids(1, 2), ids(0), ids(1, 1))
    with pytest.raises(UserError, match="non-empty"):
        evaluate_rank(np.zeros((0, 3), np.float32), ids(), ids(1, 2, 3), ids(), ids(0, 0, 0))


def test_shape_mismatch_raises_value_error():
    with pytest.raises(ValueError, match="g_pids"):
        evaluate_rank(np.zeros((1, 3), np.float32), ids(1), ids(1, 2), ids(0), ids(0, 0, 0))


# --------------------------------------------------------------------------------------------
# evaluate_rank against the per-query reference on random data
# --------------------------------------------------------------------------------------------


def _random_case(rng, num_q, num_g, num_ids, num_cams, levels=None):
    q_pids = rng.integers(1, num_ids + 1, num_q)
    g_pids = rng.integers(0, num_ids + 1, num_g)  # 0 = distractors
    q_cams = rng.integers(0, num_cams, num_q)
    g_cams = rng.integers(0, num_cams, num_g)
    dist = rng.random((num_q, num_g))
    dist += 0.3 * (q_pids[:, None] != g_pids[None, :])  # same-id pairs tend to be closer
    if levels is not None:  # coarse values: many ties
        dist = np.round(dist * levels) / levels
    return dist, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize(
    "num_q, num_g, levels, dtype",
    [
        (40, 300, None, np.float32),
        (40, 300, 8, np.float32),
        (25, 120, None, np.float64),
        (25, 120, 6, np.float64),
        (30, 64, 3, np.float16),
    ],
)
def test_matches_reference_on_random_data(num_q, num_g, levels, dtype, monkeypatch):
    rng = np.random.default_rng(num_q * 1000 + num_g + (levels or 0))
    dist, qp, gp, qc, gc = _random_case(rng, num_q, num_g, num_ids=12, num_cams=4, levels=levels)
    dist = dist.astype(dtype)
    # Small chunks so that several query chunks are exercised.
    monkeypatch.setattr(ranking, "_CHUNK_ELEMENTS", 7 * num_g)
    for max_rank in (1, 10, num_g + 5):
        cmc, m_ap = evaluate_rank(dist, qp, gp, qc, gc, max_rank=max_rank)
        ref_cmc, ref_ap = reference_evaluate_rank(dist, qp, gp, qc, gc, max_rank)
        assert cmc.shape == (min(max_rank, num_g),)
        np.testing.assert_allclose(cmc, ref_cmc, atol=1e-6, rtol=0)
        assert abs(m_ap - ref_ap) <= 1e-6
        assert 0.0 <= m_ap <= 1.0
        assert np.all(np.diff(cmc) >= 0)


def test_matches_reference_with_a_few_ties(monkeypatch):
    # Continuous distances with some values copied within their row: a few ties per query,
    # some of them between a match and a non-match.
    rng = np.random.default_rng(11)
    dist, qp, gp, qc, gc = _random_case(rng, 50, 400, num_ids=15, num_cams=3)
    dist = dist.astype(np.float32)
    for i in range(dist.shape[0]):
        src = rng.integers(0, dist.shape[1], 3)
        dst = rng.integers(0, dist.shape[1], 3)
        dist[i, dst] = dist[i, src]
        same = np.flatnonzero(gp == qp[i])
        if same.size:  # tie a same-identity item with a random one
            dist[i, rng.integers(0, dist.shape[1])] = dist[i, same[0]]
    monkeypatch.setattr(ranking, "_CHUNK_ELEMENTS", 9 * 400)
    cmc, m_ap = evaluate_rank(dist, qp, gp, qc, gc)
    ref_cmc, ref_ap = reference_evaluate_rank(dist, qp, gp, qc, gc, 50)
    np.testing.assert_allclose(cmc, ref_cmc, atol=1e-6, rtol=0)
    assert abs(m_ap - ref_ap) <= 1e-6


def test_result_does_not_depend_on_dtype():
    rng = np.random.default_rng(3)
    dist, qp, gp, qc, gc = _random_case(rng, 30, 200, num_ids=10, num_cams=3, levels=5)
    as_int = np.round(dist * 5).astype(np.int32)
    results = [evaluate_rank(as_int.astype(t), qp, gp, qc, gc) for t in (np.int32, np.float32)]
    results.append(evaluate_rank(as_int / 5.0, qp, gp, qc, gc))  # float64, same order
    for cmc, m_ap in results[1:]:
        np.testing.assert_array_equal(cmc, results[0][0])
        assert m_ap == pytest.approx(results[0][1], abs=1e-12)


# --------------------------------------------------------------------------------------------
# evaluate_rank_blocks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cuts", [[], [1], [7, 8, 20], list(range(1, 40))])
def test_blocks_give_the_whole_matrix_result(cuts):
    rng = np.random.default_rng(5)
    dist, qp, gp, qc, gc = _random_case(rng, 40, 300, num_ids=12, num_cams=4, levels=8)
    dist = dist.astype(np.float32)
    want_cmc, want_ap = evaluate_rank(dist, qp, gp, qc, gc)
    cmc, m_ap = evaluate_rank_blocks(np.split(dist, cuts), qp, gp, qc, gc)
    np.testing.assert_array_equal(cmc, want_cmc)
    assert m_ap == pytest.approx(want_ap, abs=1e-12)


def test_blocks_that_do_not_cover_the_queries_raise():
    dist = np.zeros((4, 3), np.float32)
    qp, gp, qc, gc = ids(1, 1, 2, 2), ids(1, 2, 3), ids(0, 0, 0, 0), ids(1, 1, 1)
    with pytest.raises(ValueError, match="cover 3 query rows"):
        evaluate_rank_blocks([dist[:3]], qp, gp, qc, gc)
    with pytest.raises(ValueError, match="does not fit"):
        evaluate_rank_blocks([dist, dist[:1]], qp, gp, qc, gc)
    with pytest.raises(ValueError, match="does not fit"):
        evaluate_rank_blocks([dist[:, :2]], qp, gp, qc, gc)
    with pytest.raises(UserError, match="non-empty"):
        evaluate_rank_blocks([], ids(), gp, ids(), gc)
