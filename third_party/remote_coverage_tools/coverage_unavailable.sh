#!/usr/bin/env bash
# Placeholder for Bazel's coverage tools: this offline build has no coverage support.
echo "bazel coverage is not available in this offline build (third_party/remote_coverage_tools" \
    "is an empty stand-in); run pytest with a coverage plugin instead" >&2
exit 1
