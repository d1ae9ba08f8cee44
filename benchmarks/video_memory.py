"""Benchmark: peak resident memory and frames per second of `vtcaps predict` on 1, 5 and 10 minutes
of 1920x1080 video, against reading the 1-minute video whole (every frame decoded into one
array), which grows with the video's length.

The videos are made by looping a generated 10-second 1080p clip (the sample photo's face, 480 px
wide, moving over a textured background) and written as MPEG-4 (.mp4). To keep the benchmark's own
run time reasonable they run at --fps 2 by default: the frame size is what a 1080p video has, only
the number of frames per minute is lower (at 30 fps a minute has 15 times as many). Each
measurement runs in a fresh process, so `ru_maxrss` is that run's own peak. The model is the
`small` preset (untrained: memory and speed do not depend on the weights), exported once, asked in
process. `--beam` also measures the preprocessing job's per-video DoFn on the same videos: it
reads frames one at a time too and keeps each frame's JPEG crop and landmarks (a few KB a frame),
making the records (up to 8 clips each) one at a time.
Prints one JSON line, with the same-run 2048^2 fp32 matmul GFLOP/s beside the times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

WIDTH, HEIGHT = 1920, 1080
LOOP_SECONDS = 10
CLASSES = ["anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"]


from benchmarks.matmul import matmul_gflops  # noqa: E402


def loop_frames(fps: float):
    """The 10-second 1080p clip that every video loops: RGB frames."""
    import numpy as np

    from tests.face import fixtures as fx

    face = fx.face_image(480)
    h, w = face.shape[:2]
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = np.stack([(xx * 255 // WIDTH), (yy * 255 // HEIGHT), ((xx + yy) // 12 % 256)], -1)
    background = background.astype(np.uint8)
    n = int(round(LOOP_SECONDS * fps))
    frames = []
    for t in range(n):
        frame = background.copy()
        # A slow sway (at most ~25 px a frame at 2 fps), as a person sitting in front of a camera.
        x = 700 + int(80 * np.sin(2 * np.pi * t / n))
        y = 280 + int(30 * np.cos(2 * np.pi * t / n))
        frame[y:y + h, x:x + w] = face
        frames.append(frame)
    return frames


def write_looped_video(path: str, loop, fps: float, minutes: float) -> int:
    import cv2

    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    total = int(round(minutes * 60 * fps))
    bgr = [f[..., ::-1].copy() for f in loop]
    for t in range(total):
        writer.write(bgr[t % len(bgr)])
    writer.release()
    return total


def child(mode: str, video: str, saved_model: str) -> dict:
    """One measurement in this (fresh) process."""
    start = time.perf_counter()
    if mode == "whole":  # the comparison: every frame decoded into one array first
        from vtcaps_tf.face import read_video

        frames = read_video(video).num_frames
        seconds = time.perf_counter() - start
        return {"frames": frames, "seconds": round(seconds, 2), "load_s": 0.0,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if mode == "beam":  # the preprocessing job's per-video work, as one Beam worker does it
        import apache_beam as beam

        from vtcaps_pipeline.beam import transforms
        from vtcaps_pipeline.beam.sources.base import VideoItem

        config = transforms.JobConfig(source="folder", classes=("happiness",), clip_frames=16,
                                      long_frames=32, image_size=112)
        dofn = transforms.AnalyzeVideoFn(config, split_of={"v": "train"})
        dofn.setup()
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        # Each record is let go as it comes, as a worker hands it on to the writer.
        tagged, num_outputs = [], 0
        for out in dofn.process(VideoItem(path=video, video_id="v", subject="s", label_name="happiness")):
            num_outputs += 1
            if isinstance(out, beam.pvalue.TaggedOutput):
                tagged.append(out)
        seconds = time.perf_counter() - start
        dofn.teardown()
        dead = [o.value for o in tagged if o.tag == transforms.DEAD_LETTERS]
        if dead:
            raise RuntimeError(f"dead letter: {dead}")
        (outcome,) = [o.value for o in tagged if o.tag == transforms.OUTCOMES]
        return {"frames": outcome["frames"], "seconds": round(seconds, 2), "load_s": round(load_s, 2),
                "clips": outcome["clips"], "records": num_outputs - len(tagged),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    from vtcaps_tf.face import FaceAnalyzer
    from vtcaps_tf.apps.options import DEFAULT_MAX_FACES, IN_PROCESS_BATCH
    from vtcaps_tf.apps.predict import InProcessModel, predict_video

    model = InProcessModel(saved_model)
    load_s = time.perf_counter() - start
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    got = {}
    start = time.perf_counter()
    with FaceAnalyzer(model.shape.image_size, max_num_faces=DEFAULT_MAX_FACES) as analyzer:
        results = predict_video(video, model, analyzer, IN_PROCESS_BATCH, timelines_out=got)
    seconds = time.perf_counter() - start
    if not any(r.ok for r in results):
        raise RuntimeError(f"predict failed: {[r.error for r in results]}")
    timelines = got["timelines"]
    return {"frames": timelines.num_frames, "seconds": round(seconds, 2), "load_s": round(load_s, 2),
            "faces": len(results), "faces_with_clips": sum(bool(r.clips) for r in results),
            "clips": sum(len(r.clips) for r in results),
            "no_face_clips": sum(len(r.clips) - len(r.ok_clips) for r in results),
            "peak_frames_held": timelines.peak_frames_held, "peak_crops_held": timelines.peak_crops_held,
            "rss_after_model_load_mb": round(rss_loaded, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def measure(mode: str, video: str, saved_model: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode, video, saved_model],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} on {video} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def export_small(base: str) -> str:
    from vtcaps_tf.export.saved_model import export_model
    from vtcaps_tf.models import build_model

    return export_model(build_model("small", class_names=CLASSES), base)


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:5])))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", default="1,5,10", help="video lengths to measure (default 1,5,10)")
    p.add_argument("--fps", type=float, default=2.0, help="frame rate of the generated videos (default 2)")
    p.add_argument("--saved-model", help="a small-preset SavedModel to use (default: export one)")
    p.add_argument("--work-dir", help="keep the videos and the model here (default: a temporary folder)")
    p.add_argument("--beam", action="store_true",
                   help="also measure the preprocessing job's per-video work (AnalyzeVideoFn, small preset)")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    minutes = [float(m) for m in args.minutes.split(",")]
    gflops = matmul_gflops()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or tmp
        os.makedirs(work, exist_ok=True)
        saved_model = args.saved_model or os.path.join(work, "small")
        if not args.saved_model and not os.path.isdir(saved_model):
            export_small(saved_model)
        loop = loop_frames(args.fps)
        runs, beam_runs = {}, {}
        videos = {}
        for m in minutes:
            path = os.path.join(work, f"looped_{m:g}min_{args.fps:g}fps.mp4")
            if not os.path.exists(path):
                write_looped_video(path, loop, args.fps, m)
            videos[m] = path
            runs[f"{m:g}min"] = dict(measure("stream", path, saved_model), video_mb=round(
                os.path.getsize(path) / 2 ** 20, 1))
            runs[f"{m:g}min"]["frames_per_s"] = round(runs[f"{m:g}min"]["frames"] / runs[f"{m:g}min"]["seconds"], 2)
            if args.beam:
                beam_runs[f"{m:g}min"] = measure("beam", path, saved_model)
                beam_runs[f"{m:g}min"]["frames_per_s"] = round(
                    beam_runs[f"{m:g}min"]["frames"] / beam_runs[f"{m:g}min"]["seconds"], 2)
        whole = measure("whole", videos[minutes[0]], saved_model)
    first, last = runs[f"{minutes[0]:g}min"], runs[f"{minutes[-1]:g}min"]
    print(json.dumps({
        "benchmark": "video_memory", "frame_size": [WIDTH, HEIGHT], "fps": args.fps, "preset": "small",
        "cpu_count": os.cpu_count(), "matmul_2048_gflops": round(gflops, 1), "predict": runs,
        "whole_decode_first_video": whole, "beam_worker": beam_runs or None,
        # The comparison: peak memory of the longest video over the shortest (flat: about 1), and
        # what reading the shortest whole needed against predicting it frame by frame.
        "peak_rss_ratio_longest_to_shortest": round(last["peak_rss_mb"] / first["peak_rss_mb"], 3),
        "whole_decode_over_streaming_predict_rss": round(whole["peak_rss_mb"] / first["peak_rss_mb"], 2),
        "goal_peak_rss_mb": 1536,
    }))


if __name__ == "__main__":
    main()
