"""Reader of DukeMTMC-reID (Zheng, Zheng, Yang, ICCV 2017): the Market-1501 layout and naming."""

from __future__ import annotations

from maskpre_tf.data.datasets.market_layout import read_split_folders
from maskpre_tf.data.datasets.records import ReidDataset
from maskpre_tf.data.datasets.registry import register


@register("dukemtmc")
def read_dukemtmc(root: str, verbose: bool = True) -> ReidDataset:
    """Read DukeMTMC-reID (Zheng, Zheng, Yang, ICCV 2017), names like 0001_c2_f0046182.jpg.

    Args:
      root: the folder holding bounding_box_train/, bounding_box_test/, query/, or its parent.
      verbose: print the statistics table.
    """
    return read_split_folders(root, "dukemtmc", "0001_c2_f0046182.jpg", verbose)
