"""Every benchmark script still imports and parses its flags (``--help``), so none rots unseen.

The benchmarks are run by hand and by ``make bench``; this catches a moved import or a renamed
function in the package before a user meets it.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "benchmarks", "*_bench.py")))
SCRIPTS += [os.path.join(ROOT, "benchmarks", "plot_ladder.py")]


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_benchmark_imports_and_prints_its_usage(script):
    proc = subprocess.run(
        [sys.executable, script, "--help"],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        cwd=ROOT,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout
