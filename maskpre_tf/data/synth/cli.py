"""Command line of the generator: ``python -m maskpre_tf.data.synth --out DIR ...``."""

from __future__ import annotations

import argparse

from maskpre_tf.cli_help import ProgramHelp, asks_for_help, print_and_exit, render_argparse
from maskpre_tf.data.synth.writer import (
    DEMO_CAMERAS,
    DEMO_IDENTITIES,
    DEMO_IMAGES_PER_CAMERA,
    DEMO_SEED,
    generate,
)

HELP = ProgramHelp(
    "Write a generated pedestrian data set in Market-1501 layout (train, query and gallery "
    "crops of people seen by several cameras): the demo's data, no download needed.",
    ("python -m maskpre_tf.data.synth --out=data/demo",),
    (
        ("output:", ("out",)),
        ("the people and cameras:", ("identities", "cameras", "images_per_camera", "seed")),
    ),
)


def _parser() -> argparse.ArgumentParser:
    """The command line's options (``--help`` prints :data:`HELP` instead of argparse's text)."""
    p = argparse.ArgumentParser(prog="python -m maskpre_tf.data.synth", add_help=False)
    p.add_argument("--out", required=True, help="destination folder (required)")
    p.add_argument(
        "--identities",
        type=int,
        default=DEMO_IDENTITIES,
        help="number of people, half train and half test",
    )
    p.add_argument("--cameras", type=int, default=DEMO_CAMERAS, help="number of cameras, 2-9")
    p.add_argument(
        "--images_per_camera",
        type=float,
        default=DEMO_IMAGES_PER_CAMERA,
        help="mean images per identity per camera it appears in",
    )
    p.add_argument("--seed", type=int, default=DEMO_SEED, help="random seed")
    return p


def _parse(argv: list[str]) -> argparse.Namespace:
    """Parse the command line (``argv`` without the program name)."""
    parser = _parser()
    if asks_for_help(argv):
        print_and_exit(render_argparse(HELP, parser))
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    """Command-line entry point: ``argv[0]`` is the program name."""
    args = _parse(argv[1:])
    generate(
        args.out,
        identities=args.identities,
        cameras=args.cameras,
        seed=args.seed,
        images_per_camera=args.images_per_camera,
    )
