#!/usr/bin/env bash
# Runs `bazel test //...` offline with the project's virtual environment (made by `make install`).
#
# Where `bazel` is not on PATH it says so and exits 0, so CI passes on machines without Bazel.
# Otherwise it puts .venv/bin first on PATH (.bazelrc hands PATH to the actions and tests, and the
# py_test launchers start the first `python3` on it) and returns bazel's exit status.
# Extra arguments go to `bazel test`, e.g. `tools/bazel_test.sh --test_output=all`.
# Bazel 4.2.3 (Debian's bazel-bootstrap) is the version this is tested with.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! command -v bazel >/dev/null 2>&1; then
    echo "bazel not installed; skipping \`bazel test //...\`"
    exit 0
fi

venv="${VENV:-.venv}"
case "$venv" in
    /*) ;;
    *) venv="$PWD/$venv" ;;
esac
check="import importlib.util as u, sys; sys.exit(not (u.find_spec('pytest') and u.find_spec('tensorflow')))"
if ! "$venv/bin/python3" -c "$check" >/dev/null 2>&1; then
    echo "error: $venv/bin/python3 cannot import pytest and tensorflow;" \
        "run \`make install\` first (or set VENV to a virtual environment with the project's" \
        "test dependencies)" >&2
    exit 2
fi

venv_bin="$venv/bin"
export PATH="$venv_bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

echo "running \`bazel test //...\` with $venv_bin/python3"
exec bazel test //... "$@"
