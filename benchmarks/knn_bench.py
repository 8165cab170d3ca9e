"""Benchmark: all-pairs k-NN for clustering at scale, approximate indexes against exact search.

The pseudo-label engine needs every training feature's ``k`` nearest features (the queries are
the database). Exact search is ``O(N^2 d)``; above 200,000 samples ``knn_search`` uses an index.
This benchmark builds each index over ``N`` synthetic re-ID-like features (``cluster_bench``'s
mixture: identities in look-alike families, hard samples and loners), searches every sample,
and scores the lists against exact search on a random sample of queries:

* recall@k overall, and split by what each true neighbour is to its query: the same identity,
  another identity of the same family, or unrelated (a point that is only close by chance);
* the recall of the exact lists' k-reciprocal pairs (``j`` in ``N(i)`` and ``i`` in ``N(j)``),
  the pairs the Jaccard distance is built from;
* with ``--cluster``, the pseudo labels clustered from each method's lists (eps 0.6, as
  ``cluster_bench``): ARI against the true identities and against the labels of ``exact``.

Each method runs in a subprocess of its own (its time and memory are its own), with all CPU
threads. Methods: ``ivfP`` (``faiss.IndexIVFFlat``, ``4 sqrt(N)`` cells, ``P`` probed; ``ivf16``
is what ``knn_search(index="ivf")`` does today), ``exact`` (``faiss_flat``, list it first to
compare labels with it) and ``hnswM_E`` (``faiss.IndexHNSWFlat`` with
``M`` links, ``efConstruction`` 40, ``efSearch`` ``E``).

Usage::

    python benchmarks/knn_bench.py [--n 1000000] [--d 256] [--methods ivf16,hnsw32_128]
        [--queries 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
from cluster_bench import EPS, K1, K2, MIN_SAMPLES, mixture_features
from measure import fixed_eps_labels, peak_mib, rss_mib, run_worker

HNSW_EF_CONSTRUCTION = 40
BATCH = 16384


def build_and_search(method: str, x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, dict]:
    """Every row's ``k`` neighbour ids [N, k] with ``method``, and its build/search seconds."""
    import faiss

    from maskpre_tf.clustering.knn import build_ivf_index, knn_search

    n, d = x.shape
    start = time.perf_counter()
    if method == "exact":
        ids = knn_search(x, k, index="faiss_flat", normalize=False)[1]
        return ids, {"build_s": 0.0, "search_s": time.perf_counter() - start}
    if method.startswith("ivf"):
        index = build_ivf_index(x, nprobe=int(method[3:]), seed=seed)
    elif method.startswith("hnsw"):
        links, ef = (int(v) for v in method[4:].split("_"))
        index = faiss.IndexHNSWFlat(d, links, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.add(x)
        index.hnsw.efSearch = ef
    else:
        raise SystemExit(f"unknown method {method!r}: ivfP or hnswM_E")
    built = time.perf_counter()
    ids = np.empty((n, k), np.int64)
    for s in range(0, n, BATCH):
        ids[s : s + BATCH] = index.search(x[s : s + BATCH], k)[1]
    searched = time.perf_counter()
    return ids, {"build_s": built - start, "search_s": searched - built}


def worker(method: str, n: int, d: int, seed: int, ids_out: str, labels_out: str) -> dict:
    """Run one method in this process: its neighbour lists go to ``ids_out``; with
    ``labels_out``, also the pseudo labels clustered from them (eps 0.6, as cluster_bench)."""
    import faiss

    from maskpre_tf.clustering.jaccard import neighbour_depth

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    x, _ = mixture_features(n, d, seed=seed)
    before = rss_mib()
    ids, times = build_and_search(method, x, neighbour_depth(n, K1, K2, "cluster_contrast"), seed)
    growth = peak_mib() - before
    np.save(ids_out, ids)
    if labels_out:
        np.save(labels_out, fixed_eps_labels(x, EPS, MIN_SAMPLES, K1, K2, ranks=ids))
    return {"method": method, **times, "growth_mib": growth}


def score(
    ids: np.ndarray,
    exact: np.ndarray,
    queries: np.ndarray,
    reciprocal: list[np.ndarray],
    pid: np.ndarray,
    family: np.ndarray,
) -> dict:
    """Recall of ``ids`` [N, k] against ``exact`` [Q, k] (the lists of ``queries``), by kind."""
    found = {"same id": [0, 0], "same family": [0, 0], "unrelated": [0, 0], "all": [0, 0]}
    hit_pairs = total_pairs = 0
    for row, q in enumerate(queries):
        mine = set(ids[q].tolist())
        for j in exact[row]:
            if pid[j] == pid[q]:
                kind = "same id"
            elif family[j] == family[q]:
                kind = "same family"
            else:
                kind = "unrelated"
            hit = int(j in mine)
            for key in (kind, "all"):
                found[key][0] += hit
                found[key][1] += 1
        hit_pairs += sum(int(j in mine) for j in reciprocal[row])
        total_pairs += len(reciprocal[row])
    out = {f"recall {key}": h / max(t, 1) for key, (h, t) in found.items()}
    out.update({f"share {key}": t / found["all"][1] for key, (_, t) in found.items()})
    out["recall reciprocal pairs"] = hit_pairs / max(total_pairs, 1)
    return out


def exact_lists(x: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, list]:
    """Exact lists of ``queries`` [Q, k] and their k-reciprocal members (exact both ways)."""
    import faiss

    _, exact = faiss.knn(x[queries], x, k, metric=faiss.METRIC_INNER_PRODUCT)
    members = np.unique(exact)
    _, of_members = faiss.knn(x[members], x, k, metric=faiss.METRIC_INNER_PRODUCT)
    lists = dict(zip(members.tolist(), of_members, strict=True))
    reciprocal = [
        np.array([j for j in row if j != q and q in lists[j]], np.int64)
        for q, row in zip(queries.tolist(), exact, strict=True)
    ]
    return exact, reciprocal


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--methods", default="ivf16,ivf64,hnsw32_64,hnsw32_128")
    parser.add_argument("--queries", type=int, default=1000, help="queries scored exactly")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cluster", action="store_true", help="also cluster each method's lists: ARI vs truth"
    )
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--ids-out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--labels-out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = worker(args.worker, args.n, args.d, args.seed, args.ids_out, args.labels_out)
        print(json.dumps(result))
        return

    import faiss
    from sklearn.metrics import adjusted_rand_score

    from maskpre_tf.clustering.jaccard import neighbour_depth

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    x, pid, family = mixture_features(args.n, args.d, seed=args.seed, with_family=True)
    k = neighbour_depth(args.n, K1, K2, "cluster_contrast")
    queries = np.sort(np.random.default_rng(args.seed).choice(args.n, args.queries, False))
    start = time.perf_counter()
    exact, reciprocal = exact_lists(x, queries, k)
    print(
        f"knn_bench: N={args.n}, d={args.d}, k={k}, {os.cpu_count()} threads; exact lists of "
        f"{len(queries)} queries (and their neighbours') in {time.perf_counter() - start:.0f} s",
        flush=True,
    )
    del x
    rows = []
    exact_labels = None
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            ids_out = os.path.join(tmp, f"{method}.npy")
            labels_out = os.path.join(tmp, f"{method}_labels.npy") if args.cluster else ""
            common = ["--n", str(args.n), "--d", str(args.d), "--seed", str(args.seed)]
            res = run_worker(
                __file__,
                ["--worker", method, "--ids-out", ids_out, "--labels-out", labels_out, *common],
            )
            if res is None:
                continue
            res.update(score(np.load(ids_out), exact, queries, reciprocal, pid, family))
            if labels_out:
                labels = np.load(labels_out)
                res["ari vs truth"] = adjusted_rand_score(pid, labels)
                if method == "exact":
                    exact_labels = labels
                if exact_labels is not None:
                    res["ari vs exact"] = adjusted_rand_score(exact_labels, labels)
            rows.append(res)
            print(json.dumps(res), flush=True)
    if not rows:
        raise SystemExit("no method finished")
    kinds = ("same id", "same family", "unrelated")
    shares = ", ".join(f"{kind} {rows[0][f'share {kind}']:.3f}" for kind in kinds)
    print(f"\ntrue neighbours of the scored queries: {shares}")
    print(
        "| method | build s | search s | total s | own memory MiB | recall@k | same id "
        "| same family | unrelated | k-reciprocal pairs | ARI vs truth | ARI vs exact |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        total = r["build_s"] + r["search_s"]
        recalls = " | ".join(f"{r[f'recall {kind}']:.3f}" for kind in ("all", *kinds))
        aris = " | ".join(
            f"{r[key]:.4f}" if key in r else "–" for key in ("ari vs truth", "ari vs exact")
        )
        print(
            f"| {r['method']} | {r['build_s']:.0f} | {r['search_s']:.0f} | {total:.0f} "
            f"| {r['growth_mib']:.0f} | {recalls} | {r['recall reciprocal pairs']:.3f} | {aris} |"
        )


if __name__ == "__main__":
    main()
