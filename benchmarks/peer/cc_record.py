"""Recording hooks on cluster-contrast's functions; they change none of its results.

``install_hooks`` wraps its feature extraction, Jaccard distance, DBSCAN, ``trainer.train`` and
``Evaluator.evaluate`` to time them (seconds, wall and CPU), count clusters and keep every
evaluation's numbers in a ``Recorder``. ``Tee`` keeps a copy of its console output, which
``parse_log`` reads. ``HOOKS`` describes the hooks for the JSON output.
"""

from __future__ import annotations

import functools
import re
import resource
import time

import numpy as np

HOOKS = {
    "evaluator_hook": "Evaluator.evaluate is wrapped to record its return values and duration; "
    "with --cmc_every_eval (default) the in-loop evaluations are computed with cmc_flag=True "
    "so Rank-k of every evaluated epoch is known, and only the mAP is returned to the script, "
    "as it expects (its log then shows CMC lines for those evaluations too).",
    "timing_hooks": "extract_features, compute_jaccard_distance, DBSCAN.fit_predict and "
    "ClusterContrastTrainer.train are wrapped only to time them and to count clusters; inputs "
    "and outputs pass through unchanged.",
}


class Recorder:
    """What the hooks saw, in call order.

    ``events``: one dict per hooked call (``kind``, 0-based ``epoch`` of the last
    ``trainer.train`` call or None before it, ``seconds`` of wall time, plus per-kind CPU
    seconds and counts). ``evals``: mAP and Rank-1/5/10 (fractions) of every evaluation.
    ``clusters``: DBSCAN's clusters, clustered images and outliers per epoch. ``phase`` tells
    extraction for clustering from extraction inside an evaluation; ``batch_stamps`` are the
    ``perf_counter`` times at which the current extraction's batches reached the model.
    """

    def __init__(self):
        self.epoch = None
        self.phase = "cluster"
        self.events: list[dict] = []
        self.evals: list[dict] = []
        self.clusters: list[dict] = []
        self.batch_stamps: list[float] = []

    def add(self, kind, seconds, **extra):
        """Append an event of ``kind`` that took ``seconds`` (wall) in the current epoch."""
        self.events.append({"kind": kind, "epoch": self.epoch, "seconds": seconds, **extra})


def _reaped_children_cpu_s():
    """CPU seconds of children already joined (workers of a finished DataLoader iterator)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _hook_extraction(rec, cc_eval):
    orig_cnn = cc_eval.extract_cnn_feature

    def extract_cnn_feature(model, inputs):
        rec.batch_stamps.append(time.perf_counter())
        return orig_cnn(model, inputs)

    cc_eval.extract_cnn_feature = extract_cnn_feature
    orig_extract = cc_eval.extract_features

    @functools.wraps(orig_extract)
    def extract_features(model, data_loader, *args, **kwargs):
        t0, c0, k0 = time.perf_counter(), time.process_time(), _reaped_children_cpu_s()
        rec.batch_stamps = []
        out = orig_extract(model, data_loader, *args, **kwargs)
        t1 = time.perf_counter()
        gaps = np.diff(rec.batch_stamps + [t1]) if rec.batch_stamps else np.zeros(0)
        rec.add(
            "extract",
            t1 - t0,
            phase=rec.phase,
            n=len(out[0]),
            batches=len(rec.batch_stamps),
            cpu_s_main=time.process_time() - c0,
            cpu_s_workers=_reaped_children_cpu_s() - k0,
            batch_s_median=float(np.median(gaps)) if len(gaps) else None,
            batch_s_p25=float(np.percentile(gaps, 25)) if len(gaps) else None,
        )
        return out

    cc_eval.extract_features = extract_features


def _hook_clustering(rec, cc_rerank, sklearn_cluster):
    orig_jaccard = cc_rerank.compute_jaccard_distance

    @functools.wraps(orig_jaccard)
    def compute_jaccard_distance(*args, **kwargs):
        t0, c0 = time.perf_counter(), time.process_time()
        out = orig_jaccard(*args, **kwargs)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        rec.add("jaccard", dt, n=int(out.shape[0]), cpu_s=cpu)
        return out

    cc_rerank.compute_jaccard_distance = compute_jaccard_distance

    class DBSCAN(sklearn_cluster.DBSCAN):
        def fit_predict(self, X, y=None, sample_weight=None):
            t0, c0 = time.perf_counter(), time.process_time()
            labels = super().fit_predict(X, y, sample_weight=sample_weight)
            n = int(len(set(labels.tolist())) - (1 if -1 in labels else 0))
            rec.add("dbscan", time.perf_counter() - t0, clusters=n, cpu_s=time.process_time() - c0)
            rec.clusters.append(
                {
                    # the script clusters for epoch e before it calls trainer.train(e)
                    "epoch": 0 if rec.epoch is None else rec.epoch + 1,
                    "clusters": n,
                    "clustered_images": int((labels != -1).sum()),
                    "outliers": int((labels == -1).sum()),
                }
            )
            return labels

    sklearn_cluster.DBSCAN = DBSCAN


def _hook_training(rec, trainer_cls):
    orig_train = trainer_cls.train

    def train(self, epoch, data_loader, optimizer, print_freq=10, train_iters=400):
        rec.epoch = epoch
        t0 = time.perf_counter()
        orig_train(self, epoch, data_loader, optimizer, print_freq, train_iters)
        dt = time.perf_counter() - t0
        batch = data_loader.loader.batch_size
        rec.add("train", dt, iters=train_iters, batch=batch, img_per_s=train_iters * batch / dt)

    trainer_cls.train = train


def _hook_evaluation(rec, evaluator_cls, cmc_every_eval):
    orig_evaluate = evaluator_cls.evaluate

    def evaluate(self, data_loader, query, gallery, cmc_flag=False, rerank=False):
        final = bool(cmc_flag)  # only its final test of the best checkpoint asks for CMC
        rec.phase = "final_test" if final else "eval"
        t0, c0, k0 = time.perf_counter(), time.process_time(), _reaped_children_cpu_s()
        res = orig_evaluate(
            self, data_loader, query, gallery, cmc_flag=cmc_flag or cmc_every_eval, rerank=rerank
        )
        dt = time.perf_counter() - t0
        rec.phase = "cluster"
        entry = {
            "epoch": None if final else rec.epoch,
            "final_test_best_checkpoint": final,
            "seconds": dt,
        }
        if isinstance(res, tuple):
            cmc_scores, m_ap = res
            entry.update(
                mAP=float(m_ap),
                rank1=float(cmc_scores[0]),
                rank5=float(cmc_scores[4]),
                rank10=float(cmc_scores[9]),
            )
        else:
            m_ap = res
            entry["mAP"] = float(m_ap)
        rec.evals.append(entry)
        rec.add(
            "evaluate",
            dt,
            final=final,
            cpu_s_main=time.process_time() - c0,
            cpu_s_workers=_reaped_children_cpu_s() - k0,
        )
        return res if cmc_flag else m_ap

    evaluator_cls.evaluate = evaluate


def install_hooks(rec: Recorder, cmc_every_eval: bool = True):
    """Wrap its functions to fill ``rec`` (see ``HOOKS``); install after the CPU shims.

    With ``cmc_every_eval`` every evaluation computes Rank-k; the script still gets only the
    mAP back where it asked for no CMC.
    """
    import clustercontrast.evaluators as cc_eval
    import clustercontrast.trainers as cc_trainers
    import clustercontrast.utils.faiss_rerank as cc_rerank
    import sklearn.cluster

    _hook_extraction(rec, cc_eval)
    _hook_clustering(rec, cc_rerank, sklearn.cluster)
    _hook_training(rec, cc_trainers.ClusterContrastTrainer)
    _hook_evaluation(rec, cc_eval.Evaluator, cmc_every_eval)


class Tee:
    """sys.stdout stand-in that keeps a copy; its Logger closes it at exit, so close is a no-op."""

    def __init__(self, stream):
        self.stream = stream
        self.parts: list[str] = []

    def write(self, s):
        self.parts.append(s)
        return self.stream.write(s)

    def flush(self):
        self.stream.flush()

    def close(self):
        self.flush()

    def isatty(self):
        return False

    def text(self):
        return "".join(self.parts)


def parse_log(text):
    """Clusters per 0-based epoch and the total running time from its console output."""
    clusters = [
        {"epoch": int(e), "clusters": int(n)}
        for e, n in re.findall(r"==> Statistics for epoch (\d+): (\d+) clusters", text)
    ]
    m = re.search(r"Total running time:\s+(\S+)", text)
    return {"clusters_per_epoch": clusters, "total_running_time": m.group(1) if m else None}
