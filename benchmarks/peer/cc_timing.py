"""``--time_steps`` mode: time one epoch's pieces with cluster-contrast's own functions.

``run_timing`` extracts the training set, computes the Jaccard distance, runs DBSCAN as its
script does, times extraction of a subset and training steps in each precision, and one
evaluation; the hooks of ``cc_record`` record every piece. ``summarise_timing`` predicts a full
run from them. All times are seconds unless a name says ``_min``.
"""

from __future__ import annotations

import os
import random
import runpy
import time

import numpy as np
import torch
from cc_data import DATASET_NAME
from torch.nn import functional as F

QUIET = 10**9  # a print_freq that prints nothing


def _cluster(args, g, dataset, model, train_set):
    """Extract, Jaccard, DBSCAN as its script does: labels (N,) (-1 outlier), centres (C, D)."""
    import clustercontrast.evaluators as cc_eval
    import sklearn.cluster
    from clustercontrast.utils.faiss_rerank import compute_jaccard_distance

    loader = g["get_test_loader"](
        dataset, args.height, args.width, args.batch_size, args.workers, testset=train_set
    )
    feats, _ = cc_eval.extract_features(model, loader, print_freq=50)
    feats = torch.cat([feats[f].unsqueeze(0) for f, _, _ in train_set], 0)
    dist = compute_jaccard_distance(feats, k1=args.k1, k2=args.k2)
    labels = sklearn.cluster.DBSCAN(
        eps=args.eps, min_samples=4, metric="precomputed", n_jobs=-1
    ).fit_predict(dist)
    del dist
    keep = labels != -1
    n_clusters = int(labels.max()) + 1
    lab = torch.as_tensor(labels[keep], dtype=torch.long)
    centres = torch.zeros(n_clusters, feats.shape[1]).index_add_(0, lab, feats[keep])
    centres /= torch.bincount(lab, minlength=n_clusters).unsqueeze(1)
    return labels, centres


def _load_cpu_s_per_img(train_loader, n=128):
    """CPU seconds per image of its training transform, in this process on 1 thread.

    That is what a DataLoader worker spends; workers' CPU time is not visible while the
    loader is alive, so the training steps' worker CPU is estimated from this.
    """
    ds, threads = train_loader.loader.dataset, torch.get_num_threads()
    torch.set_num_threads(1)
    idx = random.Random(0).sample(range(len(ds)), min(len(ds), n))
    c0 = time.process_time()
    for i in idx:
        ds[i]
    torch.set_num_threads(threads)
    return (time.process_time() - c0) / len(idx)


def _time_training(args, rec, trainer, train_loader, optimizer, precision, load_cpu):
    """Warm-up steps, then ``--time_steps`` single steps; one ``train_{precision}`` event."""
    train_loader.new_epoch()
    trainer.train(0, train_loader, optimizer, print_freq=QUIET, train_iters=args.time_warmup)
    rec.events[-1]["kind"] = f"train_warmup_{precision}"
    steps = []
    c0 = time.process_time()
    for _ in range(args.time_steps):  # one step per call: per-step wall times
        trainer.train(0, train_loader, optimizer, print_freq=QUIET, train_iters=1)
        steps.append(rec.events.pop()["seconds"])
    cpu_main = time.process_time() - c0
    cpu_workers = len(steps) * args.batch_size * load_cpu
    steps = np.asarray(steps)
    rec.add(
        f"train_{precision}",
        float(steps.sum()),
        iters=len(steps),
        batch=args.batch_size,
        img_per_s=len(steps) * args.batch_size / steps.sum(),
        step_s=[round(float(t), 3) for t in steps],
        step_s_median=float(np.median(steps)),
        step_s_p25=float(np.percentile(steps, 25)),
        cpu_s_main=cpu_main,
        cpu_s_workers=cpu_workers,
        cpu_s_per_step=(cpu_main + cpu_workers) / len(steps),
    )
    print(
        f"[timing] {precision}: {args.time_steps} steps, median {np.median(steps):.2f}s, "
        f"p25 {np.percentile(steps, 25):.2f}s, mean {steps.mean():.2f}s",
        flush=True,
    )


def run_timing(args, rec, prec, script, data_root):
    """Time one epoch's pieces (events in ``rec``); no full training. Returns sizes and
    ``model_build_s``, the seconds to build the model and read the dataset."""
    import clustercontrast.evaluators as cc_eval
    from clustercontrast.models.cm import ClusterMemory
    from clustercontrast.trainers import ClusterContrastTrainer

    g = runpy.run_path(script, run_name="cc_usl_for_timing")  # its functions, main() not run
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    out = {}
    t0 = time.perf_counter()
    dataset = g["get_data"](DATASET_NAME, data_root)
    model = g["create_model"](args)
    out["model_build_s"] = time.perf_counter() - t0
    train_set = sorted(dataset.train)
    labels, centres = _cluster(args, g, dataset, model, train_set)
    precisions = args.time_precisions.split(",")

    if args.time_extract_images > 0:  # extraction speed, fp32 against bf16 autocast
        few = train_set[: args.time_extract_images]
        for precision in precisions:
            prec.extract_bf16 = args.bf16_extract or precision == "bf16"
            few_loader = g["get_test_loader"](
                dataset, args.height, args.width, args.batch_size, args.workers, testset=few
            )
            cc_eval.extract_features(model, few_loader, print_freq=QUIET)
            rec.events[-1]["kind"] = f"extract_subset_{precision}"
        prec.extract_bf16 = args.bf16_extract

    params = [p for p in model.parameters() if p.requires_grad]
    pairs = zip(train_set, labels, strict=True)
    pseudo = [(f, int(lb), c) for (f, _, c), lb in pairs if lb != -1]
    for precision in precisions:
        torch.manual_seed(args.seed)
        memory = ClusterMemory(
            model.module.num_features,
            len(centres),
            temp=args.temp,
            momentum=args.momentum,
            use_hard=args.use_hard,
        )
        memory.features = F.normalize(centres, dim=1)
        trainer = ClusterContrastTrainer(model, memory)
        optimizer = torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
        train_loader = g["get_train_loader"](
            None,
            dataset,
            args.height,
            args.width,
            args.batch_size,
            args.workers,
            args.num_instances,
            args.time_steps + args.time_warmup,
            trainset=pseudo,
            no_cam=args.no_cam,
        )
        if "train_load_cpu_s_per_img" not in out:
            out["train_load_cpu_s_per_img"] = _load_cpu_s_per_img(train_loader)
        prec.train_bf16 = precision == "bf16"
        load_cpu = out["train_load_cpu_s_per_img"]
        _time_training(args, rec, trainer, train_loader, optimizer, precision, load_cpu)
        del train_loader

    if args.time_eval:
        test_loader = g["get_test_loader"](
            dataset, args.height, args.width, args.batch_size, args.workers
        )
        cc_eval.Evaluator(model).evaluate(
            test_loader, dataset.query, dataset.gallery, cmc_flag=True
        )
    out["train_images"] = len(train_set)
    out["query_images"] = len(dataset.query)
    out["gallery_images"] = len(dataset.gallery)
    out["clusters"] = len(centres)
    out["clustered_images"] = len(pseudo)
    return out


def summarise_timing(args, rec, info):
    """Predict a full run from one epoch's pieces, three ways.

    ``as_measured`` adds up the measured wall times; ``low_contention`` takes the faster
    quartile of per-batch extraction and per-step training times and the CPU time of the
    (single-threaded) Jaccard code; ``cpu_bound`` spreads the CPU seconds (main process and
    DataLoader workers) of extraction and training over all cores. The last two estimate a
    machine not shared with other jobs; on a busy machine only ``cpu_bound`` is robust.
    ``info`` is ``run_timing``'s result. Returns seconds, images per second and, under
    ``predicted_full_run_min``, minutes per way and precision.
    """
    precisions = args.time_precisions.split(",")
    ev = {e["kind"] + ("_" + e["phase"] if "phase" in e else ""): e for e in rec.events}
    ext, jac, dbs = ev["extract_cluster"], ev["jaccard"], ev["dbscan"]
    evaluate = ev.get("evaluate")
    ext_eval = ev.get("extract_final_test")
    n_evals = (
        sum(1 for e in range(args.epochs) if (e + 1) % args.eval_step == 0 or e == args.epochs - 1)
        + 1
    )
    res = {
        "extract_train_s": ext["seconds"],
        "extract_img_per_s": ext["n"] / ext["seconds"],
        "extract_batch_s_median": ext["batch_s_median"],
        "extract_batch_s_p25": ext["batch_s_p25"],
        "jaccard_s": jac["seconds"],
        "jaccard_cpu_s": jac["cpu_s"],
        "dbscan_s": dbs["seconds"],
        "cluster_total_s": ext["seconds"] + jac["seconds"] + dbs["seconds"],
        "evaluate_s": evaluate["seconds"] if evaluate else None,
        "evaluations_in_full_run": n_evals,
        "train_img_per_s": {},
        "train_img_per_s_p25_step": {},
        "predicted_full_run_min": {"as_measured": {}, "low_contention": {}, "cpu_bound": {}},
        "cores": os.cpu_count(),
    }
    cores = os.cpu_count() or 1

    def cpu(e):
        return e["cpu_s_main"] + e["cpu_s_workers"]

    # cpu_bound: CPU seconds of the parallel parts spread over all cores; the Jaccard code and
    # the mAP/CMC loops are single-threaded Python/numpy, so their CPU seconds are wall seconds.
    res["extract_cpu_s_per_img"] = cpu(ext) / ext["n"]
    cluster_cpu = cpu(ext) / cores + jac["cpu_s"] + min(dbs["seconds"], dbs["cpu_s"])
    res["cluster_total_cpu_bound_s"] = cluster_cpu
    if evaluate and ext_eval:
        metric_cpu = cpu(evaluate) - cpu(ext_eval)
        eval_cpu = cpu(ext_eval) / cores + metric_cpu
        res["evaluate_cpu_bound_s"] = eval_cpu
    cluster_low = (
        ext["batch_s_p25"] * ext["batches"] + min(jac["seconds"], jac["cpu_s"]) + dbs["seconds"]
    )
    res["cluster_total_low_contention_s"] = cluster_low
    if evaluate and ext_eval:
        metric_s = evaluate["seconds"] - ext_eval["seconds"]
        eval_low = ext_eval["batch_s_p25"] * ext_eval["batches"] + metric_s
        res["evaluate_low_contention_s"] = eval_low
    for precision in precisions:
        sub = ev.get(f"extract_subset_{precision}_cluster")
        if sub:
            res.setdefault("extract_subset", {})[precision] = {
                "img_per_s": sub["n"] / sub["seconds"],
                "cpu_s_per_img": cpu(sub) / sub["n"],
                "img_per_s_cpu_bound": sub["n"] * cores / cpu(sub),
                "batch_s_p25": sub["batch_s_p25"],
            }
    # Each epoch opens a new train loader (worker start-up, first batches): the warm-up steps'
    # excess over steady steps, the smallest over the precisions (the first pays one-offs too).
    excess = [
        ev[f"train_warmup_{k}"]["seconds"] - args.time_warmup * ev[f"train_{k}"]["step_s_median"]
        for k in precisions
        if f"train_{k}" in ev and f"train_warmup_{k}" in ev
    ]
    startup = max(0.0, min(excess)) if excess else 0.0
    res["loader_startup_s_per_epoch"] = startup
    for precision in precisions:
        tr = ev.get(f"train_{precision}")
        if not tr:
            continue
        res["train_img_per_s"][precision] = tr["img_per_s"]
        res["train_img_per_s_p25_step"][precision] = args.batch_size / tr["step_s_p25"]
        res.setdefault("train_cpu_s_per_step", {})[precision] = tr["cpu_s_per_step"]
        res.setdefault("train_img_per_s_cpu_bound", {})[precision] = (
            args.batch_size * cores / tr["cpu_s_per_step"]
        )
        if not evaluate:
            continue
        full = args.epochs * (res["cluster_total_s"] + args.iters * tr["seconds"] / tr["iters"])
        full += n_evals * evaluate["seconds"] + info["model_build_s"] + args.epochs * startup
        res["predicted_full_run_min"]["as_measured"][precision] = full / 60
        low = args.epochs * (cluster_low + args.iters * tr["step_s_p25"])
        low += n_evals * eval_low + info["model_build_s"] + args.epochs * startup
        res["predicted_full_run_min"]["low_contention"][precision] = low / 60
        cb = args.epochs * (cluster_cpu + args.iters * tr["cpu_s_per_step"] / cores)
        cb += n_evals * eval_cpu + info["model_build_s"]
        res["predicted_full_run_min"]["cpu_bound"][precision] = cb / 60
    return res


def timing_summary(t):
    """One line from ``summarise_timing``'s result ``t``."""
    rates = ", ".join(
        f"{k} {v:.1f} img/s (at p25 step {t['train_img_per_s_p25_step'][k]:.1f}, "
        f"cpu-bound {t['train_img_per_s_cpu_bound'][k]:.1f})"
        for k, v in t["train_img_per_s"].items()
    )
    sub = t.get("extract_subset", {})
    pred = "; ".join(
        f"{how}: " + ", ".join(f"{k} {v:.0f} min" for k, v in d.items())
        for how, d in t["predicted_full_run_min"].items()
    )
    return (
        f"cluster-contrast timing: extract {t['extract_train_s']:.1f}s "
        f"({t['extract_img_per_s']:.0f} img/s), jaccard {t['jaccard_s']:.1f}s, "
        f"dbscan {t['dbscan_s']:.1f}s, evaluate {t['evaluate_s'] or 0:.1f}s; "
        f"train {rates}; extraction of a subset "
        + ", ".join(f"{k} {v['img_per_s']:.0f} img/s" for k, v in sub.items())
        + f"; predicted full run {pred}"
    )
