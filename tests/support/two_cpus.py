"""Run a test script in a fresh process that sees two logical CPUs (two replicas).

Logical devices must be configured before TensorFlow starts, hence a fresh process; the script
is a file because AutoGraph reads the source of the functions it converts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = str(Path(__file__).resolve().parents[2])
PROLOGUE = """\
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""


def run_on_two_cpus(folder: Path, name: str, body: str) -> str:
    """Run ``body`` (after numpy/tf imports and two logical CPUs) as ``folder/name``.py.

    Fails the calling test with the script's stderr unless it exits 0 and its last line of
    output starts with "OK"; returns that line.
    """
    path = folder / f"{name}.py"
    path.write_text(PROLOGUE + textwrap.dedent(body))
    proc = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": REPO_ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines and lines[-1].startswith("OK"), proc.stderr[-3000:]
    return lines[-1]
