"""Tests of k-reciprocal re-ranking: against the dense references, from features, by blocks."""

from __future__ import annotations

import numpy as np
import pytest
from reference_rerank import re_ranking_dense, re_ranking_rows

from maskpre_tf.errors import UserError
from maskpre_tf.evaluation import rerank, working_distance
from maskpre_tf.evaluation.distance import pairwise_distance
from maskpre_tf.evaluation.ranking import evaluate_rank, evaluate_rank_blocks
from maskpre_tf.evaluation.rerank import re_ranked_blocks, re_ranking


def _clustered(rng, num_ids, per_id, dim, spread):
    centres = rng.normal(size=(num_ids, dim))
    labels = np.repeat(np.arange(1, num_ids + 1), per_id)
    feats = centres[labels - 1] + spread * rng.normal(size=(labels.size, dim))
    return feats.astype(np.float32), labels


def _split_distances(feats, num_q, metric="euclidean"):
    d = pairwise_distance(feats, feats, metric=metric)
    d = (d + d.T) / 2  # exactly symmetric
    return d[:num_q, num_q:], d[:num_q, :num_q], d[num_q:, num_q:]


@pytest.fixture()
def small_budgets(monkeypatch):
    """Several tiles, several output blocks and several Jaccard blocks on small inputs."""
    monkeypatch.setattr(working_distance, "TILE_EDGE", 7)
    monkeypatch.setattr(rerank, "BLOCK_ELEMENTS", 50)


@pytest.mark.parametrize("k1, k2, lam", [(5, 3, 0.3), (4, 1, 0.5), (40, 6, 0.3), (3, 50, 0.0)])
def test_re_ranking_matches_the_references(k1, k2, lam, small_budgets):
    rng = np.random.default_rng(k1 * 10 + k2)
    feats, _ = _clustered(rng, num_ids=6, per_id=5, dim=4, spread=0.6)
    order = rng.permutation(len(feats))
    qg, qq, gg = _split_distances(feats[order], 8)
    got = re_ranking(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam, max_triples=200)
    assert got.shape == qg.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, re_ranking_rows(qg, qq, gg, k1, k2, lam), atol=2e-5, rtol=0)
    np.testing.assert_allclose(got, re_ranking_dense(qg, qq, gg, k1, k2, lam), atol=1e-6, rtol=0)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_features_give_the_matrix_result(metric, small_budgets):
    rng = np.random.default_rng(8)
    feats, _ = _clustered(rng, num_ids=12, per_id=6, dim=8, spread=0.7)
    qf, gf = feats[::4], np.delete(feats, np.s_[::4], axis=0)
    copies = qf.copy(), gf.copy()
    blocks = list(re_ranked_blocks(qf, gf, k1=6, k2=3, metric=metric, max_triples=300))
    assert len(blocks) > 1 and all(b.shape[1] == len(gf) for b in blocks)
    dist = [pairwise_distance(a, b, metric=metric) for a, b in ((qf, gf), (qf, qf), (gf, gf))]
    want = re_ranking_dense(*dist, k1=6, k2=3, lambda_value=0.3)
    np.testing.assert_allclose(np.vstack(blocks), want, atol=1e-6)
    np.testing.assert_array_equal(qf, copies[0])  # inputs untouched
    np.testing.assert_array_equal(gf, copies[1])


def test_re_ranking_leaves_its_inputs_alone():
    rng = np.random.default_rng(9)
    feats, _ = _clustered(rng, num_ids=4, per_id=5, dim=3, spread=0.5)
    inputs = _split_distances(feats, 6)
    copies = [m.copy() for m in inputs]
    re_ranking(*inputs, k1=4, k2=2)
    for m, c in zip(inputs, copies, strict=True):
        np.testing.assert_array_equal(m, c)


def test_blocked_evaluation_equals_evaluating_the_matrix(small_budgets):
    rng = np.random.default_rng(7)
    feats, labels = _clustered(rng, num_ids=30, per_id=6, dim=16, spread=0.9)
    cams = rng.integers(0, 4, labels.size)
    is_query = np.zeros(labels.size, dtype=bool)
    is_query[::6] = True
    qf, gf = feats[is_query], feats[~is_query]
    args = labels[is_query], labels[~is_query], cams[is_query], cams[~is_query]
    dist = [pairwise_distance(a, b) for a, b in ((qf, gf), (qf, qf), (gf, gf))]
    want_cmc, want_ap = evaluate_rank(re_ranking_dense(*dist, k1=6, k2=3), *args)
    cmc, m_ap = evaluate_rank_blocks(re_ranked_blocks(qf, gf, k1=6, k2=3), *args)
    np.testing.assert_allclose(cmc, want_cmc, atol=1e-6)
    assert m_ap == pytest.approx(want_ap, abs=1e-6)


def test_re_ranking_lambda_one_is_the_normalised_squared_input():
    rng = np.random.default_rng(1)
    feats, _ = _clustered(rng, num_ids=5, per_id=4, dim=3, spread=0.5)
    qg, qq, gg = _split_distances(feats, 6)
    got = re_ranking(qg, qq, gg, lambda_value=1.0)
    # Row i of the working distance: squared distances divided by the largest squared
    # distance from query i to any image (queries and gallery together).
    peak = np.maximum(qq.max(axis=1), qg.max(axis=1)) ** 2
    np.testing.assert_allclose(got, qg**2 / peak[:, None], rtol=1e-6)


def test_re_ranking_symmetric_inputs():
    rng = np.random.default_rng(2)
    feats, _ = _clustered(rng, num_ids=6, per_id=5, dim=4, spread=0.5)
    qg, qq, gg = _split_distances(feats, 10)
    # The Jaccard part does not depend on which side is called query.
    forward = re_ranking(qg, qq, gg, k1=6, k2=3, lambda_value=0.0)
    swapped = re_ranking(qg.T, gg, qq, k1=6, k2=3, lambda_value=0.0)
    np.testing.assert_allclose(forward, swapped.T, atol=1e-6)
    # Query set == gallery set: the Jaccard distance matrix is symmetric with zero diagonal.
    d = pairwise_distance(feats, feats, metric="euclidean")
    d = (d + d.T) / 2
    same = re_ranking(d, d, d, k1=6, k2=3, lambda_value=0.0)
    np.testing.assert_allclose(same, same.T, atol=1e-6)
    np.testing.assert_allclose(np.diag(same), 0.0, atol=1e-6)


def test_re_ranking_k1_larger_than_all_images():
    rng = np.random.default_rng(4)
    feats, _ = _clustered(rng, num_ids=3, per_id=4, dim=3, spread=0.5)
    qg, qq, gg = _split_distances(feats, 4)
    got = re_ranking(qg, qq, gg, k1=100, k2=30, lambda_value=0.3)
    want = re_ranking_rows(qg, qq, gg, 100, 30, 0.3)
    assert got.shape == (4, 8)
    assert np.all(np.isfinite(got)) and np.all((got >= 0) & (got <= 1 + 1e-6))
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


def test_re_ranking_does_not_lower_map_on_clustered_features():
    rng = np.random.default_rng(7)
    feats, labels = _clustered(rng, num_ids=40, per_id=8, dim=16, spread=0.9)
    cams = rng.integers(0, 4, labels.size)
    is_query = np.zeros(labels.size, dtype=bool)
    is_query[::8] = True  # one query per identity
    qf, gf = feats[is_query], feats[~is_query]
    qp, gp = labels[is_query], labels[~is_query]
    qc, gc = cams[is_query], cams[~is_query]
    qg = pairwise_distance(qf, gf, metric="euclidean")
    qq = pairwise_distance(qf, qf, metric="euclidean")
    gg = pairwise_distance(gf, gf, metric="euclidean")
    _, base_map = evaluate_rank(qg, qp, gp, qc, gc)
    _, rr_map = evaluate_rank(re_ranking(qg, qq, gg, k1=6, k2=3), qp, gp, qc, gc)
    assert 0.2 < base_map < 0.95  # a setting where there is something to gain
    assert rr_map >= base_map


def test_re_ranking_rejects_bad_arguments():
    qg = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="g_g_dist"):
        re_ranking(qg, np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="lambda_value"):
        re_ranking(qg, np.ones((2, 2)), np.ones((3, 3)), lambda_value=1.5)
    with pytest.raises(ValueError, match="k1 and k2"):
        re_ranking(qg, np.ones((2, 2)), np.ones((3, 3)), k1=0)
    with pytest.raises(UserError, match="NaN"):
        re_ranking(qg, np.full((2, 2), np.nan), np.ones((3, 3)))
    feats = np.ones((3, 4), np.float32)
    with pytest.raises(UserError, match="NaN or inf"):
        re_ranked_blocks(feats, np.full((3, 4), np.inf, np.float32))
    with pytest.raises(UserError, match="non-empty"):
        re_ranked_blocks(np.zeros((0, 0), np.float32), feats)
    with pytest.raises(ValueError, match=r"\[Nq, D\]"):
        re_ranked_blocks(feats, feats[:, :3])
