"""Train MaskPre: ``python -m maskpre_tf.train --flagfile=configs/market.flags``.

The program: flags → :class:`~maskpre_tf.config.TrainConfig` →
:func:`maskpre_tf.training.train_lib.train`. Flags are defined only when this module runs as a
program, so importing it registers none.
"""

from __future__ import annotations

from absl import flags

from maskpre_tf.errors import quiet_library_logs, run_app


def main(argv: list[str]) -> None:
    """Program entry: train with the configuration given by the flags."""
    del argv
    quiet_library_logs()  # before the libraries that log at import (faiss) load
    from maskpre_tf.config_flags import config_from_flags
    from maskpre_tf.training.train_lib import train

    train(config_from_flags(flags.FLAGS))


if __name__ == "__main__":
    from maskpre_tf.console import prepare_process

    prepare_process()
    from maskpre_tf.config_flags import define_flags

    define_flags()
    flags.DEFINE_bool("debug", False, "show the traceback of user errors")
    run_app(main)
