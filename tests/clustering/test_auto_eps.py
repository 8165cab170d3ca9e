"""The automatic eps: the linked-pair F1 by hand, and the choice on clusters of known shape."""

import numpy as np
import pytest
import scipy.sparse as sp
from test_probe import blobs

from maskpre_tf.clustering.auto_eps import (
    GRID,
    choose_eps,
    linked_pair_f1,
    linked_pairs,
    plateau_end,
)
from maskpre_tf.clustering.cluster import cluster_statistics, jaccard_graph, pseudo_labels
from maskpre_tf.config import ClusteringConfig


def graph(pairs: list[tuple[int, int, float]], n: int) -> sp.csr_array:
    """A symmetric distance graph of n nodes with the given (i, j, distance) and a 0 diagonal."""
    rows = [i for i, j, _ in pairs] + [j for i, j, _ in pairs] + list(range(n))
    cols = [j for i, j, _ in pairs] + [i for i, j, _ in pairs] + list(range(n))
    data = [d for *_, d in pairs] * 2 + [0.0] * n
    return sp.csr_array((data, (rows, cols)), shape=(n, n))


def test_linked_pairs_leave_out_the_diagonal_and_distant_pairs():
    rows, cols = linked_pairs(graph([(0, 1, 0.2), (1, 2, 0.85), (2, 3, 0.5)], 4))
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [
        (0, 1),
        (1, 0),
        (2, 3),
        (3, 2),
    ]


def test_linked_pair_f1_by_hand():
    # Links 0-1, 1-2, 3-4 (both ways: 6 ordered pairs).
    rows, cols = linked_pairs(graph([(0, 1, 0.1), (1, 2, 0.1), (3, 4, 0.1)], 5))
    # {0,1,2} {3,4}: every link inside; 6 + 2 ordered pairs inside -> P 6/8, R 1.
    assert np.isclose(linked_pair_f1(np.array([0, 0, 0, 1, 1]), rows, cols), 2 * 0.75 / 1.75)
    # One cluster of all five: P 6/20, R 1.
    assert np.isclose(linked_pair_f1(np.zeros(5, int), rows, cols), 2 * 0.3 / 1.3)
    # {0,1} and outliers: P 2/2, R 2/6.
    assert np.isclose(
        linked_pair_f1(np.array([0, 0, -1, -1, -1]), rows, cols), 2 * (1 / 3) / (4 / 3)
    )
    assert linked_pair_f1(np.full(5, -1), rows, cols) == 0.0


def test_linked_rule_recovers_separated_clusters_that_most_clusters_fragments():
    for seed, spread in ((0, 0.15), (1, 0.3), (2, 0.4)):
        features, pids = blobs(ids=30, per_id=20, spread=spread, seed=seed)
        clustering = pseudo_labels(features, ClusteringConfig("auto_linked", k1=10, k2=3))
        labels, eps = clustering.labels, clustering.eps
        stats = cluster_statistics(labels, pids)
        assert eps in GRID and stats["num_clusters"] == 30 and stats["ari"] > 0.99, (seed, eps)
        # The training path and the rule on the graph agree.
        dist = jaccard_graph(features, GRID[-1], 10, 3)
        assert choose_eps(dist, 4, rule="auto_linked") == eps
        # With no merging inside the grid, the count peaks where identities are fragments.
        fragments = pseudo_labels(features, ClusteringConfig("auto", k1=10, k2=3)).labels
        assert cluster_statistics(fragments, pids)["ari"] < 0.7


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="auto_linked"):
        choose_eps(graph([(0, 1, 0.1)], 2), rule="best")


def test_plateau_end_walks_right_while_the_score_stays_near_the_peak():
    # A trained Market run's cluster counts at eps 0.300 .. 0.525: flat, then merging.
    counts = [716, 727, 726, 725, 720, 724, 715, 705, 715, 662]
    assert plateau_end(counts, 0.0) == 1  # the peak itself
    assert plateau_end(counts, 0.01) == 5  # 720 <= count; 715 falls below 719.7
    assert plateau_end(counts, 0.02) == 6  # stops at the dip to 705, not at the 715 after it
    assert plateau_end(counts, 0.5) == len(counts) - 1
    # A sharp peak (ImageNet features) stays where it is.
    assert plateau_end([342, 390, 314], 0.02) == 1


def test_a_tolerance_moves_the_choice_to_larger_eps_on_a_flat_count():
    features, _ = blobs(ids=30, per_id=20, spread=0.15, seed=0)
    dist = jaccard_graph(features, GRID[-1], 10, 3)
    peak = choose_eps(dist, 4, rule="auto")
    wide = choose_eps(dist, 4, rule="auto", tolerance=0.05)
    # Counts 46, 46, 45 at eps 0.350-0.400: the peak is the first, the plateau ends at 0.400.
    assert (peak, wide) == (0.35, 0.4)
    eps = pseudo_labels(features, ClusteringConfig("auto", 0.05, k1=10, k2=3)).eps
    assert eps == wide
