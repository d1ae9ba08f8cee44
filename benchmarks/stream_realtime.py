"""Real time on a laptop-class CPU: `vtcaps stream --realtime`, SavedModel against TFLite.

`vtcaps stream --realtime` on a 25 fps file with the SavedModel and with its TFLite models (fp32,
dynamic, int8), one JSON line per runtime.

The file is a face (matplotlib's `grace_hopper.jpg`, about a third of the frame's height) drifting
across a 640x360 frame for `--seconds` at `--fps`. Each runtime runs in a fresh `vtcaps stream`
process with ONEDNN_MAX_CPU_ISA=AVX2 (`--isa`), so TensorFlow's oneDNN kernels use AVX2 at most,
as on a CPU without AVX-512; XNNPACK, which runs the TFLite models, has no such environment
variable and uses what the CPU has. A row gives stream's summary (frames read, analysed, dropped;
latency from a window's newest frame to its prediction) and the frames dropped after the first
second, as a share of the frames the file holds after it.

    python benchmarks/stream_realtime.py --saved-model RUN/export            # a trained model
    python benchmarks/stream_realtime.py --preset small                      # untrained weights
    python benchmarks/stream_realtime.py ... --calibration-data DATA        # int8 calibration

The weights do not change the timing; the model's preset does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "benchmarks"), ROOT]  # matmul, and tests' fixtures
RUNTIMES = ("saved_model_fp32", "tflite_fp32", "tflite_dynamic", "tflite_int8")


def write_face_video(path: str, seconds: float, fps: float, width: int = 640, height: int = 360) -> int:
    """A face drifting across a grey frame; returns the frame count."""
    import cv2
    import numpy as np
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        face = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
    side = height * 2 // 3
    face = cv2.resize(face, (side * face.shape[1] // face.shape[0], side), interpolation=cv2.INTER_AREA)
    fh, fw = face.shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    count = int(round(seconds * fps))
    for t in range(count):
        frame = np.full((height, width, 3), 110, np.uint8)
        phase = 2 * np.pi * t / max(count - 1, 1)
        x = int((width - fw) * (0.5 + 0.4 * np.sin(phase)))
        y = int((height - fh) * (0.5 + 0.3 * np.sin(2 * phase)))
        frame[y:y + fh, x:x + fw] = face
        writer.write(frame)
    writer.release()
    return count


def model_files(saved_model: str | None, preset: str, workdir: str, calibration_data: str | None,
                calibration_clips: int) -> dict[str, str]:
    """{runtime: what `vtcaps stream --saved-model` is given}: the SavedModel version and a
    .tflite file per mode, converted here from that version."""
    from vtcaps_tf.apps.predict_models import InProcessModel
    from vtcaps_tf.export.tflite import write_tflite
    from vtcaps_tf.export.tflite_runtime import TFLITE_FILE

    if saved_model is None:
        import keras

        from vtcaps_tf.export.saved_model import export_model
        from vtcaps_tf.models import build_model

        keras.utils.set_random_seed(0)
        saved_model = export_model(build_model(preset), os.path.join(workdir, "untrained"))
    model = InProcessModel(saved_model)  # the version folder and its input shapes
    version, c = model.path, model.shape
    if calibration_data is None:
        from tests.data.fixtures import write_dataset

        calibration_data = write_dataset(os.path.join(workdir, "calibration"), counts={"train": calibration_clips},
                                         clip_frames=c.clip_frames, long_frames=c.long_frames,
                                         image_size=c.image_size)
    files = {"saved_model_fp32": version}
    for mode in ("fp32", "dynamic", "int8"):
        folder = os.path.join(workdir, mode)
        shutil.copytree(version, folder, ignore=shutil.ignore_patterns(TFLITE_FILE + "*"))
        files[f"tflite_{mode}"] = write_tflite(folder, mode, calibration_data, calibration_count=calibration_clips)
    return files


def run_stream(video: str, model: str, isa: str | None, workdir: str, name: str) -> dict:
    """stream's summary for one model, and the frames dropped after the first second."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    lines = os.path.join(workdir, f"{name}.jsonl")
    done = subprocess.run([sys.executable, "-m", "vtcaps_tf.cli.main", "stream", video, "--saved-model", model,
                           "--realtime", "--output", lines], env=env, capture_output=True, text=True)
    summary = [line for line in done.stderr.splitlines() if line.startswith("summary: ")]
    if done.returncode or not summary:
        raise RuntimeError(f"vtcaps stream with {model} failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(summary[-1][len("summary: "):])
    with open(lines) as f:
        records = [json.loads(line) for line in f]
    after = [r for r in records if r["time"] >= 1.0]
    result["ok_predictions"] = sum(r["status"] == "ok" for r in records)
    if after:
        first = after[0]
        dropped = result["frames_dropped"] - first["dropped_so_far"]
        remaining = result["frames_read"] - first["frame"]
        result["dropped_after_1s"] = dropped
        result["dropped_after_1s_pct"] = round(100.0 * dropped / max(remaining, 1), 2)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--saved-model", help="an exported model (base path or version); default: an untrained --preset")
    p.add_argument("--preset", default="small", help="without --saved-model (default small)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--isa", default="AVX2", help="ONEDNN_MAX_CPU_ISA of the stream processes ('' leaves it unset)")
    p.add_argument("--runtimes", default=",".join(RUNTIMES))
    p.add_argument("--calibration-data", help="preprocessing output the int8 model calibrates on")
    p.add_argument("--calibration-clips", type=int, default=64)
    args = p.parse_args(argv)

    from matmul import matmul_gflops

    from vtcaps_tf.export.tflite_runtime import runtime_name

    workdir = tempfile.mkdtemp(prefix="vtcaps-bench-stream-")
    try:
        video = os.path.join(workdir, "face_640x360.mp4")
        frames = write_face_video(video, args.seconds, args.fps)
        files = model_files(args.saved_model, args.preset, workdir, args.calibration_data, args.calibration_clips)
        gflops = matmul_gflops()
        rows = []
        for runtime in [r for r in args.runtimes.split(",") if r]:
            row = run_stream(video, files[runtime], args.isa or None, workdir, runtime)
            rows.append({"runtime": runtime, **row})
            print(f"{runtime}: {row}", file=sys.stderr, flush=True)
        matmul = round((gflops + matmul_gflops()) / 2, 1)
        for row in rows:
            print(json.dumps({"benchmark": "stream_realtime", "video": f"640x360 {args.fps:g} fps, {frames} frames",
                              "model": args.saved_model or f"untrained {args.preset}",
                              "onednn_max_cpu_isa": args.isa or None, "tflite_runtime": runtime_name(),
                              "cores": os.cpu_count(), **row, "matmul_gflops": matmul}))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
