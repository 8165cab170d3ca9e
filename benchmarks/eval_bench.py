"""Benchmark of :func:`maskpre_tf.evaluation.ranking.evaluate_rank` at Market-1501 test size.

Builds a synthetic Market-1501-shaped evaluation (3,368 queries x 15,913 gallery images, 750
identities plus 2,793 distractors with pid 0, 6 cameras; embeddings clustered by identity, cosine
distances in float32) and times, in the same run:

* ``evaluate_rank`` (chunked, vectorised);
* a per-query NumPy loop baseline, the classic algorithm: argsort one row, drop same pid and
  camera, cumsum; once with a stable argsort (same tie rule, results must agree) and once with
  NumPy's default quicksort (what the widely used libraries call).

Prints the times, the speed-up ratios, CMC at ranks 1/5/10 and mAP, and fails if the results of
``evaluate_rank`` and the stable baseline differ. The machine may be shared: compare ratios.

Usage::

    python benchmarks/eval_bench.py            # Market-1501 size
    python benchmarks/eval_bench.py --quick    # small smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from maskpre_tf.evaluation.distance import pairwise_distance  # noqa: E402
from maskpre_tf.evaluation.ranking import evaluate_rank  # noqa: E402


def loop_baseline(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, kind):
    """Classic per-query evaluation: one argsort per query row, mask, cumsum.

    Returns ``(cmc, mAP)`` as float32 [min(max_rank, num_gallery)] and float.
    """
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    curves, aps = [], []
    for i in range(num_q):
        order = np.argsort(distmat[i], kind=kind)
        pids = g_pids[order]
        keep = (pids != q_pids[i]) | (g_camids[order] != q_camids[i])
        hits = (pids[keep] == q_pids[i]).astype(np.int32)
        if not hits.any():
            continue
        found = hits.cumsum()
        num_rel = found[-1]
        first = np.minimum(found[:max_rank], 1)
        curves.append(first)
        precision = found / np.arange(1.0, found.size + 1)
        aps.append(float((precision * hits).sum() / num_rel))
    cmc = np.asarray(curves, dtype=np.float32).sum(axis=0) / len(curves)
    return cmc, float(np.mean(aps))


def synthetic_market(num_query, num_gallery, num_ids, num_distractors, num_cams, seed):
    """Clustered embeddings with Market-like identity/camera structure → cosine distances.

    Returns ``(distmat float32 [Nq, Ng], q_pids, g_pids, q_camids, g_camids)``.
    """
    rng = np.random.default_rng(seed)
    dim = 128
    centres = rng.normal(size=(num_ids + 1, dim))
    num_id_images = num_gallery - num_distractors
    q_pids = rng.integers(1, num_ids + 1, num_query)
    g_pids = np.concatenate(
        [
            rng.permutation(np.resize(np.arange(1, num_ids + 1), num_id_images)),
            np.zeros(num_distractors, dtype=np.int64),
        ]
    )
    q_cams = rng.integers(0, num_cams, num_query)
    g_cams = rng.integers(0, num_cams, num_gallery)
    cam_shift = 0.6 * rng.normal(size=(num_cams, dim))  # camera-specific appearance bias

    def embed(pids, cams):
        base = centres[pids]
        base[pids == 0] = rng.normal(size=(int((pids == 0).sum()), dim))
        return base + cam_shift[cams] + 1.1 * rng.normal(size=base.shape)

    qf = embed(q_pids, q_cams).astype(np.float32)
    gf = embed(g_pids, g_cams).astype(np.float32)
    return pairwise_distance(qf, gf, metric="cosine"), q_pids, g_pids, q_cams, g_cams


def best_time(fn, repeats):
    """Minimum wall time over ``repeats`` calls and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (~1 s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of evaluate_rank")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.quick:
        shape = dict(num_query=400, num_gallery=2000, num_ids=100, num_distractors=350)
    else:
        shape = dict(num_query=3368, num_gallery=15913, num_ids=750, num_distractors=2793)
    dist, qp, gp, qc, gc = synthetic_market(num_cams=6, seed=args.seed, **shape)
    print(f"distmat {dist.shape} {dist.dtype}, {shape['num_ids']} ids, 6 cameras")

    t_vec, (cmc, m_ap) = best_time(lambda: evaluate_rank(dist, qp, gp, qc, gc), args.repeats)
    t_stable, (ref_cmc, ref_ap) = best_time(
        lambda: loop_baseline(dist, qp, gp, qc, gc, 50, "stable"), 1
    )
    t_quick, (qs_cmc, qs_ap) = best_time(
        lambda: loop_baseline(dist, qp, gp, qc, gc, 50, "quicksort"), 1
    )

    print(f"rank-1 {cmc[0]:.4f}  rank-5 {cmc[4]:.4f}  rank-10 {cmc[9]:.4f}  mAP {m_ap:.4f}")
    print(f"evaluate_rank (vectorised)    {t_vec:8.3f} s  (best of {args.repeats})")
    print(f"loop baseline, stable argsort {t_stable:8.3f} s  ratio {t_stable / t_vec:6.1f}x")
    print(f"loop baseline, quicksort      {t_quick:8.3f} s  ratio {t_quick / t_vec:6.1f}x")
    cmc_diff = float(np.abs(cmc - ref_cmc).max())
    print(f"vs stable baseline: max |cmc diff| {cmc_diff:.2e}, |mAP diff| {abs(m_ap - ref_ap):.2e}")
    print(f"vs quicksort baseline: |mAP diff| {abs(m_ap - qs_ap):.2e} (tie order may differ)")
    np.testing.assert_allclose(cmc, ref_cmc, rtol=0, atol=1e-6)
    assert abs(m_ap - ref_ap) <= 1e-9, (m_ap, ref_ap)
    print("results identical to the stable baseline (cmc within 1e-6, mAP within 1e-9)")


if __name__ == "__main__":
    main()
