"""The machine's speed today: a 2048^2 fp32 matmul in GFLOP/s (numpy), printed beside absolute times
by the other benchmarks, since machines of one kind differ 2-3x between days. Run alone it prints
one JSON line."""

from __future__ import annotations

import json
import time


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a  # warm-up: thread pool and page faults out of the timing
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


if __name__ == "__main__":
    print(json.dumps({"benchmark": "matmul", "n": 2048, "gflops": round(matmul_gflops(), 1)}))
