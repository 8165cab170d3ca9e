"""The memory allocator's effect, before/after in one run: the glibc allocator against the fast one.

Runs a benchmark (by default ``train_bench.py`` on the CPU protocol and ``extract_bench.py``) as
a child process once per allocator (``MASKPRE_ALLOCATOR=system``, then ``auto``: the one
:mod:`maskpre_tf.allocator` preloads), in alternating rounds, optionally also with oneDNN capped
at AVX2 (``--isas=native,AVX2``: ``ONEDNN_MAX_CPU_ISA=AVX2`` makes an AVX-512 machine run the
kernels an AVX2-only CPU runs). Each child prints its figures as JSON (``--json``); the child's
whole-process CPU seconds (user, system), minor page faults and peak resident memory come from
``os.wait4``. Prints one row per (benchmark, ISA, allocator) and the fast allocator's speed-up.

    python benchmarks/allocator_bench.py                 # both benchmarks, native ISA
    python benchmarks/allocator_bench.py --isas=native,AVX2 --rounds=2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

import machine

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHES = {
    "train": [
        "train_bench.py",
        "--flagfile=configs/market_cpu.flags",
        "--precisions=float32",
        "--capacities=",
        "--no-pipeline",
        "--steps=6",
        "--rounds=2",
    ],
    "extract": ["extract_bench.py", "--rounds=2"],
}
# Variables that carry an allocator choice from this process into its children.
ALLOCATOR_VARS = ("LD_PRELOAD", "MASKPRE_ALLOCATOR", "MASKPRE_ALLOCATOR_PRELOADED")


def child_env(allocator: str, isa: str) -> dict[str, str]:
    """This environment with only ``allocator`` chosen and oneDNN capped at ``isa``."""
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARS}
    env["MASKPRE_ALLOCATOR"] = allocator
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa != "native":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    return env


def run_timed(argv: list[str], env: dict[str, str]) -> dict:
    """Run one benchmark child: its JSON figures (last line of its output) with the whole
    process's CPU seconds, minor faults and peak RSS from ``os.wait4``; {"error": ...} if it
    failed."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=machine.REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    # Read both pipes to the end, then reap the child ourselves to get its resource usage.
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = out.decode().strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("{"):
        return {"error": f"exit {proc.returncode}: {err.decode().strip()[-800:]}"}
    figures = json.loads(lines[-1])
    figures.update(
        wall_s=time.perf_counter() - start,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        minor_faults=usage.ru_minflt,
        peak_rss_mib=usage.ru_maxrss / 1024,
    )
    return figures


def allocator_name(figures: dict) -> str:
    """The allocator the child ran on, as its machine line names it."""
    found = re.search(r"allocator: ([^;]+);", figures["machine"])
    return found.group(1) if found else "?"


def headline(name: str, figures: dict) -> tuple[float, float, float, float]:
    """(images/s, kernel share of the measured region, faults per step or image, share of the
    FMA peak) of the MaskPre step (train) or the folded forward pass (extract)."""
    if name == "train":
        step = figures["precisions"]["float32"]["maskpre"]
        return step["img_s"], step["sys_share"], step["faults_per_step"], step["peak_share"]
    folded = figures["folded"]
    return (
        folded["forward_img_s"],
        folded["sys_share"],
        folded["faults_per_image"],
        folded["peak_share"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benches", default="train,extract", help=f"of {','.join(BENCHES)}")
    parser.add_argument("--isas", default="native", help="e.g. native,AVX2")
    parser.add_argument(
        "--allocators", default="system,auto", help="the first is the baseline (system,mimalloc)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (best kept)")
    args = parser.parse_args()
    print(machine.describe(), flush=True)
    allocators = args.allocators.split(",")
    best: dict[tuple[str, str, str], dict] = {}
    for _ in range(args.rounds):
        for bench in args.benches.split(","):
            for isa in args.isas.split(","):
                for allocator in allocators:
                    argv = [sys.executable, os.path.join(HERE, BENCHES[bench][0])]
                    argv += [*BENCHES[bench][1:], "--json"]
                    figures = run_timed(argv, child_env(allocator, isa))
                    key = (bench, isa, allocator)
                    if "error" in figures:
                        print(f"{key}: failed: {figures['error']}", flush=True)
                        continue
                    if (
                        key not in best
                        or headline(bench, figures)[0] > headline(bench, best[key])[0]
                    ):
                        best[key] = figures
                    print(f"{key}: {figures['machine']}", flush=True)
    print(
        f"\n{'bench':8s} {'ISA':7s} {'allocator':10s} {'img/s':>7s} {'kernel CPU':>10s} "
        f"{'faults/unit':>11s} {'of peak':>7s} {'process user/sys s':>19s} {'faults':>10s} "
        f"{'peak RSS':>9s}"
    )
    for (bench, isa, _), f in best.items():
        ips, share, faults, peak = headline(bench, f)
        unit = "step" if bench == "train" else "image"
        name = allocator_name(f)[:10]
        print(
            f"{bench:8s} {isa:7s} {name:10s} {ips:7.1f} {share:10.1%} {faults:11.0f} {peak:7.1%} "
            f"{f['user_s']:9.0f} / {f['sys_s']:<7.0f} {f['minor_faults'] / 1e6:9.2f}M "
            f"{f['peak_rss_mib']:8.0f}M   (faults per {unit})"
        )
    for bench in args.benches.split(","):
        for isa in args.isas.split(","):
            base = best.get((bench, isa, allocators[0]))
            for other in allocators[1:]:
                fast = best.get((bench, isa, other))
                if base and fast:
                    speedup = headline(bench, fast)[0] / headline(bench, base)[0]
                    print(f"{bench} at {isa}: {other} / {allocators[0]} = {speedup:.2f}x")


if __name__ == "__main__":
    main()
