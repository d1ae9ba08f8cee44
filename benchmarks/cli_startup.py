"""Start-up time of `vtcaps --help` and `vtcaps train --help` against the same help printed after
importing the model package (what every command paid when `import vtcaps_tf` registered the Keras
objects eagerly). Each runs in a fresh interpreter, interleaved, median of several runs; also counts
the stderr lines each prints. Prints one JSON line with the same-run matmul figure."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from matmul import matmul_gflops  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = "import sys; {pre}from vtcaps_tf.cli.main import main; sys.exit(main(sys.argv[1:]))"
CASES = {
    "help": ("", ["--help"]),
    "train_help": ("", ["train", "--help"]),
    "help_with_eager_registration": ("import vtcaps_tf.models; ", ["--help"]),
}


def _run(pre: str, argv: list[str]) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = ROOT
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RUN.format(pre=pre), *argv], capture_output=True,
                          text=True, env=env, check=True)
    return time.perf_counter() - start, len(proc.stderr.splitlines())


def main(repeats: int = 5) -> None:
    times = {name: [] for name in CASES}
    stderr_lines = {}
    for _ in range(repeats):
        for name, (pre, argv) in CASES.items():
            seconds, lines = _run(pre, argv)
            times[name].append(seconds)
            stderr_lines[name] = lines
    med = {name: statistics.median(t) for name, t in times.items()}
    print(json.dumps({"benchmark": "cli_startup", "repeats": repeats,
                      **{f"{name}_s": round(s, 3) for name, s in med.items()},
                      **{f"{name}_stderr_lines": n for name, n in stderr_lines.items()},
                      "speedup_help": round(med["help_with_eager_registration"] / med["help"], 1),
                      "matmul_gflops": round(matmul_gflops(), 1)}))


if __name__ == "__main__":
    main()
