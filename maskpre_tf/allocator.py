"""A memory allocator that keeps freed tensor buffers, preloaded before TensorFlow starts.

TensorFlow on the CPU allocates and frees its large activation buffers every step. glibc's
``malloc`` serves blocks that large with ``mmap`` and gives them back to the kernel on ``free``,
so every step faults its buffers in again: on a 2-core AVX2 machine a training process spent
~30-50 % of its CPU time in the kernel and took ~24.8 M minor page faults in a 4-minute
``benchmarks/train_bench.py`` run (tensorflow/tensorflow issues #3009 and #9757 report the same
symptom). Raising glibc's mmap/trim thresholds did not help there; a general-purpose allocator
that keeps freed memory in its own pools did: tcmalloc 2.6x the MaskPre step's images/s,
mimalloc 1.9x, jemalloc 1.2x.

An allocator can only replace ``malloc`` before the process starts, through ``LD_PRELOAD``.
:func:`preload` therefore re-executes the running program once, with the same interpreter and
command line (``sys.orig_argv``), and ``LD_PRELOAD`` naming the first allocator found:

1. tcmalloc from the system (Debian/Ubuntu ``libtcmalloc-minimal4``, or gperftools' full one);
2. mimalloc from the ``cmeel-mimalloc`` wheel (a dependency of this package on Linux x86-64 and
   aarch64) or from the system (``libmimalloc2.0``);
3. jemalloc from the system (``libjemalloc2``).

``MASKPRE_ALLOCATOR`` in the environment chooses: ``auto`` (the default: the order above),
``system`` (no preload: the C library's ``malloc``), ``tcmalloc``, ``mimalloc``, ``jemalloc``,
or the path of a shared library. Where none is found (another OS, a machine without them) the
program runs as before after one line saying how to get the speed. A library already in
``LD_PRELOAD`` (set by the user or by a parent process that re-executed itself) is kept and
nothing is re-executed, so child processes inherit the choice and cost nothing more.

Python-API users (notebooks, services) cannot be re-executed; they start their interpreter
with ``LD_PRELOAD="$(python -m maskpre_tf.allocator)"``, which prints the library's path.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Mapping, Sequence

ENV = "MASKPRE_ALLOCATOR"
# Set in the re-executed process: the preload was attempted once; never re-execute again.
_ATTEMPTED = "MASKPRE_ALLOCATOR_PRELOADED"

# Shared-library file names of each allocator, in order of preference within it.
LIBRARIES: dict[str, tuple[str, ...]] = {
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"),
    "mimalloc": ("libmimalloc.so.3", "libmimalloc.so.2"),
    "jemalloc": ("libjemalloc.so.2",),
}
# Directories searched for system copies (Debian/Ubuntu multiarch, then the generic ones).
SYSTEM_DIRS = ("/usr/lib/{arch}-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")

HINT = (
    "note: no fast memory allocator found; TensorFlow steps may be 1.5-3x slower on this "
    "machine (freed buffers go back to the kernel). Install one: pip install cmeel-mimalloc, "
    "or apt-get install libtcmalloc-minimal4 (docs/performance.md#memory-allocator); "
    f"{ENV}=system silences this"
)


def wheel_dirs() -> list[str]:
    """Library folders of allocator wheels in this interpreter's site-packages (cmeel layout)."""
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    return [os.path.join(root, "cmeel.prefix", "lib") for root in sorted(roots)]


def search_dirs() -> list[str]:
    """Where allocator libraries are looked for: pip wheels first, then the system's."""
    arch = os.uname().machine if hasattr(os, "uname") else ""
    return wheel_dirs() + [d.format(arch=arch) for d in SYSTEM_DIRS]


def find_library(name: str, dirs: Sequence[str]) -> str | None:
    """Path of the first library file of allocator ``name`` in ``dirs``, or None."""
    for file_name in LIBRARIES[name]:
        for folder in dirs:
            path = os.path.join(folder, file_name)
            if os.path.isfile(path):
                return path
    return None


def choose(setting: str, dirs: Sequence[str]) -> str | None:
    """The library to preload for a ``MASKPRE_ALLOCATOR`` value, or None for none.

    ``auto`` tries tcmalloc, mimalloc, jemalloc in that order; a name tries only that
    allocator; a path is taken as it is when the file exists.

    Raises:
      ValueError: an unknown value, or a path that does not exist.
    """
    setting = setting.strip() or "auto"
    if setting == "system":
        return None
    if setting == "auto":
        for name in LIBRARIES:
            path = find_library(name, dirs)
            if path:
                return path
        return None
    if setting in LIBRARIES:
        return find_library(setting, dirs)
    if os.sep in setting:
        if not os.path.isfile(setting):
            raise ValueError(f"{ENV}={setting}: no such file")
        return setting
    raise ValueError(
        f"{ENV}={setting}: expected auto, system, {', '.join(LIBRARIES)} or a library's path"
    )


def preloaded(environ: Mapping[str, str]) -> str | None:
    """The allocator library already named in ``LD_PRELOAD``, or None."""
    for entry in environ.get("LD_PRELOAD", "").replace(":", " ").split():
        base = os.path.basename(entry)
        if any(base.startswith(f.split(".so")[0]) for files in LIBRARIES.values() for f in files):
            return entry
    return None


def preload_env(environ: Mapping[str, str], library: str) -> dict[str, str]:
    """A copy of ``environ`` with ``library`` first in ``LD_PRELOAD`` and the attempt marked."""
    env = dict(environ)
    rest = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{library} {rest}".strip()
    env[_ATTEMPTED] = library
    return env


def preload(environ: Mapping[str, str] | None = None) -> None:
    """Re-execute this program with a fast allocator preloaded, once; else return.

    Call it first in a program's ``__main__`` block, before TensorFlow (or NumPy's large
    buffers) load. Returns without re-executing when ``MASKPRE_ALLOCATOR=system``, when an
    allocator is already preloaded, when the re-executed process runs, or when the platform
    has no ``LD_PRELOAD`` (not Linux); prints :data:`HINT` once when no library is found.
    """
    environ = os.environ if environ is None else environ
    if not sys.platform.startswith("linux") or environ.get(_ATTEMPTED) is not None:
        return
    if preloaded(environ):
        return
    try:
        library = choose(environ.get(ENV, "auto"), search_dirs())
    except ValueError as err:
        print(f"warning: {err}; running with the system allocator", file=sys.stderr)
        return
    if library is None:
        if environ.get(ENV, "auto") != "system":
            print(HINT, file=sys.stderr)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), preload_env(environ, library))


def main() -> int:
    """``python -m maskpre_tf.allocator``: print the library to preload (exit 1 if none)."""
    try:
        library = choose(os.environ.get(ENV, "auto"), search_dirs())
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    if library is None:
        print(HINT, file=sys.stderr)
        return 1
    print(library)
    return 0


if __name__ == "__main__":
    sys.exit(main())
