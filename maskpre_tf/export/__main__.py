"""Export program: ``python -m maskpre_tf.export --checkpoint=RUN_DIR --export_dir=DIR``.

The flags are those of :func:`define_flags`; the work is :func:`maskpre_tf.export.export_run`.
"""

from __future__ import annotations

from maskpre_tf.errors import UserError, quiet_library_logs, run_main

# The library is imported inside the functions: TensorFlow must not load before the program has
# silenced its start-up lines (maskpre_tf.console.quiet_tensorflow_startup).


def define_flags() -> None:
    """Define this program's absl flags (called only when run as a program)."""
    from absl import flags

    from maskpre_tf.export.warmup import DEFAULT_WARMUP_BATCH_SIZES

    flags.DEFINE_string(
        "checkpoint",
        None,
        "a training run's --output_dir (config.json + teacher.weights.h5 or checkpoints/)",
    )
    flags.DEFINE_string(
        "export_dir",
        "export/models/maskpre",
        "TF Serving model base path; versions are written as <export_dir>/<N>",
    )
    flags.DEFINE_integer("version", None, "version number (default: next free number)")
    flags.DEFINE_string("model_name", None, "TF Serving model name (default: export_dir's name)")
    flags.DEFINE_list(
        "warmup_batch_sizes",
        [str(b) for b in DEFAULT_WARMUP_BATCH_SIZES],
        "batch sizes of the warmup requests (empty: no warmup file)",
    )
    flags.DEFINE_string(
        "config_base_path",
        None,
        "base_path written to models.config "
        "(default: absolute export_dir; /models/<name> for the container)",
    )
    flags.DEFINE_bool(
        "prefer_checkpoint",
        False,
        "export the latest checkpoint even when teacher.weights.h5 exists",
    )
    flags.DEFINE_bool("debug", False, "show the traceback of user errors")


def main(argv: list[str]) -> None:
    """Program entry: export the run given by --checkpoint."""
    from absl import flags

    del argv
    values = flags.FLAGS
    quiet_library_logs()
    from maskpre_tf.export.models_config import models_config_path
    from maskpre_tf.export.saved_model import export_run
    from maskpre_tf.export.warmup import parse_batch_sizes

    if not values.checkpoint:
        raise UserError("--checkpoint is required: the --output_dir of a maskpre_tf.train run")
    path = export_run(
        values.checkpoint,
        values.export_dir,
        version=values.version,
        model_name=values.model_name,
        warmup_batch_sizes=parse_batch_sizes(values.warmup_batch_sizes),
        config_base_path=values.config_base_path,
        prefer_checkpoint=values.prefer_checkpoint,
    )
    print(f"exported {path}\nTF Serving config: {models_config_path(values.export_dir)}")


if __name__ == "__main__":
    from absl import app, flags

    from maskpre_tf.console import quiet_tensorflow_startup

    quiet_tensorflow_startup()
    define_flags()
    app.run(lambda argv: run_main(main, argv, debug=flags.FLAGS.debug))
