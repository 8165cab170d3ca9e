"""Benchmark: sparse k-reciprocal Jaccard + DBSCAN pseudo labels against the dense reference.

Each configuration runs in its own subprocess so that its peak resident memory (``ru_maxrss``)
is its own. Features are a synthetic mixture of identities (see :func:`mixture_features`),
generated inside the subprocess in float32 blocks; the time and memory of the clustering call
are measured after generation, and the table shows both the whole-process peak and the growth
over the resident size just before the call.

Configurations (``k1 = 30``, ``k2 = 6``, ``eps = 0.6``, ``min_samples = 4``, the default
cluster-contrast neighbourhood convention on both paths; the dense reference is
``tests/reference_jaccard.cluster_dense``):

* full run: ``N = 12,936`` and ``32,621`` at ``d = 2048`` (Market-1501 and MSMT17 training-set
  sizes), sparse path and dense reference; sparse path alone at ``N = 100,000`` (exact k-NN) and
  ``N = 1,000,000`` (IVF k-NN, recall against exact search printed) at ``d = 256``.
* ``--quick``: ``N = 3,000`` and ``6,000`` at ``d = 2048`` (both paths), ``N = 30,000`` at
  ``d = 256`` with the IVF index (sparse only); about a minute.

Compared configurations run ``--repeats`` times (default 2), alternating the two paths, and
report each path's fastest run (and the largest peak memory seen), which tames the noise of a
shared machine. Times are wall-clock seconds of the clustering call, from features to labels.

k-NN back-ends (column "k-NN"): the sparse path uses what ``index="auto"`` picks (the
symmetric tiled exact search ``flat`` at ``d = 2048``, ``faiss_flat`` at ``d = 256``, ``ivf``
above 200,000 samples); the dense reference uses ``faiss.knn`` (``faiss_flat``), as the
dense implementations do.

Usage::

    python benchmarks/cluster_bench.py [--quick] [--table PATH] [--sizes N,N,...] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from measure import (
    fastest,
    fixed_eps_labels,
    mem_available_gib,
    peak_mib,
    rss_mib,
    run_worker,
)

EPS = 0.6
MIN_SAMPLES = 4
K1 = 30
K2 = 6


@dataclass(frozen=True)
class Config:
    """One benchmark run: path ("sparse" or "dense"), size, width and k-NN back-end."""

    path: str
    n: int
    d: int
    index: str


def mixture_features(
    n: int,
    d: int,
    mean_size: int = 17,
    sigma: float = 1.0,
    rho: float = 0.8,
    group: int = 8,
    hard: float = 0.1,
    singletons: float = 0.05,
    seed: int = 0,
    block: int = 2048,
    with_family: bool = False,
) -> tuple[np.ndarray, ...]:
    """Synthetic re-ID-like features: identities grouped in look-alike families, plus loners.

    Identity centres are unit vectors ``normalize(g + rho * u)`` where ``g`` is one of
    ``num_ids / group`` family directions and ``u`` is the identity's own random direction, so
    identities of a family are similar (cos about ``1 / (1 + rho^2)``). A sample is its centre
    plus isotropic Gaussian noise of norm about ``sigma * m``, ``m ~ U(0.5, 1.5)``, or ``3`` for a
    ``hard`` fraction of samples. A ``singletons`` fraction of samples are identities of their
    own (natural outliers). Mean identity size ``mean_size`` (17 is Market-1501's). Rows are
    L2-normalised, like the embeddings a re-ID model hands to clustering.

    Returns:
      ``([n, d] float32 unit-norm features, [n] int64 identity ids)``, deterministic for ``seed``;
      generated in blocks so that peak memory stays about ``n * d * 4`` bytes. With
      ``with_family`` also each sample's family id ``[n]`` (a loner is a family of its own).
    """
    rng = np.random.default_rng(seed)
    n_single = int(round(singletons * n))
    n_grouped = n - n_single
    n_ids = max(1, n_grouped // mean_size)
    pid = np.concatenate(
        (np.sort(rng.integers(0, n_ids, n_grouped)), n_ids + np.arange(n_single))
    ).astype(np.int64)
    n_fam = max(1, n_ids // group)
    fam = rng.standard_normal((n_fam, d), dtype=np.float32)
    fam /= np.linalg.norm(fam, axis=1, keepdims=True)
    centres = rng.standard_normal((n_ids + n_single, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    family_of_id = np.concatenate((rng.integers(0, n_fam, n_ids), n_fam + np.arange(n_single)))
    centres[:n_ids] = fam[family_of_id[:n_ids]] + rho * centres[:n_ids]
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, block):
        e = min(n, s + block)
        mult = np.where(rng.random(e - s) < hard, 3.0, rng.uniform(0.5, 1.5, e - s))
        scale = (sigma / np.sqrt(d) * mult).astype(np.float32)
        x[s:e] = centres[pid[s:e]]
        x[s:e] += rng.standard_normal((e - s, d), dtype=np.float32) * scale[:, None]
        x[s:e] /= np.linalg.norm(x[s:e], axis=1, keepdims=True)
    return (x, pid, family_of_id[pid]) if with_family else (x, pid)


def worker(cfg: Config, seed: int, labels_out: str) -> dict:
    """Run one configuration in this process and return its measurements."""
    import faiss
    from reference_jaccard import cluster_dense

    from maskpre_tf.clustering.cluster import cluster_statistics
    from maskpre_tf.clustering.jaccard import neighbour_depth
    from maskpre_tf.clustering.knn import knn_recall, knn_search, l2_normalize

    threads = os.cpu_count() or 1
    faiss.omp_set_num_threads(threads)
    x, pid = mixture_features(cfg.n, cfg.d, seed=seed)
    rss_before = rss_mib()
    peak_before = peak_mib()
    timings: dict = {}
    recall = None
    start = time.perf_counter()
    if cfg.path == "dense":
        labels = cluster_dense(x, eps=EPS, min_samples=MIN_SAMPLES, k1=K1, k2=K2, timings=timings)
    elif cfg.index == "ivf":
        # k-NN outside the labelling so that the approximate lists can be scored afterwards.
        t0 = time.perf_counter()
        xn = l2_normalize(x)
        del x
        depth = neighbour_depth(cfg.n, K1, K2, "cluster_contrast")
        _, ranks = knn_search(xn, depth, index="ivf", normalize=False, seed=seed)
        knn_s = time.perf_counter() - t0
        labels = fixed_eps_labels(xn, EPS, MIN_SAMPLES, K1, K2, timings, ranks=ranks)
        timings["knn"] = knn_s
    else:
        labels = fixed_eps_labels(x, EPS, MIN_SAMPLES, K1, K2, timings, index=cfg.index)
    total = time.perf_counter() - start
    peak = peak_mib()
    if cfg.path == "sparse" and cfg.index == "ivf":
        recall = knn_recall(xn, ranks, num_queries=1000, seed=seed, normalize=False)
    np.save(labels_out, labels)
    stats = cluster_statistics(labels, pid)
    return {
        "path": cfg.path,
        "n": cfg.n,
        "d": cfg.d,
        "index": cfg.index,
        "threads": threads,
        "total_s": total,
        "knn_s": timings.get("knn", float("nan")),
        "jaccard_s": timings.get("jaccard", float("nan")),
        "dbscan_s": timings.get("dbscan", float("nan")),
        "rss_before_mib": rss_before,
        "peak_before_mib": peak_before,
        "peak_mib": peak,
        "growth_mib": peak - rss_before,
        "ivf_recall": recall,
        "num_clusters": stats["num_clusters"],
        "outlier_fraction": stats["outlier_fraction"],
        "ari_vs_truth": stats["ari"],
    }


def run_config(cfg: Config, seed: int, workdir: str) -> dict | None:
    """Run one configuration in a fresh subprocess; ``None`` with a message if it failed."""
    labels_out = os.path.join(workdir, f"{cfg.path}_{cfg.n}.npy")
    spec = json.dumps({"path": cfg.path, "n": cfg.n, "d": cfg.d, "index": cfg.index})
    args = ["--worker", spec, "--seed", str(seed), "--labels-out", labels_out]
    result = run_worker(__file__, args)
    if result is not None:
        result["labels"] = labels_out
    return result


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None or v != v else format(v, spec)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (~1 min)")
    parser.add_argument("--table", type=str, default="", help="also write the table to PATH")
    parser.add_argument(
        "--sizes", type=str, default="", help="comma-separated subset of N values to run"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="runs per compared configuration (alternating paths); the fastest is reported",
    )
    parser.add_argument("--worker", type=str, default="", help=argparse.SUPPRESS)
    parser.add_argument("--labels-out", type=str, default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        cfg = Config(**json.loads(args.worker))
        print(json.dumps(worker(cfg, args.seed, args.labels_out)), flush=True)
        return

    from sklearn.metrics import adjusted_rand_score

    if args.quick:
        compared = [(3000, 2048), (6000, 2048)]
        alone = [(30_000, 256, "ivf")]
    else:
        compared = [(12_936, 2048), (32_621, 2048)]
        alone = [(100_000, 256, "faiss_flat"), (1_000_000, 256, "ivf")]
    if args.sizes:
        keep = {int(s) for s in args.sizes.split(",")}
        compared = [c for c in compared if c[0] in keep]
        alone = [c for c in alone if c[0] in keep]

    print(
        f"cluster_bench: k1={K1} k2={K2} eps={EPS} min_samples={MIN_SAMPLES}, "
        f"{os.cpu_count()} CPU threads, one subprocess per configuration",
        flush=True,
    )
    header = (
        "| N | d | path | k-NN | total s | k-NN s | Jaccard s | DBSCAN s | peak RSS MiB "
        "| growth MiB | speed-up | memory ratio (peak / growth) | ARI sparse-dense "
        "| clusters | outliers | ARI vs truth |"
    )
    rows = [header, "|" + "|".join(["---"] * (header.count("|") - 1)) + "|"]
    notes: list[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        for n, d in compared:
            sparse_runs: list[dict] = []
            dense_runs: list[dict] = []
            need_gib = 3.2 * n * n * 4 / 2**30 + n * d * 8 / 2**30
            for _ in range(max(1, args.repeats)):
                # Alternate the two paths so that both see the same share of a busy machine.
                res = run_config(Config("sparse", n, d, "flat"), args.seed, workdir)
                sparse_runs += [res] if res else []
                if mem_available_gib() < need_gib * 1.15:
                    notes.append(f"dense N={n} skipped: needs ~{need_gib:.1f} GiB free")
                    break
                res = run_config(Config("dense", n, d, "faiss_flat"), args.seed, workdir)
                dense_runs += [res] if res else []
            sparse = fastest(sparse_runs)
            dense = fastest(dense_runs)
            speed = mem = ari = None
            if sparse is not None and dense is not None:
                speed = dense["total_s"] / sparse["total_s"]
                mem = (
                    f"{sparse['peak_mib'] / dense['peak_mib']:.3f} / "
                    f"{sparse['growth_mib'] / dense['growth_mib']:.3f}"
                )
                ari = adjusted_rand_score(np.load(sparse["labels"]), np.load(dense["labels"]))
            for res in (sparse, dense):
                if res is not None:
                    is_sparse = res is sparse
                    rows.append(_row(res, *((speed, mem, ari) if is_sparse else (None,) * 3)))
                    print(_summary(res), flush=True)
            if speed is not None:
                print(
                    f"  N={n}: sparse is {speed:.2f}x faster; peak RSS ratio / growth ratio "
                    f"(sparse/dense) {mem}; ARI(sparse, dense) {ari:.4f}",
                    flush=True,
                )
        for n, d, index in alone:
            res = run_config(Config("sparse", n, d, index), args.seed, workdir)
            if res is None:
                notes.append(f"sparse N={n} failed")
                continue
            rows.append(_row(res, None, None, None))
            print(_summary(res), flush=True)
            if res["ivf_recall"] is not None:
                notes.append(
                    f"N={n}: IVF k-NN (IndexIVFFlat, inner product, nlist=4*sqrt(N), nprobe=16) "
                    f"recall@{K1} vs exact search on 1,000 random queries: "
                    f"{res['ivf_recall']:.4f}"
                )
    table = "\n".join(rows)
    print()
    print(table)
    for note in notes:
        print(f"- {note}")
    print(f"benchmark wall time {time.perf_counter() - started:.0f} s")
    if args.table:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        preamble = (
            f"Pseudo-label clustering, sparse path vs dense reference "
            f"(`python benchmarks/cluster_bench.py{' --quick' if args.quick else ''}`, fastest "
            f"of {args.repeats} alternating runs per compared path, "
            f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU threads, {mem_gib:.0f} GiB RAM, "
            f"k1={K1}, k2={K2}, eps={EPS}, min_samples={MIN_SAMPLES}; synthetic unit-norm "
            "mixture features). *growth* = peak RSS minus RSS just before the call (features "
            "and imports excluded); ratios are sparse / dense.\n\n"
        )
        body = preamble + table + "\n" + "".join(f"\n- {note}" for note in notes) + "\n"
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text(body)


def _row(res: dict, speed: float | None, mem: str | None, ari: float | None) -> str:
    return (
        f"| {res['n']:,} | {res['d']} | {res['path']} | {res['index']} "
        f"| {res['total_s']:.1f} | {res['knn_s']:.1f} | {res['jaccard_s']:.1f} "
        f"| {res['dbscan_s']:.1f} | {res['peak_mib']:.0f} | {res['growth_mib']:.0f} "
        f"| {_fmt(speed, '.2f')} | {mem or '—'} | {_fmt(ari, '.4f')} "
        f"| {res['num_clusters']:,} | {100 * res['outlier_fraction']:.1f}% "
        f"| {res['ari_vs_truth']:.3f} |"
    )


def _summary(res: dict) -> str:
    return (
        f"  {res['path']:6s} N={res['n']:>9,} d={res['d']:4d} knn={res['index']:10s} "
        f"total {res['total_s']:7.1f} s (knn {res['knn_s']:.1f}, jaccard {res['jaccard_s']:.1f}, "
        f"dbscan {res['dbscan_s']:.1f}); peak RSS {res['peak_mib']:.0f} MiB, growth "
        f"{res['growth_mib']:.0f} MiB; {res['num_clusters']} clusters, "
        f"{100 * res['outlier_fraction']:.1f}% outliers"
    )


if __name__ == "__main__":
    main()
