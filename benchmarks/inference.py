"""Inference throughput of the served graph: clips/s and GFLOP/s per preset and batch size (fp32),
beside the same-run matmul figure. Prints one JSON line.

What is timed is `serve`, the SavedModel signature function of `vtcaps_tf.export.saved_model.serving_fns`
(what TF Serving and `vtcaps predict` run), fed random inputs built from its input signature
(uint8 -> 0..255, float -> [0, 1)), for the default export (3D-CapsNet only) and the export with
TPN-ERM kept (`--with-teacher`), in the same run. FLOPs per clip come from
`vtcaps_tf.models.profile.count_flops` (TensorFlow's profiler on each batch-1 graph), so
GFLOP/s = FLOPs/clip x clips/s.
Each point: one warm-up call (tracing), then calls until `--min-seconds` have passed (at least
`--min-repeats`); the median call is reported.

    python benchmarks/inference.py [--presets tiny,small,paper] [--batches 1,8]
    python benchmarks/inference.py --bf16   # Keras mixed_bfloat16 vs float32, `small` 3D-CapsNet
    python benchmarks/inference.py --tflite --presets tiny,small   # SavedModel vs TFLite

--tflite prints one JSON line per row (preset, batch, runtime): the exported SavedModel's
`serving_default` (fp32, TensorFlow) and its TFLite models (`vtcaps_tf.export.tflite`: fp32,
dynamic, int8) run by `TFLiteModel` (one interpreter, as many threads as cores; XNNPACK, which no
environment variable limits to an instruction set, unlike oneDNN's ONEDNN_MAX_CPU_ISA). int8 is
calibrated on `--calibration-data`, default synthetic fixture clips (`tests.data.fixtures`):
the timing does not depend on what the clips show.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def random_inputs(specs, batch, seed=0):
    """Random inputs for named TensorSpecs ({name: spec}), the batch axis filled in."""
    import numpy as np

    rng = np.random.default_rng(seed)
    inputs = {}
    for name, spec in specs.items():
        shape = (batch,) + tuple(spec.shape[1:])
        if spec.dtype.is_integer:
            inputs[name] = rng.integers(0, 256, shape).astype(spec.dtype.as_numpy_dtype)
        else:
            inputs[name] = rng.random(shape).astype(spec.dtype.as_numpy_dtype)
    return inputs


def _time_calls(call, min_seconds, min_repeats, max_repeats=50):
    call()  # warm-up: tracing and first-call allocation out of the timing
    times, start = [], time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], len(times)


def measure_served(preset, batches, min_seconds, min_repeats, graphs=("served", "with_teacher")):
    """{graph: {flops_per_clip, batchN: {clips_per_s, call_s, gflops_per_s}}} of the `serve`
    signature of `preset`, for the default export (`served`: 3D-CapsNet only) and, measured in the
    same run, the export with TPN-ERM kept (`with_teacher`, what was served before)."""
    import keras

    from vtcaps_tf.export.saved_model import serving_fns
    from vtcaps_tf.models import build_model
    from vtcaps_tf.models.profile import count_flops

    keras.utils.set_random_seed(0)
    model = build_model(preset)
    result = {}
    for graph in graphs:
        with_teacher = graph == "with_teacher"
        flops = count_flops(lambda x: model.serving_outputs(x, with_teacher=with_teacher),
                            [model.input_specs(batch_size=1, with_teacher=with_teacher)])
        serve = serving_fns(model, with_teacher)[0]
        out = {"flops_per_clip": flops}
        for batch in batches:
            inputs = random_inputs({spec.name: spec for spec in serve.input_signature}, batch)
            args = [inputs[spec.name] for spec in serve.input_signature]  # positional, in order
            median, n = _time_calls(lambda: serve(*args), min_seconds, min_repeats)
            clips = batch / median
            out[f"batch{batch}"] = {"clips_per_s": round(clips, 3), "call_s": round(median, 4),
                                    "gflops_per_s": round(flops * clips / 1e9, 2), "calls": n}
            print(f"{preset} {graph} batch {batch}: {out[f'batch{batch}']}", file=sys.stderr, flush=True)
        result[graph] = out
    if len(result) == 2:
        result["served_speedup"] = {
            f"batch{b}": round(result["served"][f"batch{b}"]["clips_per_s"]
                               / result["with_teacher"][f"batch{b}"]["clips_per_s"], 2) for b in batches}
    return result


def measure_bf16(preset, batch, min_seconds, min_repeats):
    """clips/s of the 3D-CapsNet alone (no TPN) in float32 and under mixed_bfloat16."""
    import keras
    import tensorflow as tf

    from vtcaps_tf.models import build_model

    result = {}
    previous = keras.config.dtype_policy()
    try:
        for policy in ("float32", "mixed_bfloat16"):
            keras.config.set_dtype_policy(policy)
            keras.utils.set_random_seed(0)
            model = build_model(preset, use_tpn=False)
            forward = tf.function(lambda x: model(x, training=False)["probabilities"])
            x = random_inputs(model.input_specs(), batch)
            median, n = _time_calls(lambda: forward(x), min_seconds, min_repeats)
            result[policy] = {"clips_per_s": round(batch / median, 3), "call_s": round(median, 4), "calls": n}
            print(f"{policy}: {result[policy]}", file=sys.stderr, flush=True)
    finally:
        keras.config.set_dtype_policy(previous)
    result["bf16_speedup"] = round(result["mixed_bfloat16"]["clips_per_s"] / result["float32"]["clips_per_s"], 3)
    return result


def measure_tflite(preset, batches, min_seconds, min_repeats, calibration_data=None,
                   calibration_clips=64):
    """Rows {preset, batch, runtime, clips_per_s, call_s, calls} of the exported SavedModel and
    its TFLite models (see the module docstring), printed as they are measured."""
    import shutil
    import tempfile

    import keras
    import tensorflow as tf

    from vtcaps_tf.export.saved_model import export_model
    from vtcaps_tf.export.tflite import tflite_writer, write_tflite
    from vtcaps_tf.export.tflite_runtime import TFLITE_FILE, TFLiteModel
    from vtcaps_tf.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model(preset)
    workdir = tempfile.mkdtemp(prefix="vtcaps-bench-tflite-")
    try:
        path = export_model(model, os.path.join(workdir, "fer"), after_save=tflite_writer("fp32"))
        if calibration_data is None:
            from tests.data.fixtures import write_dataset

            c = model.config
            calibration_data = write_dataset(os.path.join(workdir, "data"), counts={"train": calibration_clips},
                                             clip_frames=c.clip_frames, long_frames=c.long_frames,
                                             image_size=c.image_size)
        versions = {"fp32": path}
        for mode in ("dynamic", "int8"):
            versions[mode] = os.path.join(workdir, mode)
            shutil.copytree(path, versions[mode], ignore=shutil.ignore_patterns(TFLITE_FILE + "*"))
            write_tflite(versions[mode], mode, calibration_data, calibration_count=calibration_clips)
        signature = tf.saved_model.load(path).signatures["serving_default"]
        specs = dict(signature.structured_input_signature[1])
        runners = {"saved_model_fp32": lambda x: signature(**x)}
        for mode, folder in versions.items():
            runners[f"tflite_{mode}"] = TFLiteModel(folder, interpreters=1, num_threads=os.cpu_count()).predict
        rows = []
        for batch in batches:
            inputs = random_inputs(specs, batch)
            tensors = {k: tf.constant(v) for k, v in inputs.items()}
            for runtime, run in runners.items():
                x = tensors if runtime.startswith("saved_model") else inputs
                median, n = _time_calls(lambda: run(x), min_seconds, min_repeats)
                rows.append({"preset": preset, "batch": batch, "runtime": runtime,
                             "clips_per_s": round(batch / median, 3), "call_s": round(median, 4), "calls": n})
                print(f"{preset} batch {batch} {runtime}: {rows[-1]['clips_per_s']} clips/s", file=sys.stderr,
                      flush=True)
        return rows
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="tiny,small,paper")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--min-seconds", type=float, default=5.0, help="timed seconds per point (default 5)")
    p.add_argument("--min-repeats", type=int, default=3)
    p.add_argument("--graphs", default="served,with_teacher",
                   help="served (default export), with_teacher, or both (default)")
    p.add_argument("--bf16", action="store_true",
                   help="instead: mixed_bfloat16 vs float32 clips/s of the `small` 3D-CapsNet (first --batches)")
    p.add_argument("--tflite", action="store_true",
                   help="instead: SavedModel fp32 vs TFLite fp32/dynamic/int8, one JSON line per row")
    p.add_argument("--calibration-data", default=None,
                   help="with --tflite: preprocessing output the int8 models calibrate on (default: synthetic clips)")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",") if b]
    presets = [s for s in args.presets.split(",") if s]

    import tensorflow as tf

    from matmul import matmul_gflops

    gflops = matmul_gflops()
    device = f"cpu:{os.cpu_count()} cores" if not tf.config.list_physical_devices("GPU") else "gpu"
    if args.tflite:
        from vtcaps_tf.export.tflite_runtime import runtime_name

        rows = [row for preset in presets for row in measure_tflite(
            preset, batches, args.min_seconds, args.min_repeats, args.calibration_data)]
        matmul = round((gflops + matmul_gflops()) / 2, 1)
        for row in rows:
            print(json.dumps({"benchmark": "inference", "mode": "tflite", "device": device, **row,
                              "tflite_runtime": runtime_name(),
                              "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
                              "matmul_gflops": matmul}))
        return 0
    result = {"benchmark": "inference", "device": device}
    if args.bf16:
        result.update(mode="bf16_vs_fp32", preset="small", model="capsnet3d", batch=batches[0],
                      **measure_bf16("small", batches[0], args.min_seconds, args.min_repeats))
    else:
        result.update(mode="served_fp32", signature="serve")
        for preset in presets:
            result[preset] = measure_served(preset, batches, args.min_seconds, args.min_repeats,
                                            tuple(g for g in args.graphs.split(",") if g))
    result["matmul_gflops"] = round((gflops + matmul_gflops()) / 2, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
