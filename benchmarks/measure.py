"""Helpers of the benchmarks that measure each configuration in a subprocess of its own.

A worker is the benchmark script itself started with worker arguments; it prints its results as
one JSON object on its last line of output. Memory figures are read inside the worker (from
``/proc`` and ``getrusage``), so that every configuration's peak resident memory is its own.
Importing this module also puts the repository and ``tests/`` (the dense reference
implementations) on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "tests" / "support"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def rss_mib() -> float:
    """Current resident set size of this process in MiB (from /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def peak_mib() -> float:
    """Peak resident set size of this process so far in MiB (``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def mem_available_gib() -> float:
    """Memory the kernel reports as available for new work, in GiB."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


def run_worker(script: str, args: list[str], python: str | None = None) -> dict | None:
    """Run ``script args`` in a fresh interpreter; its last output line parsed as JSON.

    Args:
      script: path of the benchmark script.
      args: its worker arguments.
      python: interpreter to use (default: this one).

    Returns:
      The worker's result, or None (with the end of its error output printed) if it failed.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [python or sys.executable, script, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        print(f"  worker {args} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fastest(runs: list[dict]) -> dict | None:
    """The run with the smallest ``total_s``, carrying the largest peak and growth of all runs.

    Repeating a configuration and keeping its fastest run tames the noise of a shared machine;
    memory is not noisy in that way, so the worst figures are kept.
    """
    if not runs:
        return None
    best = dict(min(runs, key=lambda r: r["total_s"]))
    best["peak_mib"] = max(r["peak_mib"] for r in runs)
    best["growth_mib"] = max(r["growth_mib"] for r in runs)
    best["runs"] = len(runs)
    return best


def fixed_eps_labels(
    x: np.ndarray,
    eps: float,
    min_samples: int,
    k1: int,
    k2: int,
    timings: dict | None = None,
    **graph_options,
) -> np.ndarray:
    """Our pseudo labels at a fixed eps, from the two public steps (the k-reciprocal Jaccard
    graph, then DBSCAN) so that the graph's options (``ranks``, ``index``, ``convention``) can
    be set; ``timings`` receives "knn", "jaccard" and "dbscan" seconds."""
    from maskpre_tf.clustering.cluster import jaccard_graph
    from maskpre_tf.clustering.dbscan import dbscan_labels

    clock = {} if timings is None else timings
    graph = jaccard_graph(x, eps, k1, k2, timings=clock, **graph_options)
    start = time.perf_counter()
    labels = dbscan_labels(graph, eps, min_samples)
    clock["dbscan"] = time.perf_counter() - start
    return labels
