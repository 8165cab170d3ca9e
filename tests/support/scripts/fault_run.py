"""Run a maskpre_tf program and SIGKILL it at a named point: the fault-injection matrix's driver.

    python tests/support/scripts/fault_run.py POINT NTH MODULE [FLAGS...]

runs ``python -m MODULE FLAGS...`` in this process after wrapping one function so that its
NTH call kills the process (SIGKILL: no handler, no cleanup, no flushing), either on entry or
just after the wrapped function returned; with ``FAULT_DELETE=PATH`` in the environment it
deletes that file instead and the program goes on. Nothing of the program is changed
otherwise; the points name where a real crash, OOM kill or power cut can strike:

========================  ==============================================================
point                     the process dies ...
========================  ==============================================================
extract                   on entry to the clustering pass's feature extraction
cluster                   on entry to the clustering (after the features were extracted)
step                      after a training step (mid-epoch)
checkpoint_write          after a checkpoint's files are written, before its index names it
before_checkpoint         after the epoch's summaries, before its checkpoint
source_step               after a step of the supervised source pre-training
export_write              after the SavedModel is written, before it is moved into place
search_cache_write        after the cache's index file is written, before its JSON
========================  ==============================================================
"""

from __future__ import annotations

import functools
import importlib
import os
import runpy
import signal
import sys


def _strike() -> None:
    """SIGKILL this process, or delete ``$FAULT_DELETE`` and return."""
    doomed = os.environ.get("FAULT_DELETE")
    if doomed:
        os.remove(doomed)
        return
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _points() -> dict[str, tuple[object, str, str]]:
    """point → (owner object, attribute, "entry" | "exit"), imported lazily."""
    import faiss
    import tensorflow as tf

    from maskpre_tf.training import clustering_callback, commit, progress

    return {
        "extract": (clustering_callback, "extract_features", "entry"),
        "cluster": (clustering_callback, "pseudo_labels", "entry"),
        "step": (progress.ProgressCallback, "on_train_batch_end", "exit"),
        # The manager records a checkpoint in its index twice per save, after its files.
        "checkpoint_write": (tf.train.CheckpointManager, "_record_state", "entry"),
        "before_checkpoint": (commit.CommitCallback, "on_epoch_end", "entry"),
        "source_step": (progress.ProgressCallback, "on_train_batch_end", "exit"),
        "export_write": (tf.saved_model, "save", "exit"),
        "search_cache_write": (faiss, "write_index", "exit"),
    }


def arm(point: str, nth: int) -> None:
    """Wrap the function of ``point`` so that its ``nth`` call (1-based) strikes."""
    owner, name, when = _points()[point]
    original = getattr(owner, name)
    calls = [0]

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if when == "entry" and calls[0] == nth:
            _strike()
        result = original(*args, **kwargs)
        if when == "exit" and calls[0] == nth:
            _strike()
        return result

    setattr(owner, name, wrapper)


def main() -> None:
    point, nth, module, *flags = sys.argv[1:]
    importlib.import_module("maskpre_tf")
    arm(point, int(nth))
    sys.argv = [module, *flags]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
