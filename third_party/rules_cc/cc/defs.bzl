"""Offline stand-in for @rules_cc//cc:defs.bzl.

Bazel 4.2.3's built-in @bazel_tools BUILD files load the C++ rule names from @rules_cc. This
project builds no C++ code; each name below forwards to the native rule built into Bazel so that
those BUILD files load without fetching @rules_cc from the network.
"""

def cc_binary(**attrs):
    """Forwards to native.cc_binary."""
    native.cc_binary(**attrs)

def cc_import(**attrs):
    """Forwards to native.cc_import."""
    native.cc_import(**attrs)

def cc_library(**attrs):
    """Forwards to native.cc_library."""
    native.cc_library(**attrs)

def cc_proto_library(**attrs):
    """Forwards to native.cc_proto_library."""
    native.cc_proto_library(**attrs)

def cc_test(**attrs):
    """Forwards to native.cc_test."""
    native.cc_test(**attrs)

def cc_toolchain(**attrs):
    """Forwards to native.cc_toolchain."""
    native.cc_toolchain(**attrs)

def cc_toolchain_suite(**attrs):
    """Forwards to native.cc_toolchain_suite."""
    native.cc_toolchain_suite(**attrs)

def objc_library(**attrs):
    """Forwards to native.objc_library."""
    native.objc_library(**attrs)
