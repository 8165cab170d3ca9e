"""What every benchmark prints first and measures alike: the machine, its allocator, its peak.

Speed on these machines varies by up to 10x between CPUs (an AVX2-only EPYC against an
AVX-512 Xeon) and by 2-3x with the memory allocator (:mod:`maskpre_tf.allocator`), so every
figure a benchmark prints is preceded by :func:`describe`: the CPU's model name (``lscpu``), its
vector extensions, the instruction set oneDNN runs its kernels with (``ONEDNN_MAX_CPU_ISA`` can
cap it: ``ONEDNN_MAX_CPU_ISA=AVX2`` makes an AVX-512 machine run the AVX2 kernels), the
allocator this process runs on and the nominal FMA peak.

:func:`start` is the first call of each benchmark's ``__main__``: it puts this checkout's package
on ``sys.path`` and re-executes the benchmark with a fast allocator preloaded, as every program
of the package does. :class:`Usage` measures a region's CPU seconds (user, system), minor page
faults and wall time from ``getrusage``.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# The vector extensions that decide a CPU's deep-learning speed, as lscpu names them.
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
# FP32 lanes per FMA instruction of each oneDNN ISA family (its widest vector).
LANES = {"avx512": 16, "avx2": 8, "avx": 8, "sse": 4}
# FMA units per core assumed for the nominal peak (two on current x86 server cores).
FMA_UNITS = 2


def start() -> None:
    """Preload a fast allocator (re-executing this benchmark once), as the programs do."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from maskpre_tf.allocator import preload

    preload()


def lscpu() -> dict[str, str]:
    """``lscpu``'s fields (name → value); an empty dict where lscpu is missing."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def clock_ghz(info: dict[str, str]) -> float:
    """The CPU's clock in GHz: lscpu's maximum, else the current one in /proc/cpuinfo."""
    if info.get("CPU max MHz"):
        return float(info["CPU max MHz"]) / 1000
    try:
        with open("/proc/cpuinfo") as f:
            mhz = re.search(r"cpu MHz\s*:\s*([\d.]+)", f.read())
        return float(mhz.group(1)) / 1000 if mhz else float("nan")
    except OSError:
        return float("nan")


@cache
def onednn_isa() -> str:
    """The ISA oneDNN runs its kernels with here, e.g. "Intel AVX2" (one small convolution in a
    fresh TensorFlow process with ``ONEDNN_VERBOSE=1``; the environment's ISA cap applies)."""
    code = (
        "import tensorflow as tf\n"
        "tf.nn.conv2d(tf.zeros([1, 8, 8, 8]), tf.zeros([3, 3, 8, 8]), 1, 'SAME')"
    )
    env = dict(os.environ, ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="2", MASKPRE_ALLOCATOR="system")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    found = re.search(r"onednn_verbose,.*info,cpu,isa:([^\n]+)", proc.stdout + proc.stderr)
    return found.group(1).strip() if found else "unknown (oneDNN printed no ISA)"


def isa_lanes(isa: str) -> int:
    """FP32 lanes of an ISA name as oneDNN prints it ("Intel AVX-512 with ..." → 16)."""
    name = isa.lower().replace("-", "")
    return next((lanes for key, lanes in LANES.items() if key in name), 4)


def allocator_in_use() -> str:
    """The allocator library mapped into this process, or "glibc malloc"."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return "unknown"
    for name in ("tcmalloc", "mimalloc", "jemalloc"):
        if f"lib{name}" in maps:
            return name
    return "glibc malloc"


@dataclass(frozen=True)
class Machine:
    """The CPU a figure was measured on (see :func:`machine`)."""

    model: str
    cores: int
    flags: tuple[str, ...]
    isa: str
    ghz: float
    allocator: str

    @property
    def peak_gflops(self) -> float:
        """Nominal FP32 FMA peak: cores x GHz x lanes x 2 (multiply + add) x FMA units."""
        return self.cores * self.ghz * isa_lanes(self.isa) * 2 * FMA_UNITS

    def describe(self) -> str:
        """One line naming everything a speed figure depends on."""
        cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
        return (
            f"CPU: {self.model}, {self.cores} cores at {self.ghz:.2f} GHz, "
            f"{' '.join(self.flags) or 'no AVX2'}; oneDNN ISA: {self.isa}"
            f"{f' (capped by ONEDNN_MAX_CPU_ISA={cap})' if cap else ''}; "
            f"allocator: {self.allocator}; nominal FP32 FMA peak {self.peak_gflops:.0f} GFLOP/s"
        )


def machine() -> Machine:
    """This machine as :func:`describe` prints it."""
    info = lscpu()
    flags = set(info.get("Flags", "").split())
    return Machine(
        model=info.get("Model name", "unknown CPU"),
        cores=len(os.sched_getaffinity(0)),
        flags=tuple(f for f in VECTOR_FLAGS if f in flags),
        isa=onednn_isa(),
        ghz=clock_ghz(info),
        allocator=allocator_in_use(),
    )


def describe() -> str:
    """The line every benchmark prints before its figures."""
    return machine().describe()


@dataclass
class Usage:
    """CPU time, page faults and wall time of a region: ``with Usage() as u: ...``.

    After the block: ``user_s`` / ``sys_s`` CPU seconds of every thread of this process,
    ``minor_faults``, ``wall_s``; :attr:`sys_share` the kernel's share of the CPU time.
    """

    user_s: float = 0.0
    sys_s: float = 0.0
    minor_faults: int = 0
    wall_s: float = 0.0

    def __enter__(self) -> Usage:
        self._start = (resource.getrusage(resource.RUSAGE_SELF), time.perf_counter())
        return self

    def __exit__(self, *exc) -> None:
        before, t0 = self._start
        after = resource.getrusage(resource.RUSAGE_SELF)
        self.user_s += after.ru_utime - before.ru_utime
        self.sys_s += after.ru_stime - before.ru_stime
        self.minor_faults += after.ru_minflt - before.ru_minflt
        self.wall_s += time.perf_counter() - t0

    @property
    def sys_share(self) -> float:
        """System time as a fraction of all CPU time in the region."""
        return self.sys_s / max(self.user_s + self.sys_s, 1e-9)
