"""Offline stand-in for @rules_java//java:defs.bzl.

Bazel 4.2.3's built-in @bazel_tools//tools/jdk BUILD file loads the Java rule names from
@rules_java. This project builds no Java code; each name below forwards to the native rule built
into Bazel so that the file loads without fetching @rules_java from the network.
"""

def java_binary(**attrs):
    """Forwards to native.java_binary."""
    native.java_binary(**attrs)

def java_import(**attrs):
    """Forwards to native.java_import."""
    native.java_import(**attrs)

def java_library(**attrs):
    """Forwards to native.java_library."""
    native.java_library(**attrs)

def java_proto_library(**attrs):
    """Forwards to native.java_proto_library."""
    native.java_proto_library(**attrs)

def java_runtime(**attrs):
    """Forwards to native.java_runtime."""
    native.java_runtime(**attrs)

def java_test(**attrs):
    """Forwards to native.java_test."""
    native.java_test(**attrs)

def java_toolchain(**attrs):
    """Forwards to native.java_toolchain."""
    native.java_toolchain(**attrs)
