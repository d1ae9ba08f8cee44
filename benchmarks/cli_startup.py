"""Start-up time of `vtcaps --help` and of `vtcaps COMMAND --help` for every command of the
dispatcher's table, against the top-level help printed after importing the model package (what
every command paid when `import vtcaps_tf` registered the Keras objects eagerly). Each runs in a
fresh interpreter, interleaved, median of several runs; also counts the stderr lines each prints.
Prints one JSON line with the same-run matmul figure."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]  # this checkout's vtcaps_tf first
from matmul import matmul_gflops  # noqa: E402
from vtcaps_tf.cli.main import COMMANDS  # noqa: E402  (imports no TensorFlow)

RUN = "import sys; {pre}from vtcaps_tf.cli.main import main; sys.exit(main(sys.argv[1:]))"
CASES = {
    "help": ("", ["--help"]),
    **{f"{name}_help": ("", [name, "--help"]) for name in COMMANDS},
    "help_with_eager_registration": ("import vtcaps_tf.models; ", ["--help"]),
}


def _run(pre: str, argv: list[str]) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = ROOT
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RUN.format(pre=pre), *argv], capture_output=True,
                          text=True, env=env, check=True)
    return time.perf_counter() - start, len(proc.stderr.splitlines())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    times = {name: [] for name in CASES}
    stderr_lines = {}
    for _ in range(args.repeats):
        for name, (pre, case_argv) in CASES.items():
            seconds, lines = _run(pre, case_argv)
            times[name].append(seconds)
            stderr_lines[name] = lines
    med = {name: statistics.median(t) for name, t in times.items()}
    slowest = max((n for n in med if n.endswith("_help") and n != "help"), key=med.get)
    print(json.dumps({"benchmark": "cli_startup", "repeats": args.repeats,
                      **{f"{name}_s": round(s, 3) for name, s in med.items()},
                      "slowest_command_help": slowest,
                      **{f"{name}_stderr_lines": n for name, n in stderr_lines.items() if n},
                      "speedup_help": round(med["help_with_eager_registration"] / med["help"], 1),
                      "matmul_gflops": round(matmul_gflops(), 1)}))


if __name__ == "__main__":
    main()
