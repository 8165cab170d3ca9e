"""Train MaskPre: ``python -m maskpre_tf.train --flagfile=configs/market.flags``.

The program: flags → :class:`~maskpre_tf.config.TrainConfig` →
:func:`maskpre_tf.training.train_lib.train`. Flags are defined only when this module runs as a
program, so importing it registers none; ``--help`` lists them by configuration section
(:func:`program_help`).
"""

from __future__ import annotations

import os

from absl import flags

from maskpre_tf.cli_help import ProgramHelp
from maskpre_tf.console import quiet_tensorflow_startup
from maskpre_tf.errors import quiet_library_logs, run_app
from maskpre_tf.run_lock import refuse_if_held

SUMMARY = (
    "Train MaskPre (unsupervised person re-identification) on unlabelled pedestrian crops; "
    "checkpoints, logs and the delivered encoder go to --run_dir."
)
EXAMPLES = (
    "python -m maskpre_tf.train --flagfile=configs/market.flags --run_dir=runs/market",
    "python -m maskpre_tf.train --flagfile=configs/demo.flags  # generated data, CPU, minutes",
)


def program_help() -> ProgramHelp:
    """This program's --help: one group per configuration section, in declaration order."""
    from maskpre_tf.config import SECTIONS
    from maskpre_tf.config_flags import flag_fields

    fields = flag_fields()
    groups = tuple(
        (
            f"{name}: {(cls.__doc__ or '').strip().splitlines()[0]}",
            tuple(f.name for section, f in fields if section == name),
        )
        for name, cls in SECTIONS.items()
    )
    return ProgramHelp(
        SUMMARY,
        EXAMPLES,
        groups,
        texts={f.name: f.metadata["help"] for _, f in fields},
        choices={f.name: f.metadata["choices"] for _, f in fields if f.metadata["choices"]},
    )


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """This program's flags: one per training setting, and --debug."""
    from maskpre_tf import config_flags

    config_flags.define_flags(flag_values)
    flags.DEFINE_bool("debug", False, "show the traceback of user errors", flag_values=flag_values)


def main(argv: list[str]) -> None:
    """Program entry: train with the configuration given by the flags."""
    del argv
    if not os.environ.get("TF_CONFIG"):  # a multi-worker chief takes the lock in train()
        refuse_if_held(flags.FLAGS.run_dir)  # a run in use stops this in seconds, before TF loads
    quiet_tensorflow_startup()
    quiet_library_logs()  # before the libraries that log at import (faiss) load
    from maskpre_tf.config_flags import config_from_flags
    from maskpre_tf.training.train_lib import train

    train(config_from_flags(flags.FLAGS))


if __name__ == "__main__":
    from maskpre_tf.console import prepare_process

    prepare_process(load_tensorflow=False)  # main() loads it after the run-lock probe
    define_flags()
    run_app(main, program_help())
