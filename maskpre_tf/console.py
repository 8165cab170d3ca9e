"""How every program starts: a fast allocator, then TensorFlow without its start-up chatter.

:func:`prepare_process` is the first call of every entry point's ``__main__`` block: it
re-executes the program once with a fast memory allocator preloaded (:mod:`maskpre_tf.allocator`)
and then imports TensorFlow quietly.

TensorFlow's C++ runtime prints INFO lines (oneDNN, CUDA probing, CPU features) to the process's
standard error while it loads, before any logging setting applies; ``TF_CPP_MIN_LOG_LEVEL`` does
not reach them. :func:`quiet_tensorflow_startup` imports TensorFlow and probes its devices with
file descriptor 2 pointed at ``/dev/null``, then restores it, so a normal run shows only the
program's own output. ``TF_CPP_MIN_LOG_LEVEL=0`` (or ``1``) in the environment keeps the
chatter, for debugging an installation. Python exceptions are unaffected: they are raised after
the descriptor is restored.
"""

from __future__ import annotations

import os
import sys


def quiet_tensorflow_startup() -> None:
    """Import TensorFlow (and list its devices) without its C++ start-up lines."""
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if level in ("0", "1") or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401

        return
    sys.stderr.flush()
    fd = sys.stderr.fileno()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe logs here on CPU-only machines
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def prepare_process(load_tensorflow: bool = True) -> None:
    """The start of every program: a fast allocator (re-executing once), then a quiet TF import.

    Neither when the command line asks for the program's help (``--help``, ``-h``): printing it
    needs no TensorFlow. (``--helpfull`` starts the program as usual.) A program with checks to
    make before TensorFlow's seconds of import passes ``load_tensorflow=False`` and calls
    :func:`quiet_tensorflow_startup` itself after them.
    """
    from maskpre_tf import allocator
    from maskpre_tf.cli_help import asks_for_help

    if asks_for_help(sys.argv[1:]):
        return

    allocator.preload()
    if load_tensorflow:
        quiet_tensorflow_startup()
