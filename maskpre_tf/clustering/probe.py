"""What DBSCAN's eps does to a feature set: ``python -m maskpre_tf.clustering.probe``.

    python -m maskpre_tf.clustering.probe --run_dir=RUN_DIR        # the run's training set
    python -m maskpre_tf.clustering.probe --train_flagfile=configs/market_cpu.flags  # before
    python -m maskpre_tf.clustering.probe --features=FEATURES.npz  # features [, pids, camids]

For each eps of ``--eps`` it prints the clusters, outliers and largest cluster DBSCAN finds on
the k-reciprocal Jaccard distances, the eps each rule (``--eps=auto``, ``auto_linked``) would
choose (see :mod:`maskpre_tf.clustering.auto_eps`), and — when the training images carry
identity labels (diagnostics only; training never reads them) — ARI and pairwise
precision/recall against them.
With ``--run_dir`` (earlier ``--run``) the network the run clusters (its ``--cluster_network``,
not necessarily the one it delivers) embeds its training set with the run's own settings, from
its latest checkpoint. With ``--train_flagfile`` (a training flagfile, before any training) the
encoder the run would start from (its ``--backbone_weights``) embeds the flagfile's training
set: the first clustering's eps, chosen before a run is started.
A ``.npz`` needs an array ``features`` [N, D] and may hold ``pids`` [N] and ``camids`` [N].
"""

from __future__ import annotations

import numpy as np
from absl import flags

from maskpre_tf.cli_help import ProgramHelp
from maskpre_tf.errors import UserError, quiet_library_logs, run_app

DEFAULT_EPS = "0.3,0.35,0.4,0.45,0.5,0.55,0.6,0.65,0.7"
HELP = ProgramHelp(
    "Show what DBSCAN's eps does to a feature set: clusters, outliers and the largest cluster "
    "per eps, the eps training's auto and auto_linked rules would choose, and ARI when the "
    "identities are known.",
    (
        "python -m maskpre_tf.clustering.probe --run_dir=runs/demo",
        "python -m maskpre_tf.clustering.probe --train_flagfile=configs/market_cpu.flags",
    ),
    (
        ("features (give one):", ("run_dir", "train_flagfile", "features")),
        ("clustering:", ("eps", "k1", "k2", "min_samples", "camera_aware", "eps_tolerance")),
    ),
)


def eps_table(
    features: np.ndarray,
    eps_values: list[float],
    k1: int = 30,
    k2: int = 6,
    min_samples: int = 4,
    camids: np.ndarray | None = None,
    pids: np.ndarray | None = None,
    tolerance: float = 0.0,
) -> tuple[list[dict], float]:
    """Clustering statistics at every eps, and the automatic eps, from one Jaccard graph.

    Args:
      features: [N, D] features. eps_values: candidate eps in (0, 1).
      camids: camera ids [N]: features are camera-centred first (``--camera_aware``).
      pids: ground-truth ids [N] for ARI and pairwise precision/recall (diagnostics).
      tolerance: ``--eps_tolerance`` of the automatic rules.

    Returns:
      (one dict per eps with "eps" and :func:`cluster_statistics`' keys, {rule: the eps it
      chooses} for each automatic rule).
    """
    from maskpre_tf.clustering.auto_eps import MAX_EPS, choose_eps
    from maskpre_tf.clustering.cluster import cluster_statistics, jaccard_graph
    from maskpre_tf.clustering.dbscan import dbscan_labels
    from maskpre_tf.config_fields import AUTO_EPS

    # The graph the automatic choice reads in training: up to the grid's end at least.
    dist = jaccard_graph(features, max(*eps_values, MAX_EPS), k1, k2, camids=camids)
    rows = [
        {"eps": eps, **cluster_statistics(dbscan_labels(dist, eps, min_samples), pids)}
        for eps in sorted(eps_values)
    ]
    return rows, {
        rule: choose_eps(dist, min_samples, rule=rule, tolerance=tolerance) for rule in AUTO_EPS
    }


def format_table(rows: list[dict], auto: dict[str, float]) -> str:
    """The probe's table as text."""
    scored = "ari" in rows[0]
    head = f"{'eps':>5} {'clusters':>9} {'outliers':>9} {'largest':>8}"
    head += f" {'ARI':>6} {'pair P':>7} {'pair R':>7}" if scored else ""
    lines = [head]
    for r in rows:
        line = f"{r['eps']:5.2f} {r['num_clusters']:9d} {r['num_outliers']:9d} {r['largest']:8d}"
        if scored:
            line += f" {r['ari']:6.3f} {r['pairwise_precision']:7.3f} {r['pairwise_recall']:7.3f}"
        lines.append(line)
    lines += [f"--eps={rule} chooses {eps:.3f}" for rule, eps in auto.items()]
    return "\n".join(lines)


def run_features(
    run_dir: str = "", train_flagfile: str = ""
) -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
    """(features, pids, camids, cfg) of a training set, as a run's clustering sees it.

    With ``run_dir``: the run's ``--cluster_network``, from its latest checkpoint. With
    ``train_flagfile``: the untrained encoder of that training configuration.
    """

    from maskpre_tf import runs
    from maskpre_tf.data import datasets
    from maskpre_tf.evaluation.extract import extract_features
    from maskpre_tf.models.folding import FoldedEncoder

    if run_dir:
        network = runs.read_config(run_dir).clustering.cluster_network
        encoder, cfg = runs.load_encoder(run_dir, prefer_checkpoint=True, network=network)
    else:
        from maskpre_tf.config_flags import config_from_argv
        from maskpre_tf.models.encoder import build_encoder

        cfg = config_from_argv([f"--flagfile={train_flagfile}"])
        encoder = build_encoder(cfg.model, (cfg.data.height, cfg.data.width, 3))
    data = datasets.load_dataset(cfg.data.dataset, cfg.data.data_dir, verbose=False)
    embed = FoldedEncoder(encoder)  # BatchNorm folded, as in training
    features = extract_features(
        embed, [r.path for r in data.train], cfg.data.height, cfg.data.width
    )
    return (
        features,
        np.array([r.pid for r in data.train]),
        np.array([r.camid for r in data.train]),
        cfg,
    )


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """This program's flags (defined only when it runs); --run is --run_dir's earlier name."""
    on = {"flag_values": flag_values}
    flags.DEFINE_string(
        "run_dir",
        "",
        "a training run's folder (the --run_dir it was trained with): its training set, "
        "embedded by the network it clusters (its --cluster_network) from its latest checkpoint",
        **on,
    )
    flags.DEFINE_alias("run", "run_dir", **on)
    flags.DEFINE_string(
        "train_flagfile",
        "",
        "a training flagfile: its data and untrained encoder (before a run)",
        **on,
    )
    flags.DEFINE_string("features", "", ".npz with features [N, D], optional pids, camids", **on)
    flags.DEFINE_string("eps", DEFAULT_EPS, "comma-separated eps values to try", **on)
    flags.DEFINE_integer("k1", None, "k-reciprocal size (default: the run's, else 30)", **on)
    flags.DEFINE_integer("k2", None, "query expansion size (default: the run's, else 6)", **on)
    flags.DEFINE_integer(
        "min_samples", None, "DBSCAN min_samples (default: the run's, else 4)", **on
    )
    flags.DEFINE_bool(
        "camera_aware",
        None,
        "camera-centre the features first (default: the run's setting, else no)",
        **on,
    )
    flags.DEFINE_float(
        "eps_tolerance",
        None,
        "with auto eps rules: take the largest eps within this fraction of the best score "
        "(default: the run's, else 0)",
        **on,
    )
    flags.DEFINE_bool("debug", False, "show the traceback of user errors", **on)


def main(argv: list[str]) -> None:
    """Program entry: print the eps table."""
    del argv
    values = flags.FLAGS
    quiet_library_logs()
    sources = [values.run_dir, values.train_flagfile, values.features]
    if sum(bool(source) for source in sources) != 1:
        raise UserError(
            "give exactly one of --run_dir=RUN_DIR, --train_flagfile=FLAGFILE or "
            "--features=FILE.npz"
        )
    try:
        eps_values = [float(e) for e in values.eps.split(",")]
    except ValueError as err:
        raise UserError(f"--eps={values.eps}: expected comma-separated numbers") from err
    if any(not 0 < e < 1 for e in eps_values):
        raise UserError(f"--eps={values.eps}: every eps must lie in (0, 1)")
    settings = {"k1": 30, "k2": 6, "min_samples": 4, "camera_aware": False, "eps_tolerance": 0.0}
    if values.run_dir or values.train_flagfile:
        features, pids, camids, cfg = run_features(values.run_dir, values.train_flagfile)
        c = cfg.clustering
        settings = {
            "k1": c.k1,
            "k2": c.k2,
            "min_samples": c.min_samples,
            "camera_aware": c.camera_aware,
            "eps_tolerance": c.eps_tolerance,
        }
    else:
        try:
            archive = np.load(values.features)
            features = archive["features"]
        except (OSError, ValueError, KeyError) as err:
            raise UserError(
                f"--features={values.features}: not an .npz holding an array 'features' ({err})"
            ) from err
        pids = archive["pids"] if "pids" in archive else None
        camids = archive["camids"] if "camids" in archive else None
    for name in settings:
        if values[name].value is not None:
            settings[name] = values[name].value
    if settings["camera_aware"] and camids is None:
        raise UserError("--camera_aware needs camera ids: an 'camids' array in --features")
    if pids is not None and (pids < 0).all():
        pids = None
    rows, auto = eps_table(
        features,
        eps_values,
        settings["k1"],
        settings["k2"],
        settings["min_samples"],
        camids if settings["camera_aware"] else None,
        pids,
        settings["eps_tolerance"],
    )
    print(
        f"{features.shape[0]} samples, k1 {settings['k1']}, k2 {settings['k2']}, "
        f"min_samples {settings['min_samples']}, camera-aware {settings['camera_aware']}, "
        f"eps tolerance {settings['eps_tolerance']}"
    )
    print(format_table(rows, auto))


if __name__ == "__main__":
    from maskpre_tf.console import prepare_process

    prepare_process()
    define_flags()
    run_app(main, HELP)
