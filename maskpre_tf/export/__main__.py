"""Export program: ``python -m maskpre_tf.export --checkpoint=RUN_DIR --export_dir=DIR``.

The flags are those of :func:`define_flags`; the work is
:func:`maskpre_tf.export.export_run_formats` (with the default ``--format=savedmodel``, the
SavedModel of :func:`maskpre_tf.export.export_run`; with ``onnx`` in ``--format``, model.onnx too
or instead).
"""

from __future__ import annotations

from maskpre_tf.errors import UserError, quiet_library_logs, run_app

# The library is imported inside the functions: TensorFlow must not load before the program has
# silenced its start-up lines (maskpre_tf.console.quiet_tensorflow_startup).


def define_flags() -> None:
    """Define this program's absl flags (called only when run as a program)."""
    from absl import flags

    from maskpre_tf.export.onnx import DEFAULT_OPSET, OPSETS
    from maskpre_tf.export.warmup import DEFAULT_WARMUP_BATCH_SIZES

    flags.DEFINE_string(
        "checkpoint",
        None,
        "a training run's --output_dir (config.json + encoder.weights.h5 or checkpoints/)",
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
        "export the latest checkpoint even when encoder.weights.h5 exists",
    )
    flags.DEFINE_list(
        "format",
        ["savedmodel"],
        "what to write into <export_dir>/<version>/: savedmodel (TF Serving), onnx "
        "(model.onnx for onnxruntime/TensorRT; needs pip install 'maskpre-tf[onnx]'), or "
        "savedmodel,onnx (both in one version)",
    )
    flags.DEFINE_integer(
        "onnx_opset",
        DEFAULT_OPSET,
        f"ONNX opset of model.onnx ({OPSETS.start}-{OPSETS.stop - 1})",
    )
    flags.DEFINE_bool("debug", False, "show the traceback of user errors")


def main(argv: list[str]) -> None:
    """Program entry: export the run given by --checkpoint."""
    from absl import flags

    del argv
    values = flags.FLAGS
    quiet_library_logs()
    from maskpre_tf.export.formats import ONNX, SAVEDMODEL, export_run_formats, parse_formats
    from maskpre_tf.export.models_config import models_config_path
    from maskpre_tf.export.warmup import parse_batch_sizes

    if not values.checkpoint:
        raise UserError("--checkpoint is required: the --output_dir of a maskpre_tf.train run")
    formats = parse_formats(values.format)
    written = export_run_formats(
        values.checkpoint,
        values.export_dir,
        formats,
        prefer_checkpoint=values.prefer_checkpoint,
        version=values.version,
        model_name=values.model_name,
        warmup_batch_sizes=parse_batch_sizes(values.warmup_batch_sizes),
        config_base_path=values.config_base_path,
        opset=values.onnx_opset,
    )
    print(f"exported {written['version_dir']}")
    if SAVEDMODEL in written:
        print(f"TF Serving config: {models_config_path(values.export_dir)}")
    if ONNX in written:
        print(f"ONNX model: {written[ONNX]}")


if __name__ == "__main__":
    from maskpre_tf.console import prepare_process

    prepare_process()
    define_flags()
    run_app(main)
