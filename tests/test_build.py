"""The Bazel BUILD file names every module of the package and every test module."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_patterns() -> list[str]:
    """Every quoted path or glob pattern under maskpre_tf/ or tests/ in BUILD."""
    return re.findall(r'"((?:maskpre_tf|tests)/[^"]+\.py)"', (ROOT / "BUILD").read_text())


def covered(path: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        if "**" in pattern:  # maskpre_tf/data/**/*.py: anything below the folder
            if path.startswith(pattern.split("**")[0]):
                return True
        elif fnmatch.fnmatch(path, pattern) and path.count("/") == pattern.count("/"):
            return True
    return False


def test_every_module_and_test_has_a_bazel_target():
    patterns = build_patterns()
    files = [p.relative_to(ROOT).as_posix() for p in (ROOT / "maskpre_tf").rglob("*.py")]
    files += [p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py")]
    files += [p.relative_to(ROOT).as_posix() for p in (ROOT / "tests" / "support").glob("*.py")]
    missing = [f for f in files if not covered(f, patterns)]
    assert not missing
