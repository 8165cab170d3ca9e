"""Dataset readers: on-disk re-ID layouts (Market-1501, Duke, MSMT17, own folder) → records.

Every reader returns a :class:`ReidDataset` of :class:`Record` lists with absolute paths, sorted
by path. Identity labels of the training split are carried for diagnostics only; unsupervised
training never reads them. Readers look at file names and sizes only; decoding images is the
input pipeline's job.

Datasets
--------
None of the public benchmarks may be redistributed; each is obtained from its authors under their
licence terms. :data:`DATASET_SOURCES` lists the official archive names, the folder each one
extracts to and the expected split sizes (after junk images are dropped):

=============  ============================  =======================  ===========================
reader         archive                       folder                   train / query / gallery
=============  ============================  =======================  ===========================
market1501     Market-1501-v15.09.15.zip     Market-1501-v15.09.15/   12,936 / 3,368 / 15,913
dukemtmc       DukeMTMC-reID.zip             DukeMTMC-reID/           16,522 / 2,228 / 17,661
msmt17         MSMT17_V1.tar.gz (or _V2)     MSMT17_V1/ (MSMT17_V2/)  32,621 / 11,659 / 82,161
=============  ============================  =======================  ===========================

``root`` may be the folder that holds the split folders or its parent (the folder the archive
was extracted into). A user with a URL to one of these archives can call
:func:`download_and_extract`. Own data needs no archive: the ``folder`` reader takes a directory
of unlabelled crops.

Conventions: ``camid`` is 0-based (the 1-based camera numbers in file names minus one); Market
and Duke pids are kept as written in the file names (junk ``-1`` dropped, distractor ``0`` kept
in the gallery); MSMT17 list labels are 0-based and are stored ``+1`` so that 0 keeps meaning
"distractor" (MSMT17 has none).

Modules: one reader per layout (:mod:`~.market1501`, :mod:`~.dukemtmc`, :mod:`~.msmt17`,
:mod:`~.folder`; the first two share :mod:`~.market_layout`), each registered by name in
:mod:`~.registry`; :mod:`~.records` (the record types and the statistics table), :mod:`~.files`
(listing and checking files), :mod:`~.sources` (the public benchmarks), :mod:`~.detect` (layout
detection), :mod:`~.loader` (:func:`load_dataset`) and :mod:`~.download` (archives).
"""

from maskpre_tf.data.datasets.detect import DUKE_STYLE, MARKET_STYLE, detect_layout
from maskpre_tf.data.datasets.download import download_and_extract, extract_archive
from maskpre_tf.data.datasets.dukemtmc import read_dukemtmc
from maskpre_tf.data.datasets.files import IMAGE_EXTENSIONS, README_HINT
from maskpre_tf.data.datasets.folder import (
    DEFAULT_CAM_PATTERN,
    FOLDER_OPTIONS,
    camera_ids,
    read_folder,
    read_manifest,
)
from maskpre_tf.data.datasets.loader import (
    DATASET_NAMES,
    check_dataset_name,
    dataset_key,
    load_dataset,
)
from maskpre_tf.data.datasets.market1501 import read_market1501
from maskpre_tf.data.datasets.market_layout import MARKET_PATTERN, SPLIT_DIRS
from maskpre_tf.data.datasets.msmt17 import MSMT_DIRS, MSMT_LISTS, read_msmt17
from maskpre_tf.data.datasets.records import Record, ReidDataset, format_statistics
from maskpre_tf.data.datasets.registry import READERS, register
from maskpre_tf.data.datasets.sources import DATASET_SOURCES, DatasetSource

__all__ = [
    "DATASET_NAMES",
    "DATASET_SOURCES",
    "DEFAULT_CAM_PATTERN",
    "DUKE_STYLE",
    "FOLDER_OPTIONS",
    "IMAGE_EXTENSIONS",
    "MARKET_PATTERN",
    "MARKET_STYLE",
    "MSMT_DIRS",
    "MSMT_LISTS",
    "READERS",
    "README_HINT",
    "SPLIT_DIRS",
    "DatasetSource",
    "Record",
    "ReidDataset",
    "camera_ids",
    "check_dataset_name",
    "dataset_key",
    "detect_layout",
    "download_and_extract",
    "extract_archive",
    "format_statistics",
    "load_dataset",
    "read_dukemtmc",
    "read_folder",
    "read_manifest",
    "read_market1501",
    "read_msmt17",
    "register",
]
