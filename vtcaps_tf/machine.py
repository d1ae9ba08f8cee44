"""How fast this machine is today, for putting absolute times in context.

Machines of one kind differ 2-3x between days (a 2048^2 fp32 matmul gave 65-194 GFLOP/s on the
2-core machines this project is measured on), so every benchmark and `make demo` print the
same-run figure beside their times, and the demo scales its wall time to the slowest such machine.
"""

from __future__ import annotations

import time

SLOW_MACHINE_GFLOPS = 65.0  # the slowest matmul figure measured on this project's CPU machines


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n fp32 matmul (numpy), after one warm-up product."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a  # warm-up: thread pool and page faults out of the timing
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def scaled_to_slow_machine(seconds: float, gflops: float) -> float:
    """`seconds` measured at `gflops`, as it would take on a SLOW_MACHINE_GFLOPS machine
    (compute-bound work scales with the matmul rate)."""
    return seconds * gflops / SLOW_MACHINE_GFLOPS
