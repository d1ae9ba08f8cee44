"""Benchmark: frames per second of the preprocessing job (Beam, 2 worker processes) against a
plain sequential loop over the same videos that decodes them and calls MediaPipe directly.

Prints one JSON line. The job's time is its whole wall time as a user sees it (worker start-up,
face analysis, crops, AU maps, clips, TFRecord writing, the checks after the write); MediaPipe and
TensorFlow are imported in this process before either timer starts (a worker process of the
multi_processing mode imports them again, inside the job's time). Beside the wall times: the CPU
seconds of each (this process and its reaped children; the cores the loop keeps busy show whether
2 workers can beat it), the records' bytes per clip (gzip on disk, and uncompressed), and the
same-run matmul figure (the machine's speed today; the machine is shared, so the load average
before and after is printed too).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

# The repository root, so that the test fixtures (the sample-photo videos) can be imported.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_videos(root: str, videos: int, frames: int, width: int) -> int:
    """`videos` face videos of `frames` frames (the sample photo, moving a little) in the folder
    layout, over 2 classes and `videos` // 2 subjects; returns the number of frames written."""
    from tests.face import fixtures as fx

    image = fx.face_image(width)
    for k in range(videos):
        label = ("happy", "sad")[k % 2]
        fx.write_video(os.path.join(root, label, f"s{k // 2}_{k}.avi"),
                       fx.shifted_frames(image, frames, seed=k), fps=30.0)
    return videos * frames


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have been waited for."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def record_bytes(out: str) -> tuple[int, int]:
    """(bytes of the gzip shards on disk, bytes of the serialized records inside them)."""
    import tensorflow as tf

    from vtcaps_tf.data import features

    shards = tf.io.gfile.glob(os.path.join(out, f"*{features.SHARD_SUFFIX}"))
    raw = sum(len(r) for r in tf.data.TFRecordDataset(shards, compression_type="GZIP").as_numpy_iterator())
    return sum(os.path.getsize(f) for f in shards), raw


def sequential_loop(root: str) -> tuple[int, float]:
    """Decode every video and run MediaPipe on every frame, one process, one video at a time."""
    from vtcaps_tf.face import FaceMesh, read_video

    paths = sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.endswith(".avi"))
    start = time.perf_counter()
    n = 0
    with FaceMesh(video=True) as mesh:
        for path in paths:
            mesh.reset()
            for frame in read_video(path).frames:
                mesh.detect(frame)
                n += 1
    return n, time.perf_counter() - start


def job(root: str, out: str, workers: int, preset: str, mode: str, extra=()) -> tuple[float, dict]:
    """Wall time of the whole job, and its stats.json."""
    from vtcaps_pipeline.beam import preprocess
    from vtcaps_tf.cli.preprocess import parse

    start = time.perf_counter()
    stats = preprocess.run(*parse(["--source", "folder", "--input", root, "--output", out,
                                   "--preset", preset, "--split-ratios", "0.6,0.2,0.2", "--no-progress",
                                   "--direct_num_workers", str(workers), "--direct_running_mode", mode,
                                   *extra]))
    return time.perf_counter() - start, stats


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--videos", type=int, default=24)
    p.add_argument("--frames", type=int, default=96, help="frames per video")
    p.add_argument("--width", type=int, default=256, help="frame width in pixels")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--preset", default="small")
    p.add_argument("--modes", default="multi_threading,multi_processing",
                   help="Beam direct running modes to measure; the first is the headline")
    p.add_argument("--job-args", default="",
                   help="more `vtcaps preprocess` flags for the job, e.g. \"--clips-per-record 1 "
                        "--jpeg-quality 95\" (the records' previous layout)")
    args = p.parse_args(argv)
    import logging

    logging.getLogger().setLevel(logging.ERROR)
    import mediapipe  # noqa: F401  (imported before both timers: see the docstring)

    from benchmarks.matmul import matmul_gflops
    from vtcaps_pipeline.beam import preprocess

    gflops = matmul_gflops()
    with tempfile.TemporaryDirectory() as tmp:
        root, out = os.path.join(tmp, "videos"), os.path.join(tmp, "out")
        total = make_videos(root, args.videos, args.frames, args.width)
        load_before = os.getloadavg()[0]
        cpu = cpu_seconds()
        n, seq_s = sequential_loop(root)
        seq_cpu = cpu_seconds() - cpu
        assert n == total, (n, total)
        result = {}
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        for mode in modes:
            cpu = cpu_seconds()
            job_s, stats = job(root, os.path.join(out, mode), args.workers, args.preset, mode,
                               args.job_args.split())
            job_cpu = cpu_seconds() - cpu
            disk, raw = record_bytes(os.path.join(out, mode))
            clips = stats["counters"].get("clips_written") or 1
            sec = stats["seconds"]
            # Throughput between the first and the last video finishing: worker start-up and the
            # write finalisation left out (the first `workers` videos are not counted).
            span = sec["last_video_done"] - sec["first_video_done"]
            steady = (args.videos - args.workers) * args.frames / span if span > 0 else float("nan")
            result[mode] = {"job_s": round(job_s, 2), "job_fps": round(total / job_s, 1),
                            "ratio": round(seq_s / job_s, 3),
                            "steady_fps": round(steady, 1), "steady_ratio": round(steady * seq_s / total, 3),
                            "cpu_s": round(job_cpu, 2),
                            "seconds": sec, "clips": stats["counters"].get("clips_written"),
                            "dead_letters": stats["videos"]["dead_letters"],
                            "record_kb_per_clip": round(disk / clips / 1e3, 1),
                            "record_raw_kb_per_clip": round(raw / clips / 1e3, 1)}
    print(json.dumps({
        "benchmark": "preprocess", "videos": args.videos, "frames": total,
        "frame_size": [args.width, int(round(args.width * 600 / 512))], "preset": args.preset,
        "workers": args.workers, "job_args": args.job_args, "cpu_count": os.cpu_count(), "matmul_gflops": round(gflops, 1),
        "load_avg_before": round(load_before, 2), "load_avg_after": round(os.getloadavg()[0], 2),
        "sequential_s": round(seq_s, 2), "sequential_fps": round(total / seq_s, 1),
        "sequential_cpu_s": round(seq_cpu, 2), "sequential_cores": round(seq_cpu / seq_s, 2),
        # The headline: the first mode (the job's default) against the loop.
        "job_mode": modes[0], "job_fps": result[modes[0]]["job_fps"], "ratio": result[modes[0]]["ratio"],
        "record_kb_per_clip": result[modes[0]]["record_kb_per_clip"],
        "goal_ratio": 1.6, "modes": result,
    }))


if __name__ == "__main__":
    main()
