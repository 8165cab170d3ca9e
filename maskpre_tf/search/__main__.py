"""Gallery search program: ``python -m maskpre_tf.search --model=... --gallery=... --query=...``.

The flags are those of :func:`define_flags`; the work is :func:`maskpre_tf.search.run_search`.
"""

from __future__ import annotations

from maskpre_tf.errors import UserError, quiet_library_logs, run_app

# The library is imported inside the functions: TensorFlow must not load before the program has
# silenced its start-up lines (maskpre_tf.console.quiet_tensorflow_startup).


def define_flags() -> None:
    """Define this program's absl flags (called only when run as a program)."""
    from absl import flags

    flags.DEFINE_string("model", None, "training run directory or exported SavedModel")
    flags.DEFINE_string("gallery", None, "folder of gallery crops")
    flags.DEFINE_string("query", None, "a query image or a folder of query crops")
    flags.DEFINE_integer("top_k", 10, "matches per query")
    flags.DEFINE_string("output_dir", "search_results", "where pictures and index.html go")
    flags.DEFINE_string(
        "cache_dir",
        None,
        "gallery embedding cache (default: "
        "<gallery>/.maskpre_cache, or <output_dir>/.maskpre_cache if read-only)",
    )
    flags.DEFINE_integer("batch_size", 64, "images per forward pass")
    flags.DEFINE_bool("debug", False, "show the traceback of user errors")


def main(argv: list[str]) -> None:
    """Program entry: run the search given by the flags."""
    from absl import flags

    del argv
    values = flags.FLAGS
    quiet_library_logs()  # before the libraries that log at import (faiss) load
    from maskpre_tf.search.run import run_search

    for name in ("model", "gallery", "query"):
        if not values[name].value:
            raise UserError(f"--{name} is required (see --help)")
    run_search(
        values.model,
        values.gallery,
        values.query,
        values.output_dir,
        top_k=values.top_k,
        cache_dir=values.cache_dir,
        batch_size=values.batch_size,
    )


if __name__ == "__main__":
    from maskpre_tf.console import prepare_process

    prepare_process()
    define_flags()
    run_app(main)
