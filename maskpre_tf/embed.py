"""Write the features of a folder of crops, no server needed: ``python -m maskpre_tf.embed``.

``python -m maskpre_tf.embed --run_dir=RUN --images=DIR --out=features.npz``

* ``--run_dir``: a training run's folder (an exported SavedModel folder works too), loaded by
  :func:`maskpre_tf.inference.load_embedder`; images are embedded through the export's
  ``serving_default`` graph, so the features equal what TF Serving returns for the same files.
* ``--images``: every ``.jpg``/``.jpeg``/``.png`` file under the folder (recursive, hidden files
  skipped), in sorted order (:meth:`maskpre_tf.embedder.Embedder.image_files`). Files that are
  not complete JPEG/PNG files (checked from their header and end) are skipped with a warning.
* ``--out``: a NumPy ``.npz`` (``np.load(out)``) holding

  - ``paths``: str [N], the files relative to ``--images`` with ``/`` separators;
  - ``features``: float32 [N, D], L2-normalised rows (cosine similarity = dot product);
  - ``pids``, ``camids``: int64 [N], only when some file names follow the Market-1501 /
    DukeMTMC-reID naming ``<pid>_c<cam>...`` (parsed as the dataset readers and search do:
    pid as written, camid = camera number - 1); -1 where a name does not parse.

Prints one summary line (images, feature size, seconds, the file written); with more than
1,000 images, progress lines every 10 % on stderr (``--noprogress`` to silence them). Bad
input (a missing run folder, a folder without images, an ``--out`` that cannot be written) is
one ``error:`` line naming the flag and the fix, exit status 2.
"""

from __future__ import annotations

import os
import time

from absl import flags

from maskpre_tf.cli_help import ProgramHelp
from maskpre_tf.errors import UserError, quiet_library_logs, run_app

# The library is imported inside the functions: TensorFlow must not load before the program has
# silenced its start-up lines (maskpre_tf.console.quiet_tensorflow_startup).

#: pid and camid of a file whose name does not follow the Market-1501 naming.
UNKNOWN = -1

HELP = ProgramHelp(
    "Embed every JPEG/PNG crop under a folder with a trained model, no server needed, and write "
    "their paths, L2-normalised features and (Market-1501-style names) pids and camids to .npz.",
    ("python -m maskpre_tf.embed --run_dir=runs/market --images=crops/ --out=features.npz",),
    (
        ("model:", ("run_dir",)),
        ("images and output:", ("images", "out")),
        ("options:", ("batch_size", "progress")),
    ),
)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Define this program's absl flags (called only when run as a program)."""
    on = {"flag_values": flag_values}
    flags.DEFINE_string(
        "run_dir",
        None,
        "a training run's folder (the --run_dir it was trained with): its delivered encoder; "
        "an exported SavedModel given here is recognised too (required)",
        **on,
    )
    flags.DEFINE_string(
        "images", None, "folder of JPEG/PNG crops, searched recursively (required)", **on
    )
    flags.DEFINE_string(
        "out", None, "the .npz file to write: paths, features, pids, camids (required)", **on
    )
    flags.DEFINE_integer("batch_size", 64, "images per forward pass", **on)
    flags.DEFINE_bool(
        "progress", True, "report progress on stderr (every 10%) for over 1,000 images", **on
    )
    flags.DEFINE_bool("debug", False, "show the traceback of user errors", **on)


def check_out(out: str) -> str:
    """The absolute path of ``--out``, after checking a file can be written there.

    Creates the file's folder if needed; writes and removes a probe file.

    Raises:
      UserError: ``out`` is a folder, lies under a file, or its folder cannot be created or
        written.
    """
    path = os.path.abspath(os.path.expanduser(out))
    if os.path.isdir(path):
        raise UserError(
            f"--out={out} is a folder; pass a file name such as "
            f"--out={os.path.join(out, 'features.npz')}"
        )
    existing = os.path.dirname(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(
            f"--out={out}: {existing} is a file, not a folder; pass a file in a folder you "
            "can write to"
        )
    probe = f"{path}.tmp{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(probe, "wb").close()
        os.remove(probe)
    except OSError as err:
        raise UserError(
            f"--out={out}: cannot write there ({err.strerror or err}); pass a file in a folder "
            "you can write to"
        ) from None
    return path


def image_list(images: str) -> list[str]:
    """The JPEG/PNG files under ``--images``, sorted; UserError if there is none."""
    from maskpre_tf.embedder import Embedder

    if not os.path.isdir(images):
        raise UserError(f"--images={images}: no such directory; pass a folder of person crops")
    paths = Embedder.image_files(images)
    if not paths:
        raise UserError(
            f"--images={images}: no .jpg/.jpeg/.png files found (hidden files are skipped); "
            "point --images at a folder of person crops"
        )
    return paths


def usable_files(paths: list[str], images: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(files that look like complete JPEG/PNG files, [(path, reason)] of the others).

    Raises:
      UserError: none is usable.
    """
    from maskpre_tf.data.images import image_file_problem

    checked = [(path, image_file_problem(path)) for path in paths]
    usable = [path for path, problem in checked if problem is None]
    skipped = [(path, problem) for path, problem in checked if problem is not None]
    if not usable:
        path, problem = skipped[0]
        raise UserError(
            f"--images={images}: none of the {len(paths)} image file(s) is usable (e.g. {path}: "
            f"{problem}); replace them with complete JPEG/PNG files"
        )
    return usable, skipped


def labels(paths: list[str]) -> dict[str, object]:
    """{"pids", "camids"}: int64 [N] from Market-1501-style names (-1 where a name does not
    parse), or {} when no name parses."""
    import numpy as np

    from maskpre_tf.search.files import parse_label

    parsed = [parse_label(path) for path in paths]
    if all(label is None for label in parsed):
        return {}
    parsed = [label or (UNKNOWN, UNKNOWN) for label in parsed]
    return {
        "pids": np.array([pid for pid, _ in parsed], np.int64),
        "camids": np.array([camid for _, camid in parsed], np.int64),
    }


def write_npz(path: str, arrays: dict[str, object]) -> None:
    """``np.savez(path, **arrays)`` through a temporary file (no ``.npz`` appended)."""
    import numpy as np

    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def write_features(
    run_dir: str, images: str, out: str, batch_size: int = 64, progress: bool = True
) -> str:
    """Embed the images under ``images`` with the model in ``run_dir`` and write ``out``.

    Args:
      run_dir: a training run's folder, or an exported SavedModel.
      images: folder of JPEG/PNG crops.
      out: the .npz file to write (contents: the module docstring).
      batch_size: images per forward pass.
      progress: report progress on stderr for over 1,000 images.

    Returns:
      The summary line.
    """
    import numpy as np

    from maskpre_tf.inference import load_embedder
    from maskpre_tf.search.embed import report_skipped

    if not os.path.isdir(run_dir):
        raise UserError(
            f"--run_dir={run_dir}: no such directory; pass the --run_dir of a maskpre_tf.train "
            "run (or an exported SavedModel folder)"
        )
    if batch_size < 1:
        raise UserError(f"--batch_size={batch_size}: expected a positive number of images")
    paths, skipped = usable_files(image_list(images), images)
    path = check_out(out)
    embedder = load_embedder(run_dir, flag="--run_dir")
    report_skipped("image", skipped)
    start = time.perf_counter()
    features = embedder.embed_files(paths, batch_size, progress)
    seconds = time.perf_counter() - start
    relative = [os.path.relpath(p, images).replace(os.sep, "/") for p in paths]
    arrays = {"paths": np.array(relative, dtype=str), "features": features, **labels(paths)}
    write_npz(path, arrays)
    count, dim = features.shape
    note = f", {len(skipped)} unusable file(s) skipped" if skipped else ""
    return (
        f"embedded {count:,} images of {images} into {dim}-d features in {seconds:.1f} s"
        f"{note}; wrote {path}"
    )


def main(argv: list[str]) -> None:
    """Program entry: write the features the flags ask for."""
    del argv
    values = flags.FLAGS
    quiet_library_logs()
    for name in ("run_dir", "images", "out"):
        if not values[name].value:
            raise UserError(f"--{name} is required (see --help)")
    print(
        write_features(
            values.run_dir, values.images, values.out, values.batch_size, values.progress
        )
    )


if __name__ == "__main__":
    from maskpre_tf.console import prepare_process

    prepare_process()
    define_flags()
    run_app(main, HELP)
