"""Reader of Market-1501 (Zheng et al., Scalable Person Re-identification, ICCV 2015)."""

from __future__ import annotations

from maskpre_tf.data.datasets.market_layout import MARKET_EXAMPLE, read_split_folders
from maskpre_tf.data.datasets.records import ReidDataset
from maskpre_tf.data.datasets.registry import register


@register("market1501")
def read_market1501(root: str, verbose: bool = True) -> ReidDataset:
    """Read Market-1501 (Zheng et al., ICCV 2015).

    Args:
      root: the folder holding bounding_box_train/, bounding_box_test/, query/, or its parent.
      verbose: print the statistics table.

    Returns:
      The dataset; junk (pid -1) dropped, distractors (pid 0) kept in the gallery.
    """
    return read_split_folders(root, "market1501", MARKET_EXAMPLE, verbose)
