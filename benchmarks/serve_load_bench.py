"""Concurrent load test of the serving function: the exported SavedModel and the ONNX model.

One process loads the export (``tf.saved_model.load``; ``model.onnx`` in onnxruntime on the
CPU) and ``--clients`` threads send mixed good and bad requests at once
(:mod:`serve_load_cases`): valid JPEG/PNG crops in every colour layout, truncated and empty
files, decompression bombs, an empty or oversize batch, wrong dtypes and shapes, NaN pixels.
Each target is checked against these goals:

* no crash: every exception is the target's refusal type (``tf.errors.InvalidArgumentError``
  for the SavedModel's ``serving_default``; onnxruntime's ``InvalidArgument`` for the ONNX
  model run through :func:`maskpre_tf.export.onnx.run_checked`);
* every good request is answered with its reference embedding (computed once per distinct
  request, single-threaded; max abs difference <= ``--atol``);
* every bad request is refused;
* resident memory (``VmRSS``, sampled every ``--rss_interval`` s) grows by less than
  ``--max_growth`` % over the measured phase, after ``--warmup`` requests.

Printed: the CPU model (``lscpu``), a table per target (each case's outcomes, latency and first
refusal message), and a summary (p50/p99 latency, requests/s, peak RSS, RSS growth, goals). The
exit status is 1 when a goal fails.

    python benchmarks/serve_load_bench.py        # a tiny export (resnet_small, 64x32): 8 clients,
                                                 # 10,000 requests per target after 1,000 warm-up
    python benchmarks/serve_load_bench.py --model=export/models/maskpre --duration=300
    python benchmarks/serve_load_bench.py --clients=8 --requests=400 --warmup=100   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

# Thousands of refused requests: no log line for each from TensorFlow's C++ side.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import measure  # noqa: E402,F401  (puts the repository and tests/ on sys.path)
import numpy as np  # noqa: E402
import serve_load  # noqa: E402
import tensorflow as tf  # noqa: E402
from serve_load_cases import byte_cases, pixel_cases  # noqa: E402

from maskpre_tf import inference  # noqa: E402

ONNX_FILE = "model.onnx"


def cpu_model() -> str:
    """The CPU as ``lscpu`` names it: model name, family/model, its AVX2/AVX-512 flags."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU (no lscpu)"
    info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}
    flags = [f for f in ("avx2", "avx512f") if f in info.get("Flags", "").split()]
    return (
        f"{info.get('Model name', 'unknown CPU')} (family {info.get('CPU family', '?')} model "
        f"{info.get('Model', '?')}, {' '.join(flags) or 'no AVX2'})"
    )


def allocator() -> str:
    """The malloc library mapped into this process (tcmalloc, mimalloc, jemalloc or glibc)."""
    with open("/proc/self/maps") as f:
        maps = f.read()
    return next((n for n in ("tcmalloc", "mimalloc", "jemalloc") if f"lib{n}" in maps), "glibc")


def resolve_version(path: str) -> str:
    """The version folder at ``path``: itself if it holds a model, else its highest version."""
    if any(os.path.isfile(os.path.join(path, f)) for f in ("saved_model.pb", ONNX_FILE)):
        return path
    versions = (
        sorted(int(n) for n in os.listdir(path) if n.isdigit()) if os.path.isdir(path) else []
    )
    if not versions:
        sys.exit(f"error: --model={path}: no saved_model.pb or {ONNX_FILE}, nor version folders")
    return os.path.join(path, str(versions[-1]))


def build_tiny_export(folder: str) -> str:
    """A tiny run (tests/export_setup.py: resnet_small, 64x32) exported in both formats."""
    from export_setup import make_run

    from maskpre_tf.export import export_run_formats

    make_run(os.path.join(folder, "run"))
    written = export_run_formats(
        os.path.join(folder, "run"),
        os.path.join(folder, "models", "maskpre"),
        ["savedmodel", "onnx"],
        warmup_batch_sizes=[],
    )
    return written["version_dir"]


def saved_model_target(version_dir: str, seed: int) -> serve_load.Target:
    """The ``serving_default`` signature of the SavedModel in ``version_dir``."""
    loaded = tf.saved_model.load(version_dir)
    signature = loaded.signatures[inference.SERVING_SIGNATURE]
    metadata = loaded.signatures[inference.METADATA_SIGNATURE]()[inference.METADATA_KEY]
    meta = json.loads(metadata.numpy())
    max_batch = int(meta.get("max_batch", inference.MAX_BATCH))

    def call(payload: np.ndarray) -> np.ndarray:
        dtype = tf.string if payload.dtype == object else None
        tensor = tf.constant(payload, dtype)
        return signature(**{inference.BYTES_INPUT: tensor})[inference.OUTPUT_KEY].numpy()

    return serve_load.Target(
        f"savedmodel {inference.SERVING_SIGNATURE}",
        call,
        (tf.errors.InvalidArgumentError,),
        byte_cases(max_batch, seed),
        keep=(loaded,),
    )


def onnx_target(version_dir: str, seed: int) -> serve_load.Target | str:
    """``model.onnx`` in onnxruntime (CPU) behind ``run_checked``; or why not."""
    path = os.path.join(version_dir, ONNX_FILE)
    if not os.path.isfile(path):
        return f"onnx left out: no {path}"
    try:
        import onnxruntime as ort
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument
    except ImportError as err:
        return f"onnx left out: onnxruntime is not installed ({err})"
    from maskpre_tf.export.onnx import run_checked

    runtime = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = runtime.get_modelmeta().custom_metadata_map
    max_batch = int(meta.get("max_batch", inference.MAX_BATCH))
    cases = pixel_cases(int(meta["height"]), int(meta["width"]), max_batch, seed)
    return serve_load.Target(
        f"onnxruntime {ONNX_FILE}",
        lambda payload: run_checked(runtime, payload, max_batch),
        (InvalidArgument,),
        cases,
        keep=(runtime,),
    )


def run_target(target: serve_load.Target, args: argparse.Namespace) -> dict:
    """References, warm-up, measured phase; the target's figures (see :func:`summary_row`)."""
    refs, problems = serve_load.references(target, args.atol)
    with serve_load.RssSampler(args.rss_interval) as warm_rss:
        warm, _ = serve_load.drive(
            target, refs, args.clients, args.warmup, seed=args.seed + 1, atol=args.atol
        )
    with serve_load.RssSampler(args.rss_interval) as rss:
        measured, wall_s = serve_load.drive(
            target, refs, args.clients, args.requests, args.duration, args.seed, args.atol
        )
    latency = serve_load.latencies_ms(measured)
    return {
        "name": target.name,
        "requests": int(latency.size),
        "warmup": sum(sum(t.counts.values()) for t in warm.values()),
        "counts": serve_load.totals(warm, measured),
        "p50_ms": float(np.percentile(latency, 50)) if latency.size else float("nan"),
        "p99_ms": float(np.percentile(latency, 99)) if latency.size else float("nan"),
        "rps": latency.size / wall_s,
        "peak_mib": max(warm_rss.samples + rss.samples),
        "rss_start_end_mib": rss.start_end_mib(),
        "growth_pct": rss.growth_pct(),
        "problems": problems,
        "cases": case_rows(target, warm, measured),
    }


def case_rows(target: serve_load.Target, *phases: dict) -> list[dict]:
    """One row per case: good or bad, outcome counts, latency (ms) and messages."""
    rows = []
    for case in target.cases:
        tally = serve_load.Tally()
        for phase in phases:
            tally.merge(phase.get(case.name, serve_load.Tally()))
        ms = 1e3 * np.array(tally.seconds or [np.nan])
        rows.append(
            {
                "case": case.name,
                "good": case.good,
                "counts": tally.counts,
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
                "message": tally.problem or tally.message,
            }
        )
    return rows


def goals(result: dict, max_growth: float) -> list[tuple[str, bool]]:
    """(goal, met) for one target's result."""
    counts = result["counts"]
    return [
        ("no crash", counts["crash"] == 0),
        ("every good request answered with its reference", counts["wrong"] == 0),
        ("references consistent", not result["problems"]),
        ("every bad request refused", counts["accepted"] == 0),
        (f"RSS growth < {max_growth:g} %", result["growth_pct"] < max_growth),
    ]


def print_cases(result: dict) -> None:
    """The per-case table of one target."""
    print(
        f"\n{result['name']}: {result['warmup']} warm-up + {result['requests']} measured requests"
    )
    print(
        f"  {'case':26s} {'kind':4s} {'sent':>5s} {'ok':>5s} {'refused':>7s} {'wrong':>5s} "
        f"{'accept':>6s} {'crash':>5s} {'p50 ms':>7s} {'p99 ms':>7s}  message"
    )
    for row in result["cases"]:
        c = row["counts"]
        print(
            f"  {row['case']:26s} {'good' if row['good'] else 'bad':4s} {sum(c.values()):5d} "
            f"{c['ok']:5d} {c['refused']:7d} {c['wrong']:5d} {c['accepted']:6d} {c['crash']:5d} "
            f"{row['p50_ms']:7.2f} {row['p99_ms']:7.2f}  {row['message'][:80]}"
        )
    for problem in result["problems"]:
        print(f"  reference problem: {problem}")


def print_summary(results: list[dict], max_growth: float) -> bool:
    """The summary table and every goal; True when all are met."""
    print(
        f"\n{'target':30s} {'requests':>8s} {'req/s':>7s} {'p50 ms':>7s} {'p99 ms':>7s} "
        f"{'ok':>6s} {'refused':>7s} {'wrong':>5s} {'accepted':>8s} {'crash':>5s} "
        f"{'peak MiB':>8s} {'RSS start→end MiB':>17s} {'growth':>7s}"
    )
    for r in results:
        c = r["counts"]
        print(
            f"{r['name']:30s} {r['requests']:8d} {r['rps']:7.1f} {r['p50_ms']:7.2f} "
            f"{r['p99_ms']:7.2f} {c['ok']:6d} {c['refused']:7d} {c['wrong']:5d} "
            f"{c['accepted']:8d} {c['crash']:5d} {r['peak_mib']:8.0f} "
            f"{'{:.0f} → {:.0f}'.format(*r['rss_start_end_mib']):>17s} {r['growth_pct']:+6.2f}%"
        )
    passed = True
    for r in results:
        for goal, met in goals(r, max_growth):
            passed &= met
            print(f"  {'PASS' if met else 'FAIL'}  {r['name']}: {goal}")
    return passed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="", help="export version or base path; default: tiny")
    parser.add_argument("--targets", default="savedmodel,onnx", help="savedmodel, onnx or both")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--requests", type=int, default=10_000, help="measured requests/target")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds/target instead")
    parser.add_argument("--warmup", type=int, default=1_000, help="requests before measuring")
    parser.add_argument("--atol", type=float, default=1e-5, help="max |embedding - reference|")
    parser.add_argument("--max_growth", type=float, default=5.0, help="RSS growth limit, %%")
    parser.add_argument("--rss_interval", type=float, default=0.05, help="RSS sampling, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="end with the results as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the load test on each target; 0 when every goal is met, else 1."""
    args = parse_args(argv)
    print(f"CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} cores available", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        version_dir = resolve_version(args.model) if args.model else build_tiny_export(tmp)
        wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
        targets, notes = [], []
        if "savedmodel" in wanted:
            targets.append(saved_model_target(version_dir, args.seed))
        if "onnx" in wanted:
            made = onnx_target(version_dir, args.seed)
            (notes if isinstance(made, str) else targets).append(made)
        print(
            f"model: {version_dir}; TensorFlow {tf.__version__}, malloc: {allocator()}; "
            f"{args.clients} clients, load average {os.getloadavg()[0]:.2f}"
        )
        for note in notes:
            print(note)
        results = [run_target(target, args) for target in targets]
    for result in results:
        print_cases(result)
    passed = print_summary(results, args.max_growth) and bool(results)
    if args.json:
        print(json.dumps({"cpu": cpu_model(), "passed": passed, "targets": results}))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
