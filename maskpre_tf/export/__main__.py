"""Export program: ``python -m maskpre_tf.export --run_dir=RUN_DIR --export_dir=DIR``.

The flags are those of :func:`define_flags` (``--checkpoint`` is ``--run_dir``'s earlier name;
``--help`` shows them as :data:`HELP` groups them); the work is
:func:`maskpre_tf.export.export_run_formats` (with the default ``--format=savedmodel``, the
SavedModel of :func:`maskpre_tf.export.export_run`; with ``onnx`` in ``--format``, model.onnx too
or instead).
"""

from __future__ import annotations

from absl import flags

from maskpre_tf.cli_help import ProgramHelp
from maskpre_tf.errors import UserError, quiet_library_logs, run_app

# The library is imported inside the functions: TensorFlow must not load before the program has
# silenced its start-up lines (maskpre_tf.console.quiet_tensorflow_startup).

HELP = ProgramHelp(
    "Export a training run's delivered encoder as a TF Serving model (SavedModel, warmup "
    "requests, models.config) and/or an ONNX file, as a new numbered version.",
    ("python -m maskpre_tf.export --run_dir=runs/market --export_dir=export/models/maskpre",),
    (
        ("what to export:", ("run_dir", "prefer_checkpoint")),
        ("where:", ("export_dir", "version", "model_name", "config_base_path")),
        ("formats:", ("format", "onnx_opset", "warmup_batch_sizes")),
    ),
)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Define this program's absl flags (called only when run as a program)."""
    from maskpre_tf.export.defaults import DEFAULT_OPSET, DEFAULT_WARMUP_BATCH_SIZES, OPSETS

    on = {"flag_values": flag_values}
    flags.DEFINE_string(
        "run_dir",
        None,
        "the training run's folder, the --run_dir it was trained with (config.json + "
        "encoder.weights.h5 or checkpoints/); required",
        **on,
    )
    flags.DEFINE_alias("checkpoint", "run_dir", **on)
    flags.DEFINE_string(
        "export_dir",
        "export/models/maskpre",
        "TF Serving model base path; versions are written as <export_dir>/<N>",
        **on,
    )
    flags.DEFINE_integer("version", None, "version number (default: next free number)", **on)
    flags.DEFINE_string(
        "model_name", None, "TF Serving model name (default: export_dir's name)", **on
    )
    flags.DEFINE_list(
        "warmup_batch_sizes",
        [str(b) for b in DEFAULT_WARMUP_BATCH_SIZES],
        "batch sizes of the warmup requests (empty: no warmup file)",
        **on,
    )
    flags.DEFINE_string(
        "config_base_path",
        None,
        "base_path written to models.config "
        "(default: absolute export_dir; /models/<name> for the container)",
        **on,
    )
    flags.DEFINE_bool(
        "prefer_checkpoint",
        False,
        "export the latest checkpoint even when encoder.weights.h5 exists",
        **on,
    )
    flags.DEFINE_list(
        "format",
        ["savedmodel"],
        "what to write into <export_dir>/<version>/: savedmodel (TF Serving), onnx "
        "(model.onnx for onnxruntime/TensorRT; needs pip install 'maskpre-tf[onnx]'), or "
        "savedmodel,onnx (both in one version)",
        **on,
    )
    flags.DEFINE_integer(
        "onnx_opset",
        DEFAULT_OPSET,
        f"ONNX opset of model.onnx ({OPSETS.start}-{OPSETS.stop - 1})",
        **on,
    )
    flags.DEFINE_bool("debug", False, "show the traceback of user errors", **on)


def main(argv: list[str]) -> None:
    """Program entry: export the run given by --run_dir."""
    del argv
    values = flags.FLAGS
    quiet_library_logs()
    from maskpre_tf.export.formats import ONNX, SAVEDMODEL, export_run_formats, parse_formats
    from maskpre_tf.export.models_config import models_config_path
    from maskpre_tf.export.warmup import parse_batch_sizes

    if not values.run_dir:
        raise UserError("--run_dir is required: the --run_dir of a maskpre_tf.train run")
    formats = parse_formats(values.format)
    written = export_run_formats(
        values.run_dir,
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
    run_app(main, HELP)
