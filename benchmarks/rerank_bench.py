"""Benchmark: re-ranking from sparse k-reciprocal neighbourhoods against the dense path.

Both paths start from query and gallery embeddings and end with CMC and mAP (torchreid's
settings: cosine distances, k1 20, k2 6, λ 0.3):

* dense: ``pairwise_distance`` three times (q-g, q-q, g-g), then the dense re-ranking
  maskpre-tf shipped before the sparse path (``tests/reference_rerank.re_ranking_dense``,
  one dense ``(Nq + Ng)^2`` float32 working matrix), then ``evaluate_rank``;
* sparse: ``evaluate_rank_blocks(re_ranked_blocks(qf, gf))``, what
  ``evaluate_features(..., rerank=True)`` runs: no ``Nq x Ng`` or ``N^2`` matrix is held.

Every run is a subprocess of its own. *time* is the wall-clock time of the call, *growth* the
peak resident memory minus the resident memory just before it (features and imports excluded).
The dense run saves its re-ranked matrix; the sparse run compares each of its blocks with it as
it goes (time spent comparing excluded): the maximum absolute difference over all ``Nq x Ng``
re-ranked distances, and the differences of mAP and CMC.

Configurations:

* Market-1501 test size (3,368 x 15,913, 750 identities): both paths, fastest of ``--repeats``
  alternating runs (the machine may be shared), ``--dim`` wide (default 2048);
* MSMT17 test size (11,659 x 82,161, 3,060 identities): the sparse path only (the dense one would
  need ~35 GB), ``--msmt-dim`` wide (default 2048); reports whether it stayed within 4 GiB.
* ``--quick``: 400 x 2,000 (both paths) and 1,500 x 8,000 (sparse only), 256 wide.

Features (:func:`synthetic_split`): identity centres plus a per-camera offset plus Gaussian
noise, 6 cameras, 17.5% of the gallery distractors (pid 0, each its own random centre).

Usage::

    python benchmarks/rerank_bench.py [--quick] [--repeats R] [--dim D] [--msmt-dim D] [--no-msmt]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator

import numpy as np
from measure import fastest, peak_mib, rss_mib, run_worker

K1, K2, LAMBDA = 20, 6, 0.3
MARKET = {"name": "Market-1501", "nq": 3368, "ng": 15913, "ids": 750}
MSMT = {"name": "MSMT17", "nq": 11659, "ng": 82161, "ids": 3060}
BUDGET_GIB = 4.0


def synthetic_split(
    nq: int,
    ng: int,
    num_ids: int,
    dim: int,
    noise: float,
    seed: int,
    num_cams: int = 6,
    distractors: float = 0.175,
    block: int = 4096,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Query and gallery embeddings with identity and camera structure.

    An embedding is its identity's centre (standard normal, ``dim`` wide), its camera's offset
    (``0.6`` times standard normal) and noise (standard normal times ``noise * (dim / 2048) **
    0.25``: how well identities separate goes as ``sqrt(dim) / noise^2``, so a given ``noise``
    is about as hard at any width); a distractor (pid 0) has a random centre of its own.
    Generated in float32 blocks.

    Returns:
      ``(qf [nq, dim], gf [ng, dim], ids)`` float32 embeddings and int64 ``q_pids``,
      ``g_pids``, ``q_camids``, ``g_camids``; deterministic for ``seed``.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids + 1, dim), dtype=np.float32)
    cam_shift = 0.6 * rng.standard_normal((num_cams, dim), dtype=np.float32)
    num_distractors = int(round(distractors * ng))
    ids = {
        "q_pids": rng.integers(1, num_ids + 1, nq),
        "g_pids": np.concatenate(
            [
                rng.permutation(np.resize(np.arange(1, num_ids + 1), ng - num_distractors)),
                np.zeros(num_distractors, dtype=np.int64),
            ]
        ),
        "q_camids": rng.integers(0, num_cams, nq),
        "g_camids": rng.integers(0, num_cams, ng),
    }

    def embed(pids: np.ndarray, cams: np.ndarray) -> np.ndarray:
        out = np.empty((len(pids), dim), dtype=np.float32)
        for s in range(0, len(pids), block):
            p, c = pids[s : s + block], cams[s : s + block]
            x = rng.standard_normal((len(p), dim), dtype=np.float32)
            x *= np.float32(noise * (dim / 2048) ** 0.25)
            x += cam_shift[c]
            base = centres[p]
            alone = p == 0
            base[alone] = rng.standard_normal((int(alone.sum()), dim), dtype=np.float32)
            out[s : s + block] = x + base
        return out

    return embed(ids["q_pids"], ids["q_camids"]), embed(ids["g_pids"], ids["g_camids"]), ids


def _compared(
    blocks: Iterator[np.ndarray], ref_path: str, num_g: int, stats: dict
) -> Iterator[np.ndarray]:
    """Pass ``blocks`` on, comparing each with the rows of the dense result saved at ``ref_path``.

    Reads the reference rows block by block (no lasting memory); records in ``stats`` the
    maximum absolute difference and the seconds spent comparing.
    """
    start = 0
    with open(ref_path, "rb") as f:
        for block in blocks:
            t0 = time.perf_counter()
            f.seek(start * num_g * 4)
            ref = np.fromfile(f, dtype=np.float32, count=block.size).reshape(block.shape)
            diff = float(np.abs(block - ref).max())
            stats["max_abs_diff"] = max(stats.get("max_abs_diff", 0.0), diff)
            stats["compare_s"] = stats.get("compare_s", 0.0) + time.perf_counter() - t0
            start += len(block)
            yield block


def worker(spec: dict) -> dict:
    """Run one configuration in this process and return its measurements."""
    from reference_rerank import re_ranking_dense

    from maskpre_tf.evaluation.distance import distance_blocks, pairwise_distance
    from maskpre_tf.evaluation.ranking import evaluate_rank, evaluate_rank_blocks
    from maskpre_tf.evaluation.rerank import re_ranked_blocks

    qf, gf, ids = synthetic_split(
        spec["nq"], spec["ng"], spec["ids"], spec["dim"], spec["noise"], spec["seed"]
    )
    labels = (ids["q_pids"], ids["g_pids"], ids["q_camids"], ids["g_camids"])
    stats: dict = {}
    rss_before = rss_mib()
    start = time.perf_counter()
    if spec["path"] == "dense":
        qg = pairwise_distance(qf, gf)
        dist = re_ranking_dense(qg, pairwise_distance(qf, qf), pairwise_distance(gf, gf))
        del qg
        cmc, m_ap = evaluate_rank(dist, *labels)
    else:
        blocks = re_ranked_blocks(qf, gf, k1=K1, k2=K2, lambda_value=LAMBDA)
        if spec["ref"]:
            blocks = _compared(blocks, spec["ref"], spec["ng"], stats)
        cmc, m_ap = evaluate_rank_blocks(blocks, *labels)
    total = time.perf_counter() - start - stats.get("compare_s", 0.0)
    peak = peak_mib()
    if spec["path"] == "dense":
        dist.tofile(spec["save"])
    plain_cmc, plain_map = evaluate_rank_blocks(distance_blocks(qf, gf), *labels)
    return {
        **spec,
        "total_s": total,
        "rss_before_mib": rss_before,
        "peak_mib": peak,
        "growth_mib": peak - rss_before,
        "map": m_ap,
        "cmc": cmc.tolist(),
        "plain_map": plain_map,
        "plain_rank1": float(plain_cmc[0]),
        **stats,
    }


def _summary(res: dict) -> str:
    return (
        f"  {res['name']:11s} {res['nq']:,} x {res['ng']:,} d={res['dim']} {res['path']:6s} "
        f"{res['total_s']:7.1f} s, peak RSS {res['peak_mib']:,.0f} MiB, growth "
        f"{res['growth_mib']:,.0f} MiB; re-ranked mAP {res['map']:.4f} rank-1 {res['cmc'][0]:.4f}"
        f" (plain mAP {res['plain_map']:.4f} rank-1 {res['plain_rank1']:.4f})"
    )


def _spec(config: dict, path: str, dim: int, args: argparse.Namespace, **extra) -> dict:
    return {**config, "path": path, "dim": dim, "noise": args.noise, "seed": args.seed, **extra}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (~1 min)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per compared path")
    parser.add_argument("--dim", type=int, default=2048, help="embedding width, Market size")
    parser.add_argument("--msmt-dim", type=int, default=2048, help="embedding width, MSMT size")
    parser.add_argument("--no-msmt", action="store_true", help="skip the MSMT17-size run")
    parser.add_argument(
        "--noise", type=float, default=3.6, help="noise scale of the features (at 2048 wide)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", type=str, default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return

    compared, alone, dim, msmt_dim = MARKET, MSMT, args.dim, args.msmt_dim
    if args.quick:
        compared = {"name": "quick", "nq": 400, "ng": 2000, "ids": 100}
        alone = {"name": "quick-large", "nq": 1500, "ng": 8000, "ids": 400}
        dim = msmt_dim = 256
    print(
        f"rerank_bench: k1={K1} k2={K2} lambda={LAMBDA}, cosine distances, "
        f"{os.cpu_count()} CPU threads, one subprocess per run",
        flush=True,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        ref = os.path.join(workdir, "dense.f32")
        dense_runs: list[dict] = []
        sparse_runs: list[dict] = []
        for _ in range(max(1, args.repeats)):  # alternate: both see the same share of the box
            res = run_worker(
                __file__, ["--worker", json.dumps(_spec(compared, "dense", dim, args, save=ref))]
            )
            dense_runs += [res] if res else []
            if res:
                spec = _spec(compared, "sparse", dim, args, ref=ref)
                res = run_worker(__file__, ["--worker", json.dumps(spec)])
                sparse_runs += [res] if res else []
        dense, sparse = fastest(dense_runs), fastest(sparse_runs)
        for res in (dense, sparse):
            if res:
                print(_summary(res), flush=True)
        if dense and sparse:
            cmc_diff = np.abs(np.subtract(sparse["cmc"], dense["cmc"])).max()
            print(
                f"  {compared['name']}: sparse / dense time "
                f"{sparse['total_s'] / dense['total_s']:.3f} "
                f"({dense['total_s'] / sparse['total_s']:.2f}x faster), peak RSS ratio "
                f"{sparse['peak_mib'] / dense['peak_mib']:.3f}, growth ratio "
                f"{sparse['growth_mib'] / dense['growth_mib']:.3f}\n"
                f"  equality: max |re-ranked distance diff| "
                f"{max(r['max_abs_diff'] for r in sparse_runs):.3g} over all "
                f"{compared['nq'] * compared['ng']:,} pairs; |mAP diff| "
                f"{abs(sparse['map'] - dense['map']):.3g}; max |CMC diff| {cmc_diff:.3g}",
                flush=True,
            )
        if not args.no_msmt:
            res = run_worker(
                __file__, ["--worker", json.dumps(_spec(alone, "sparse", msmt_dim, args, ref=""))]
            )
            if res:
                print(_summary(res), flush=True)
                within = res["peak_mib"] <= BUDGET_GIB * 1024
                print(
                    f"  {alone['name']}: peak RSS {res['peak_mib'] / 1024:.2f} GiB "
                    f"({'within' if within else 'OVER'} the {BUDGET_GIB:.0f} GiB budget), "
                    f"{res['total_s']:.0f} s",
                    flush=True,
                )
    print(f"benchmark wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
