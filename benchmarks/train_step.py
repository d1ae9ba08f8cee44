"""Training throughput (clips/s) of a preset, with and without XLA (`jit_compile`), in one run.

Times `train_on_batch` on random clips of the preset's shapes after warm-up steps (tracing and,
for XLA, compiling are excluded). Prints one JSON line.

    python benchmarks/train_step.py [--preset small] [--batch-size 4] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _batch(cfg, batch, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    n, m, s = cfg.clip_frames, cfg.long_frames, cfg.image_size
    x = {
        "frames": rng.integers(0, 256, (batch, n, s, s, 3), dtype=np.uint8),
        "landmarks": rng.random((batch, n, 68, 2), dtype=np.float32),
        "long_frames": rng.integers(0, 256, (batch, m, s, s, 3), dtype=np.uint8),
    }
    y = rng.integers(0, cfg.num_classes, batch)
    return x, y


def measure(preset: str, batch: int, steps: int, warmup: int, jit_compile: bool,
            mixed_precision: bool = False) -> dict:
    import keras

    from vtcaps_tf.models import build_model

    previous = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = build_model(preset)
        model.compile(optimizer=keras.optimizers.Adam(1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8),
                      jit_compile=jit_compile)
        x, y = _batch(model.config, batch)
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=3, help="timed steps (the median is reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--mixed-precision", action="store_true")
    args = p.parse_args(argv)

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    device = "gpu:" + tf.config.experimental.get_device_details(gpus[0]).get("device_name", "?") \
        if gpus else f"cpu:{os.cpu_count()} cores"
    plain = measure(args.preset, args.batch_size, args.steps, args.warmup, False, args.mixed_precision)
    print(f"no jit: {plain}", file=sys.stderr)
    jit = measure(args.preset, args.batch_size, args.steps, args.warmup, True, args.mixed_precision)
    print(f"jit: {jit}", file=sys.stderr)
    print(json.dumps({
        "benchmark": "train_step",
        "preset": args.preset,
        "device": device,
        "batch_size": args.batch_size,
        "mixed_precision": args.mixed_precision,
        "clips_per_s": round(plain["clips_per_s"], 3),
        "clips_per_s_jit": round(jit["clips_per_s"], 3),
        "jit_speedup": round(jit["clips_per_s"] / plain["clips_per_s"], 3),
        "step_s": round(plain["step_s"], 3),
        "step_s_jit": round(jit["step_s"], 3),
        "warmup_s": round(plain["warmup_s"], 1),
        "warmup_s_jit": round(jit["warmup_s"], 1),
        "timed_steps": args.steps,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
