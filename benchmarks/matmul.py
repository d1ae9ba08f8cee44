"""The machine's speed today: a 2048^2 fp32 matmul in GFLOP/s (numpy), printed beside absolute times
by the other benchmarks, since machines of one kind differ 2-3x between days. Run alone it prints
one JSON line. The measurement itself is `vtcaps_tf.utils.machine.matmul_gflops` (the demo uses it too)."""

from __future__ import annotations

import json

from vtcaps_tf.utils.machine import describe, matmul_gflops  # noqa: F401 - the benchmarks import it from here

if __name__ == "__main__":
    print(json.dumps({"benchmark": "matmul", "n": 2048, "gflops": round(matmul_gflops(), 1),
                      "kernels": describe()}))
