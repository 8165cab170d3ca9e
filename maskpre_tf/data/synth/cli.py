"""Command line of the generator: ``python -m maskpre_tf.data.synth --out DIR ...``."""

from __future__ import annotations

import argparse

from maskpre_tf.data.synth.writer import (
    DEMO_CAMERAS,
    DEMO_IDENTITIES,
    DEMO_IMAGES_PER_CAMERA,
    DEMO_SEED,
    generate,
)


def _parse(argv: list[str]) -> argparse.Namespace:
    """Parse the command line (``argv`` without the program name)."""
    p = argparse.ArgumentParser(
        prog="python -m maskpre_tf.data.synth",
        description="Write a generated pedestrian data set in Market-1501 layout.",
    )
    p.add_argument("--out", required=True, help="destination folder")
    p.add_argument(
        "--identities",
        type=int,
        default=DEMO_IDENTITIES,
        help="number of people, half train and half test (default %(default)s)",
    )
    p.add_argument(
        "--cameras",
        type=int,
        default=DEMO_CAMERAS,
        help="number of cameras, 2-9 (default %(default)s)",
    )
    p.add_argument(
        "--images_per_camera",
        type=float,
        default=DEMO_IMAGES_PER_CAMERA,
        help="mean images per identity per camera it appears in (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=DEMO_SEED, help="random seed (default %(default)s)")
    return p.parse_args(argv)


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
