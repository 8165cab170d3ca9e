"""mAP against training samples and against training minutes, from finished training runs.

    python benchmarks/plot_ladder.py RUN_DIR [RUN_DIR ...] --out=docs/ladder.png

Each run folder (``real_bench.py`` names them ``<row>_seed<s>`` under ``--out/<budget>``) gives
one curve: at every evaluated epoch, the delivered network's mAP against the training samples
seen so far (epoch × iterations × batch) and against the training minutes so far (steps, feature
extraction and clustering; evaluation left out). Runs of one row share a colour (rows other than
maskpre, camera and baseline take further colours in their order); the budget is read from each
run's configuration. Prints the points as a table and writes the PNG (matplotlib, the ``plots``
extra).
"""

from __future__ import annotations

import argparse
import json
import os

import machine  # noqa: F401  (this checkout's package first on sys.path)

TRAINING_SECONDS = ("steps_seconds", "extract_seconds", "cluster_seconds")


def curve(run_dir: str) -> dict:
    """One run's points: "name", "row", "budget" (str); "samples", "minutes", "mAP" (lists).

    The row (colour) comes from the folder's name (``maskpre_seed0`` → ``maskpre``), the budget
    (line style) from its parent's (``1x``, ``3x``, ``9x``).
    """
    with open(os.path.join(run_dir, "config.json")) as f:
        optim = json.load(f)["config"]["optim"]
    with open(os.path.join(run_dir, "summary_epochs.json")) as f:
        epochs = json.load(f)["epochs"]
    per_epoch = optim["iters"] * optim["batch_size"]
    points = {"samples": [], "minutes": [], "mAP": []}
    seconds = 0.0
    for entry in epochs:
        seconds += sum(entry.get(key, 0.0) for key in TRAINING_SECONDS)
        if "mAP" in entry:
            points["samples"].append(entry["epoch"] * per_epoch)
            points["minutes"].append(seconds / 60)
            points["mAP"].append(100 * entry["mAP"])
    name = os.path.basename(os.path.normpath(run_dir))
    budget = os.path.basename(os.path.dirname(os.path.normpath(run_dir)))
    row = name.split("_seed")[0]
    return {"name": f"{budget} {name}", "row": row, "budget": budget, **points}


def plot(curves: list[dict], out: str) -> None:
    """Two panels, mAP against samples and against minutes, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"maskpre": "tab:red", "baseline": "tab:blue", "camera": "tab:green"}
    others = iter(["tab:purple", "tab:orange", "tab:brown", "tab:olive", "tab:cyan", "tab:pink"])
    for c in curves:  # further rows (variants of a row) in their order of appearance
        colours.setdefault(c["row"], next(others, "tab:gray"))
    lines = {"1x": "-", "3x": "--", "9x": ":"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for c in curves:
        style = dict(
            color=colours[c["row"]],
            ls=lines.get(c["budget"], "-."),
            marker="o",
            markersize=3,
            lw=1.2,
        )
        axes[0].plot(c["samples"], c["mAP"], label=c["name"], **style)
        axes[1].plot(c["minutes"], c["mAP"], **style)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("training samples (iterations x batch)")
    axes[1].set_xlabel("training minutes (steps, extraction, clustering)")
    for ax in axes:
        ax.set_ylabel("mAP (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Market-1501, MobileNetV2 128x64 from ImageNet, 2-core CPU")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished run folders")
    parser.add_argument("--out", default="docs/ladder.png")
    args = parser.parse_args()
    curves = [curve(run) for run in args.runs]
    print(f"{'run':32s} {'samples':>9s} {'minutes':>8s} {'mAP':>6s}")
    for c in curves:
        for samples, minutes, value in zip(c["samples"], c["minutes"], c["mAP"], strict=True):
            print(f"{c['name']:32s} {samples:9d} {minutes:8.1f} {value:6.1f}")
    plot(curves, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
