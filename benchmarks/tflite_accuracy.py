"""Accuracy kept by the TFLite models, against the trained model's SavedModel.

The SavedModel and its TFLite models (fp32, dynamic, int8) on one split, clip by clip and video by
video, one JSON line per runtime.

The trained `.keras` model is exported (`vtcaps_tf.export.saved_model.export_trained`) and each
TFLite model converted from that version (`vtcaps_tf.export.tflite.write_tflite`; int8 calibrates on
`--calibration-clips` clips of `--calibration-split`). Every runtime is asked through the class
`vtcaps predict` uses (`InProcessModel`, `TFLiteInProcessModel`) on the same batches of the split.
A row: clip and video accuracy (a video's prediction is the mean of its clips' probabilities, as
`vtcaps evaluate` reports it), the share of clips whose predicted class equals the SavedModel's,
and the largest difference in a probability from the SavedModel's.

    python benchmarks/tflite_accuracy.py --model RUN/model.keras --data DATA [--split test]

Without --model and --data it reads what `make demo` leaves in demo_out/ (its `tiny` model and
records).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "benchmarks"), ROOT]
DEMO = os.path.join(ROOT, "demo_out", "pipeline")  # where `make demo` leaves its model and records


def versions(model_path: str, workdir: str, data_dir: str, calibration_split: str, calibration_clips: int):
    """{runtime: model folder}: the exported SavedModel and a copy of it per TFLite mode."""
    from vtcaps_tf.export.saved_model import export_trained
    from vtcaps_tf.export.tflite import write_tflite

    saved = export_trained(model_path, os.path.join(workdir, "export"))
    folders = {"saved_model_fp32": saved}
    for mode in ("fp32", "dynamic", "int8"):
        folder = os.path.join(workdir, mode)
        shutil.copytree(saved, folder)
        write_tflite(folder, mode, data_dir, calibration_count=calibration_clips,
                     calibration_split=calibration_split)
        folders[f"tflite_{mode}"] = folder
    return folders


def predictions(model, data_dir: str, split: str, batch_size: int):
    """(labels, probabilities, video ids, seconds spent in the model) of every clip of `split`."""
    import numpy as np

    from vtcaps_tf.data import dataset
    from vtcaps_tf.evaluation.evaluate import split_input

    _, files = split_input(data_dir, split)
    names = set(model.shape.shapes(with_teacher=model.teacher))
    ds = dataset.read_files(files, model.shape, with_video_id=True).batch(batch_size)
    labels, probs, ids, seconds = [], [], [], 0.0
    for inputs, y, vid in ds:
        arrays = {k: v.numpy() for k, v in inputs.items() if k in names}
        t0 = time.perf_counter()
        out = model.predict(arrays)
        seconds += time.perf_counter() - t0
        labels.append(y.numpy())
        probs.append(np.asarray(out["probabilities"], np.float64))
        ids += [v.decode() for v in vid.numpy()]
    return np.concatenate(labels), np.concatenate(probs), ids, seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join(DEMO, "Train", "output", "model.keras"),
                   help="RUN_DIR/model.keras of `vtcaps train` (default: the demo's)")
    p.add_argument("--data", default=os.path.join(DEMO, "ExampleGen", "output"),
                   help="the preprocessing output the model was trained on (default: the demo's)")
    p.add_argument("--split", default="test")
    p.add_argument("--calibration-split", default="train")
    p.add_argument("--calibration-clips", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args(argv)
    for path in (args.model, args.data):
        if not os.path.exists(path):
            p.error(f"{path} does not exist: run `make demo`, or give --model and --data")

    import numpy as np

    from matmul import matmul_gflops

    from vtcaps_tf.apps.predict_models import local_model
    from vtcaps_tf.evaluation import metrics

    workdir = tempfile.mkdtemp(prefix="vtcaps-bench-tflite-accuracy-")
    try:
        folders = versions(args.model, workdir, args.data, args.calibration_split, args.calibration_clips)
        results = {}
        for runtime, folder in folders.items():
            model = local_model(folder, prefer_tflite=runtime.startswith("tflite"))
            results[runtime] = predictions(model, args.data, args.split, args.batch_size)
            print(f"{runtime}: {len(results[runtime][0])} clips", file=sys.stderr, flush=True)
        gflops = matmul_gflops()
        ref_labels, ref_probs, ref_ids, _ = results["saved_model_fp32"]
        for runtime, (labels, probs, ids, seconds) in results.items():
            if ids != ref_ids or not np.array_equal(labels, ref_labels):
                raise RuntimeError(f"{runtime} read the split in another order")
            _, v_labels, v_probs = metrics.video_level(ids, labels, probs)
            print(json.dumps({
                "benchmark": "tflite_accuracy", "model": args.model, "split": args.split, "runtime": runtime,
                "clips": int(len(labels)), "videos": int(len(v_labels)),
                "clip_accuracy": round(float(np.mean(np.argmax(probs, -1) == labels)), 4),
                "video_accuracy": round(float(np.mean(np.argmax(v_probs, -1) == v_labels)), 4),
                "class_agreement": round(float(np.mean(np.argmax(probs, -1) == np.argmax(ref_probs, -1))), 4),
                "max_probability_difference": round(float(np.max(np.abs(probs - ref_probs))), 5),
                "clips_per_s": round(len(labels) / seconds, 2), "batch": args.batch_size,
                "calibration": f"{args.calibration_clips} clips of {args.calibration_split}",
                "matmul_gflops": round(gflops, 1)}))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
