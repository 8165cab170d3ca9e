"""Shared pytest fixtures: a tiny generated Market-1501-layout data set, built once per test run.

Test modules mirror the package (``tests/models/test_folding.py`` tests
``maskpre_tf/models/folding.py``; programs and top-level modules at ``tests/``); their shared
helpers live in ``tests/support/``, which this file puts on ``sys.path``.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The shared helpers (tiny runs, generated files, dense references) import by their names.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))

import pytest  # noqa: E402

# The tiny set shared by the whole test run: 12 identities (6 train / 6 test), 3 cameras, ~4 images
# per identity per camera it appears in. Generation takes well under a second.
TINY_SET = {"identities": 12, "cameras": 3, "images_per_camera": 4, "seed": 0}


@pytest.fixture(scope="session")
def synth_market(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path (str) of a tiny generated set in Market-1501 layout (see :data:`TINY_SET`)."""
    from maskpre_tf.data.synth import generate

    out = tmp_path_factory.mktemp("synth_market")
    generate(str(out), verbose=False, **TINY_SET)
    return str(out)
