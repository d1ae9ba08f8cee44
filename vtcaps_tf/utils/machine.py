"""How fast this machine is today, for putting absolute times in context.

Machines of one kind differ 2-3x between days (a 2048^2 fp32 matmul gave 65-194 GFLOP/s on the
2-core machines this project is measured on), so every benchmark and `make demo` print the
same-run figure beside their times.

The figure is numpy's matmul, so it is OpenBLAS' speed. OpenBLAS picks its kernels by CPU model,
and on a model it does not know it falls back to generic SSE3 kernels ('Prescott'): on a 2-core
Xeon of this kind with AVX-512 (model 207) numpy's OpenBLAS 0.3.23 gave 29-62 GFLOP/s that way
and 179 with its SkylakeX kernels, while TensorFlow's matmul gave 212. Such a figure measures the
library, not the machine, so `matmul_gflops` then measures in a child process with the kernels
the CPU's own flags allow (OPENBLAS_CORETYPE).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time

# OpenBLAS' x86 kernel sets by the instructions they use; the generic ones are what it falls back
# to on a CPU model it does not know.
GENERIC_CORES = frozenset({"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom",
                           "Katmai", "Coppermine", "Northwood", "Banias", "Unknown"})
CORE_FOR_FLAGS = (("SkylakeX", frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})),
                  ("Haswell", frozenset({"avx2", "fma"})),
                  ("Sandybridge", frozenset({"avx"})))


def _measure(n: int, repeats: int) -> float:
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a  # warm-up: thread pool and page faults out of the timing
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def blas_core() -> str | None:
    """The kernel set numpy's OpenBLAS uses in this process ('SkylakeX', 'Prescott', ...); None
    where numpy has no OpenBLAS or it cannot be asked."""
    import numpy  # noqa: F401 - loads the library whose kernels are asked for

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in ("openblas_get_corename64_", "openblas_get_corename", "scipy_openblas_get_corename64_"):
            get = getattr(lib, symbol, None)
            if get is not None:
                get.restype = ctypes.c_char_p
                return get().decode()
    return None


def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags (Linux /proc/cpuinfo); empty where unreadable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def fitting_core(core: str | None, flags: frozenset[str]) -> str | None:
    """The OpenBLAS kernel set to measure with when `core` is a generic fallback on a CPU whose
    `flags` allow a better one; None when `core` stands (unknown, already specific, or the CPU
    has nothing better)."""
    if core not in GENERIC_CORES:
        return None
    return next((name for name, needs in CORE_FOR_FLAGS if needs <= flags), None)


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n fp32 matmul (numpy), after one warm-up product; with the kernels this
    CPU allows where OpenBLAS fell back to generic ones (module docstring)."""
    core = fitting_core(blas_core(), cpu_flags())
    if core is not None and "OPENBLAS_CORETYPE" not in os.environ:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, OPENBLAS_CORETYPE=core,
                   PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        try:
            child = subprocess.run([sys.executable, "-m", "vtcaps_tf.utils.machine", str(n), str(repeats)],
                                   env=env, capture_output=True, text=True, timeout=300)
            if child.returncode == 0:
                return float(child.stdout.split()[-1])
        except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
            pass  # the in-process figure below, which understates the machine
    return _measure(n, repeats)


def describe() -> str:
    """One line on which kernels the matmul figure uses, for the demo's and the benchmarks' logs."""
    core = blas_core()
    better = fitting_core(core, cpu_flags())
    if better is not None and "OPENBLAS_CORETYPE" not in os.environ:
        return f"OpenBLAS {better} kernels (numpy's OpenBLAS fell back to {core} on this CPU)"
    return f"OpenBLAS {core} kernels" if core else "numpy's BLAS"


if __name__ == "__main__":  # the child process of `matmul_gflops`
    print(_measure(int(sys.argv[1]), int(sys.argv[2])))
