"""Entry point of the Bazel ``py_test`` targets: runs one test module through pytest.

Bazel starts a py_test's ``main`` from the workspace's runfiles directory with the target's
``args``. Going through pytest, rather than running the module as a script, keeps what a plain
``pytest`` run has: the fixtures of ``tests/conftest.py``, the ``slow`` marker and the options in
``pyproject.toml`` (the default run deselects slow tests). The script also maps Bazel's test
environment onto pytest:

* ``XML_OUTPUT_FILE`` -> ``--junitxml`` (per-test-case results under ``bazel-testlogs/``);
* ``TESTBRIDGE_TEST_ONLY`` (``bazel test --test_filter=EXPR``) -> ``-k EXPR``;
* ``TEST_TMPDIR`` -> pytest's base temporary directory, and ``HOME`` where Bazel leaves it unset,
  so a test writes only below the directory Bazel gives it (and removes afterwards).

A module whose tests are all deselected (for example all marked ``slow``) counts as passed.

Usage (what ``BUILD`` passes): ``pytest_runner.py tests/test_x.py [more pytest arguments]``;
``bazel test //:test_x --test_arg=-m --test_arg=slow`` runs a module's slow tests.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

import pytest

CONFIG_FILE = "pyproject.toml"


def pytest_arguments(args: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Command-line arguments for ``pytest.main``.

    Args:
        args: the py_test's arguments: the test module path(s), then any ``--test_arg`` values.
        env: the test's environment (``os.environ``): ``XML_OUTPUT_FILE``,
            ``TESTBRIDGE_TEST_ONLY`` and ``TEST_TMPDIR`` are read when present.

    Returns:
        The argument list: the project's pytest configuration file, quiet-but-listed output with a
        summary of skips and failures, no cache directory (the runfiles tree is not the place for
        one), then the Bazel mappings described in the module docstring, then ``args``.
    """
    result = ["-c", CONFIG_FILE, "-v", "-ra", "--durations=5", "-p", "no:cacheprovider"]
    if env.get("XML_OUTPUT_FILE"):
        result.append(f"--junitxml={env['XML_OUTPUT_FILE']}")
    if env.get("TESTBRIDGE_TEST_ONLY"):
        result += ["-k", env["TESTBRIDGE_TEST_ONLY"]]
    if env.get("TEST_TMPDIR"):
        result.append(f"--basetemp={os.path.join(env['TEST_TMPDIR'], 'pytest')}")
    return result + list(args)


def main(argv: Sequence[str]) -> int:
    """Runs pytest on ``argv[1:]`` and returns the exit status Bazel should see (0 = passed)."""
    if len(argv) < 2:
        print(f"usage: {argv[0]} tests/test_x.py [pytest arguments]", file=sys.stderr)
        return 2
    if not os.path.isfile(CONFIG_FILE):
        print(
            f"error: {os.path.abspath(CONFIG_FILE)} not found: the py_test must run from the "
            f"workspace root of its runfiles with //:{CONFIG_FILE} in its data",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "HOME" not in os.environ and os.environ.get("TEST_TMPDIR"):
        home = os.path.join(os.environ["TEST_TMPDIR"], "home")
        os.makedirs(home, exist_ok=True)
        os.environ["HOME"] = home
    status = pytest.main(pytest_arguments(argv[1:], os.environ))
    if status == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("no test selected in this module (all deselected by markers); counted as passed")
        return 0
    return int(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
