"""Gallery search program: ``python -m maskpre_tf.search --run_dir=RUN --gallery=... --query=...``.

The flags are those of :func:`define_flags`; the work is :func:`maskpre_tf.search.run_search`.
The model is a training run (``--run_dir``) or an exported SavedModel (``--saved_model``), the
two flags :mod:`maskpre_tf.evaluate` takes too. The loader tells a run from an export by its
files, so the earlier ``--model`` (now an alias of ``--run_dir``) still takes either. The
pictures and index.html go to ``--results_dir`` (earlier ``--output_dir``), never into a run.
"""

from __future__ import annotations

from absl import flags

from maskpre_tf.cli_help import ProgramHelp
from maskpre_tf.errors import UserError, quiet_library_logs, run_app

# The library is imported inside the functions: TensorFlow must not load before the program has
# silenced its start-up lines (maskpre_tf.console.quiet_tensorflow_startup).

HELP = ProgramHelp(
    "Search a folder of person crops: embed the gallery once (cached), rank each query image "
    "against it, and draw the ranked lists into --results_dir with an index.html.",
    ("python -m maskpre_tf.search --run_dir=runs/market --gallery=gallery/ --query=queries/",),
    (
        ("model (give one):", ("run_dir", "saved_model")),
        ("images:", ("gallery", "query")),
        ("results:", ("top_k", "results_dir", "cache_dir", "batch_size")),
    ),
)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Define this program's absl flags (called only when run as a program)."""
    on = {"flag_values": flag_values}
    flags.DEFINE_string(
        "run_dir",
        None,
        "a training run's folder (the --run_dir it was trained with): its delivered encoder; "
        "an exported model given here is recognised too",
        **on,
    )
    flags.DEFINE_alias("model", "run_dir", **on)
    flags.DEFINE_string(
        "saved_model",
        None,
        "an exported SavedModel: a version folder or the --export_dir of maskpre_tf.export",
        **on,
    )
    flags.DEFINE_string("gallery", None, "folder of gallery crops (required)", **on)
    flags.DEFINE_string("query", None, "a query image or a folder of query crops (required)", **on)
    flags.DEFINE_integer("top_k", 10, "matches per query", **on)
    flags.DEFINE_string(
        "results_dir",
        "search_results",
        "where the ranked-list pictures, index.html and rankings.json go",
        **on,
    )
    flags.DEFINE_alias("output_dir", "results_dir", **on)
    flags.DEFINE_string(
        "cache_dir",
        None,
        "gallery embedding cache (default: <gallery>/.maskpre_cache, or "
        "<results_dir>/.maskpre_cache if the gallery is read-only)",
        **on,
    )
    flags.DEFINE_integer("batch_size", 64, "images per forward pass", **on)
    flags.DEFINE_bool("debug", False, "show the traceback of user errors", **on)


def main(argv: list[str]) -> None:
    """Program entry: run the search given by the flags."""
    del argv
    values = flags.FLAGS
    quiet_library_logs()  # before the libraries that log at import (faiss) load
    from maskpre_tf.search.run import run_search

    if bool(values.run_dir) == bool(values.saved_model):
        raise UserError("give exactly one of --run_dir=RUN_DIR or --saved_model=EXPORT_DIR")
    for name in ("gallery", "query"):
        if not values[name].value:
            raise UserError(f"--{name} is required (see --help)")
    run_search(
        values.run_dir or values.saved_model,
        values.gallery,
        values.query,
        values.results_dir,
        top_k=values.top_k,
        cache_dir=values.cache_dir,
        batch_size=values.batch_size,
        model_flag="--run_dir" if values.run_dir else "--saved_model",
    )


if __name__ == "__main__":
    from maskpre_tf.console import prepare_process

    prepare_process()
    define_flags()
    run_app(main, HELP)
