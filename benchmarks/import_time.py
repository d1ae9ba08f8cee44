"""Import cost of `vtcaps_tf.models` (the package with its Keras objects registered) against
importing tensorflow and keras themselves.

Each import runs in a fresh interpreter (median of several runs, interleaved so that machine load
affects both alike). Prints one JSON line.
"""

import json
import statistics
import subprocess
import sys

BASE = "import tensorflow, keras"
PACKAGE = "import vtcaps_tf.models"  # registers the Keras objects; `import vtcaps_tf` alone is light
TIMER = "import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"


def _time(stmt: str) -> float:
    out = subprocess.run([sys.executable, "-c", TIMER.format(stmt=stmt)], capture_output=True,
                         text=True, check=True, env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": ""})
    return float(out.stdout.strip().splitlines()[-1])


def main(repeats: int = 5) -> None:
    base, package = [], []
    for _ in range(repeats):
        base.append(_time(BASE))
        package.append(_time(PACKAGE))
    b, p = statistics.median(base), statistics.median(package)
    print(json.dumps({"benchmark": "import_time", "tensorflow_keras_s": round(b, 3),
                      "vtcaps_tf_models_s": round(p, 3), "ratio": round(p / b, 3), "repeats": repeats}))


if __name__ == "__main__":
    main()
