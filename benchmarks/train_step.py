"""Training throughput (clips/s) of a preset: this tree's model code against a baseline revision's,
in one run, beside the same-run matmul figure.

Each side runs in its own subprocess (same settings, PYTHONPATH pointed at its tree): the baseline
is `vtcaps_tf` of `--baseline REV`, extracted with `git archive` into a temporary directory.
`train_on_batch` is timed on random clips shaped and typed by `model.input_specs()` after warm-up
steps (tracing excluded); the median step is reported. Prints one JSON line.

    python benchmarks/train_step.py [--preset tiny] [--batch-size 16] [--baseline REV] [--jit]
                                    [--tpn-frame-stride K]

`--baseline` defaults to the parent of the commit that introduced `FactorisedConv3D` (the model
code before the CPU speed work), or HEAD when that commit is not in the history; `--baseline none`
measures this tree only. `--jit` adds this tree with `jit_compile=True`, `--tpn-frame-stride K`
this tree with TPN-ERM reading every K-th frame of its window (`ModelConfig.tpn_frame_stride`).

oneDNN kernels (TF_ENABLE_ONEDNN_OPTS; TensorFlow enables them by default only on CPUs with
AVX-512/AMX): by default (`--onednn shipped`) each side runs with the settings its own `vtcaps`
commands use: this tree with `vtcaps_tf.cli.tensorflow_setup.TENSORFLOW_DEFAULTS` (oneDNN on), the baseline with
TensorFlow's default, unless TF_ENABLE_ONEDNN_OPTS is set in the environment (then both get it).
`--onednn 0|1` sets it for both sides, to separate the code's gain from the kernels'.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def random_batch(model, batch, seed=0):
    """Random inputs from `model.input_specs()` (uint8 -> 0..255, float -> [0, 1)) and labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = {}
    for name, spec in model.input_specs().items():
        shape = (batch,) + tuple(spec.shape[1:])
        if spec.dtype.is_integer:
            x[name] = rng.integers(0, 256, shape).astype(spec.dtype.as_numpy_dtype)
        else:
            x[name] = rng.random(shape).astype(spec.dtype.as_numpy_dtype)
    return x, rng.integers(0, model.config.num_classes, batch)


def measure(preset: str, batch: int, steps: int, warmup: int, jit_compile: bool,
            mixed_precision: bool = False, tpn_frame_stride: int = 1) -> dict:
    """Median `train_on_batch` time of the importable `vtcaps_tf` (this process' sys.path)."""
    import keras

    from vtcaps_tf.models import build_model

    previous = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        overrides = {"tpn_frame_stride": tpn_frame_stride} if tpn_frame_stride > 1 else {}
        model = build_model(preset, **overrides)
        model.compile(optimizer=keras.optimizers.Adam(1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8),
                      jit_compile=jit_compile)
        x, y = random_batch(model, batch)
        t0 = time.perf_counter()
        for _ in range(warmup):
            model.train_on_batch(x, y)
        warm_s = time.perf_counter() - t0
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            logs = model.train_on_batch(x, y, return_dict=True)
            times.append(time.perf_counter() - t0)
        loss = float(logs["loss"])
    finally:
        keras.config.set_dtype_policy(previous)
    median = sorted(times)[len(times) // 2]
    return {"clips_per_s": batch / median, "step_s": median, "warmup_s": warm_s, "loss": loss}


def default_baseline() -> str:
    """The parent of the commit that introduced FactorisedConv3D, else HEAD."""
    out = subprocess.run(["git", "log", "--format=%H", "-S", "class FactorisedConv3D", "--",
                          "vtcaps_tf/layers/resnet3d.py"], cwd=ROOT, capture_output=True, text=True)
    commits = out.stdout.split()
    return f"{commits[-1]}^" if out.returncode == 0 and commits else "HEAD"


def extract(rev: str, dest: str) -> str:
    """`vtcaps_tf` of `rev` unpacked under `dest`; returns the resolved commit."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT,
                            capture_output=True, text=True)
    if commit.returncode != 0:
        raise SystemExit(f"--baseline {rev!r} is not a commit of {ROOT}: {commit.stderr.strip()}")
    archive = subprocess.run(["git", "archive", "--format=tar", commit.stdout.strip(), "vtcaps_tf"],
                             cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", dest], input=archive.stdout, check=True)
    return commit.stdout.strip()


def run_side(tree: str, args, jit: bool, baseline: bool = False, tpn_frame_stride: int = 1) -> dict:
    """One measurement in a fresh interpreter whose `vtcaps_tf` comes from `tree`."""
    env = dict(os.environ, PYTHONPATH=tree)
    if args.onednn != "shipped":
        env["TF_ENABLE_ONEDNN_OPTS"] = args.onednn
    elif not baseline:
        from vtcaps_tf.cli.tensorflow_setup import TENSORFLOW_DEFAULTS  # imports no TensorFlow

        for key, value in TENSORFLOW_DEFAULTS.items():
            env.setdefault(key, value)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--preset", args.preset,
           "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--jit"] if jit else []
    cmd += ["--mixed-precision"] if args.mixed_precision else []
    cmd += ["--tpn-frame-stride", str(tpn_frame_stride)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"measurement in {tree} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{tree} jit={jit} tpn_frame_stride={tpn_frame_stride}: {result}", file=sys.stderr)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--baseline", default=None,
                   help="git revision of the baseline model code; 'none' to skip (default: see above)")
    p.add_argument("--jit", action="store_true", help="also time this tree with jit_compile=True")
    p.add_argument("--onednn", choices=("0", "1", "shipped"), default="shipped",
                   help="TF_ENABLE_ONEDNN_OPTS for both sides, or `shipped` (default): each side "
                        "with its own commands' setting (see above)")
    p.add_argument("--mixed-precision", action="store_true")
    p.add_argument("--tpn-frame-stride", type=int, default=1, metavar="K",
                   help="also time this tree with TPN-ERM reading every K-th frame of its window")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(measure(args.preset, args.batch_size, args.steps, args.warmup, args.jit,
                                 args.mixed_precision, args.tpn_frame_stride)))
        return 0

    from matmul import matmul_gflops

    gflops = matmul_gflops()
    rev = args.baseline if args.baseline is not None else default_baseline()
    result = {"benchmark": "train_step", "preset": args.preset, "batch_size": args.batch_size,
              "mixed_precision": args.mixed_precision, "timed_steps": args.steps,
              "onednn": args.onednn, "onednn_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}
    current = run_side(ROOT, args, jit=False)
    result.update(clips_per_s=round(current["clips_per_s"], 3), step_s=round(current["step_s"], 3))
    if rev.lower() != "none":
        with tempfile.TemporaryDirectory(prefix="vtcaps_baseline_") as tree:
            result["baseline_rev"] = extract(rev, tree)[:12]
            base = run_side(tree, args, jit=False, baseline=True)
        result.update(baseline_clips_per_s=round(base["clips_per_s"], 3),
                      baseline_step_s=round(base["step_s"], 3),
                      speedup=round(current["clips_per_s"] / base["clips_per_s"], 3))
    if args.jit:
        jit = run_side(ROOT, args, jit=True)
        result.update(clips_per_s_jit=round(jit["clips_per_s"], 3),
                      jit_speedup=round(jit["clips_per_s"] / current["clips_per_s"], 3))
    if args.tpn_frame_stride > 1:
        strided = run_side(ROOT, args, jit=False, tpn_frame_stride=args.tpn_frame_stride)
        result.update(tpn_frame_stride=args.tpn_frame_stride,
                      clips_per_s_tpn_stride=round(strided["clips_per_s"], 3),
                      tpn_stride_speedup=round(strided["clips_per_s"] / current["clips_per_s"], 3))
    result["matmul_gflops"] = round((gflops + matmul_gflops()) / 2, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
