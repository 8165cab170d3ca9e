"""The entry point :func:`load_dataset`: a dataset name (or "auto") and a folder -> the dataset."""

from __future__ import annotations

from maskpre_tf.data.datasets.detect import detect_layout
from maskpre_tf.data.datasets.folder import FOLDER_OPTIONS
from maskpre_tf.data.datasets.records import ReidDataset
from maskpre_tf.data.datasets.registry import READERS
from maskpre_tf.errors import UserError

#: The names :func:`load_dataset` takes: "auto" and every registered reader.
DATASET_NAMES = ("auto", "market1501", "dukemtmc", "msmt17", "folder")
#: Other spellings, compared after lower-casing and dropping '-' and '_'.
_ALIASES = {"market": "market1501", "duke": "dukemtmc", "dukemtmcreid": "dukemtmc"}


def dataset_key(name: str) -> str | None:
    """The name of :data:`DATASET_NAMES` that ``name`` stands for (any case, aliases such as
    "market" or "DukeMTMC-reID"), or None for an unknown name."""
    key = name.lower().replace("-", "").replace("_", "")
    key = _ALIASES.get(key, key)
    return key if key in DATASET_NAMES else None


def check_dataset_name(name: str, flag: str = "--dataset") -> None:
    """Raise :class:`UserError` naming ``flag`` and the known names unless ``name`` is one."""
    if dataset_key(name) is None:
        raise UserError(
            f"{flag}={name}: unknown dataset; expected one of {', '.join(DATASET_NAMES)} "
            "(folder: a folder of your own crops)"
        )


def load_dataset(name: str, root: str, **options: object) -> ReidDataset:
    """Read the dataset ``name`` at ``root``.

    Args:
      name: one of "auto", "market1501", "dukemtmc", "msmt17", "folder" ("auto" detects).
      root: the dataset folder (see the reader of each name).
      **options: reader options (``verbose``; folder: cam_pattern, cam_base, manifest,
        query_dir, gallery_dir). Options that are None are ignored.

    Raises:
      UserError: unknown name, an option the chosen reader does not take, or bad data.
    """
    key = dataset_key(name)
    if key is None:
        raise UserError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    given = {k: v for k, v in options.items() if v is not None}
    folder_given = [k for k in FOLDER_OPTIONS if k in given]
    if key == "auto":
        key = "folder" if "manifest" in given else detect_layout(root)
    unknown = [k for k in given if k not in (*FOLDER_OPTIONS, "verbose")]
    if unknown:
        raise UserError(
            f"unknown dataset option(s) {unknown}; expected verbose or one of {FOLDER_OPTIONS}"
        )
    if key != "folder" and folder_given:
        raise UserError(
            f"option(s) {folder_given} apply to the own-folder reader only, but {root} is read "
            f"as {key}; drop them or choose dataset 'folder'"
        )
    return READERS[key](root, **given)
