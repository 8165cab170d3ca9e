"""Benchmark: our pseudo labels against cluster-contrast's own code, on the same features.

cluster-contrast (Dai et al., 2021; github.com/alibaba/cluster-contrast-reid) clusters with
``compute_jaccard_distance(features, k1=30, k2=6)`` (``clustercontrast/utils/faiss_rerank.py``,
dense ``N x N``) and ``DBSCAN(eps, min_samples=4, metric="precomputed")``. This script runs that
code from a checkout given by ``--peer-dir``, in the interpreter given by ``--peer-python`` (a
virtual environment with torch, faiss and scikit-learn; the peer code runs on the CPU), and
compares its labels with ours (:func:`measure.fixed_eps_labels`) for both neighbourhood
conventions at every ``--eps``: adjusted Rand index (ARI) between the two labellings, and the
numbers of clusters and outliers. Each side runs in a subprocess of its own (times and peak
memory reported; the machine may be shared).

Features: ``--features PATH.npy`` (``[N, D]`` float32, e.g. embeddings of a training set), else
the synthetic Market-1501-size mixture of ``cluster_bench.py`` (12,936 x 2048). Both sides get
the same L2-normalised rows (cluster-contrast's model normalises its features in eval mode).

Usage::

    python benchmarks/cc_labels_bench.py [--features F.npy] [--peer-dir DIR] [--peer-python PY]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
from measure import fixed_eps_labels, peak_mib, rss_mib, run_worker

K1, K2, MIN_SAMPLES = 30, 6, 4
CONVENTIONS = ("cluster_contrast", "zhong")


def _dbscan_labels(dist, eps_values: list[float]) -> dict[str, np.ndarray]:
    """DBSCAN labels of a precomputed distance matrix at every eps (cluster-contrast's call)."""
    from sklearn.cluster import DBSCAN

    return {
        str(eps): DBSCAN(eps=eps, min_samples=MIN_SAMPLES, metric="precomputed", n_jobs=-1)
        .fit_predict(dist)
        .astype(np.int64)
        for eps in eps_values
    }


def peer_worker(spec: dict) -> dict:
    """cluster-contrast's Jaccard distance and DBSCAN, run in the peer's environment."""
    sys.path.insert(0, spec["peer_dir"])
    import torch
    from clustercontrast.utils.faiss_rerank import compute_jaccard_distance

    features = torch.from_numpy(np.load(spec["features"]))
    rss_before = rss_mib()
    start = time.perf_counter()
    dist = compute_jaccard_distance(features, k1=K1, k2=K2, print_flag=False, search_option=3)
    jaccard_s = time.perf_counter() - start
    labels = _dbscan_labels(dist, spec["eps"])
    total = time.perf_counter() - start
    np.savez(spec["labels_out"], **labels)
    return {"total_s": total, "jaccard_s": jaccard_s, "growth_mib": peak_mib() - rss_before}


def our_worker(spec: dict) -> dict:
    """Our sparse pseudo labels for one convention at every eps."""
    x = np.load(spec["features"])
    rss_before = rss_mib()
    start = time.perf_counter()
    labels = {
        str(eps): fixed_eps_labels(x, eps, MIN_SAMPLES, K1, K2, convention=spec["c"])
        for eps in spec["eps"]
    }
    total = time.perf_counter() - start
    np.savez(spec["labels_out"], **labels)
    return {"total_s": total, "growth_mib": peak_mib() - rss_before}


def _features(path: str, out: str, seed: int) -> str:
    """Save the L2-normalised float32 features both sides read; return the file name."""
    if path:
        x = np.load(path).astype(np.float32)
    else:
        from cluster_bench import mixture_features

        x, _ = mixture_features(12_936, 2048, seed=seed)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    np.save(out, np.ascontiguousarray(x))
    return out


def _describe(labels: np.ndarray) -> str:
    inliers = labels[labels >= 0]
    return f"{len(np.unique(inliers)):5d} clusters, {int((labels < 0).sum()):6d} outliers"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="", help="[N, D] .npy (default: synthetic)")
    parser.add_argument("--peer-dir", default="/work/peer/cluster-contrast-reid")
    parser.add_argument("--peer-python", default="/work/peer/venv/bin/python")
    parser.add_argument("--eps", default="0.5,0.6,0.7", help="comma-separated DBSCAN radii")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--peer-worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker or args.peer_worker:
        run = our_worker if args.worker else peer_worker
        print(json.dumps(run(json.loads(args.worker or args.peer_worker))), flush=True)
        return

    from sklearn.metrics import adjusted_rand_score

    eps_values = [float(e) for e in args.eps.split(",")]
    if not os.path.exists(os.path.join(args.peer_dir, "clustercontrast")):
        raise SystemExit(f"--peer-dir {args.peer_dir}: no clustercontrast package there")
    with tempfile.TemporaryDirectory() as tmp:
        feats = _features(args.features, os.path.join(tmp, "features.npy"), args.seed)
        n, d = np.load(feats, mmap_mode="r").shape
        print(f"cc_labels_bench: {n:,} x {d} features, k1={K1} k2={K2} min_samples={MIN_SAMPLES}")
        spec = {"features": feats, "eps": eps_values, "peer_dir": args.peer_dir}
        peer_out = os.path.join(tmp, "peer.npz")
        res = run_worker(
            __file__,
            ["--peer-worker", json.dumps({**spec, "labels_out": peer_out})],
            python=args.peer_python,
        )
        if res is None:
            raise SystemExit("cluster-contrast's code failed; see its error output above")
        print(
            f"  cluster-contrast compute_jaccard_distance + DBSCAN: {res['total_s']:.1f} s "
            f"(Jaccard {res['jaccard_s']:.1f} s), growth {res['growth_mib']:,.0f} MiB"
        )
        peer = np.load(peer_out)
        for convention in CONVENTIONS:
            ours_out = os.path.join(tmp, f"{convention}.npz")
            res = run_worker(
                __file__,
                ["--worker", json.dumps({**spec, "c": convention, "labels_out": ours_out})],
            )
            if res is None:
                continue
            print(
                f"  ours, convention {convention}: {res['total_s']:.1f} s for "
                f"{len(eps_values)} eps, growth {res['growth_mib']:,.0f} MiB"
            )
            ours = np.load(ours_out)
            for eps in eps_values:
                key = str(eps)
                ari = adjusted_rand_score(peer[key], ours[key])
                print(
                    f"    eps {eps:.2f}: ARI vs cluster-contrast {ari:.4f}; ours "
                    f"{_describe(ours[key])}; cluster-contrast {_describe(peer[key])}"
                )


if __name__ == "__main__":
    main()
