"""`vtcaps synth`: a synthetic facial-expression video set (`vtcaps_pipeline.synth.render.generate`)."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    from vtcaps_pipeline.synth import render  # numpy; OpenCV and MediaPipe load when a set is made

    d = render.SynthConfig(output="")
    p = argparse.ArgumentParser(
        prog="vtcaps synth",
        description="Generate synthetic facial-expression videos (folder layout + manifest.json) by "
                    "animating a face photo with FACS action units.")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--per-class", type=int, default=d.per_class, help="videos per class (default %(default)s)")
    p.add_argument("--subjects", type=int, default=d.subjects,
                   help="synthetic subjects; video k of a class belongs to subject k %% K (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (default %(default)s)")
    p.add_argument("--tempo-only", action="store_true",
                   help="two classes with the same apex (surprise) reached in 3-5 vs 14-18 frames")
    p.add_argument("--face", default=None, help="a frontal face photo (default: matplotlib's grace_hopper.jpg)")
    p.add_argument("--frames", type=int, default=d.frames, help="frames per video (default %(default)s)")
    p.add_argument("--size", type=int, default=d.size, help="video width = height in px (default %(default)s)")
    p.add_argument("--fps", type=float, default=d.fps, help="frame rate written to the videos (default %(default)s)")
    p.add_argument("--layout", choices=render.LAYOUTS, default=d.layout,
                   help="folder (default; the `synthetic` source), ckplus (grey PNG sequences ending "
                        "at the apex, Emotion/ files) or afew (Train_AFEW/Val_AFEW, AFEW's classes)")
    p.add_argument("--workers", type=int, default=d.workers,
                   help=f"rendering processes; 0 (default): one per core, each with at least "
                        f"{render.MIN_VIDEOS_PER_WORKER} videos")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from vtcaps_pipeline.synth import render

    config = render.SynthConfig(
        output=args.output, per_class=args.per_class, subjects=args.subjects, seed=args.seed,
        tempo_only=args.tempo_only, face=args.face, frames=args.frames, size=args.size,
        fps=args.fps, layout=args.layout, workers=args.workers)
    manifest = render.generate(config)
    print(f"wrote {len(manifest['videos'])} videos of {len(manifest['classes'])} classes, "
          f"{len(manifest['subjects'])} subjects to {config.output}")
    return 0
