"""Peak labelling on the synthetic set: `--clip-labels all` vs `near_peak`, through K-fold
cross-validation.

CK+ labels a sequence by its last (peak) frame, yet its first frames are neutral. `vtcaps synth`
writes each video's onset and apex to its manifest, so the label noise of each choice is known
exactly: a clip counts as mislabelled when the expression's intensity (the generator's own curve,
`vtcaps_pipeline.synth.render.intensity_curve`) stays below half its apex value over all of the clip's frames.
Then both datasets go through `vtcaps preprocess --folds K` and `vtcaps crossval` with the same
preset, epochs and seeds, and the clip- and video-level accuracies are compared.

Prints one JSON line: per choice the labelled clips, the mislabelled fraction, and the
cross-validation means (and per-fold figures); the same-run 2048^2 fp32 matmul GFLOP/s beside the
wall times. Work in --work-dir is reused: an existing synthetic set, preprocessing output or
finished fold is not made again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.matmul import matmul_gflops  # noqa: E402

CHOICES = ("all", "near_peak")


def label_noise(manifest: dict, clip_frames: int, long_frames: int, short_policy: str) -> dict:
    """Per choice: labelled clips and the fraction whose frames never reach half the apex."""
    from vtcaps_pipeline.synth.render import intensity_curve
    from vtcaps_tf.data.clips import clip_frame_indices, near_peak, sequence_windows

    t = int(manifest["frames"])
    out = {c: {"clips": 0, "mislabelled": 0} for c in CHOICES}
    for v in manifest["videos"]:
        curve = intensity_curve(t, v["onset"], v["apex"], 1.0)  # as a fraction of the apex
        for w in sequence_windows(t, clip_frames, long_frames, short_policy):
            shows = curve[clip_frame_indices(w, clip_frames)].max() >= 0.5
            for choice in CHOICES:
                if choice == "all" or near_peak(w, t, clip_frames):
                    out[choice]["clips"] += 1
                    out[choice]["mislabelled"] += int(not shows)
    for c in out.values():
        c["mislabelled_fraction"] = round(c["mislabelled"] / max(c["clips"], 1), 4)
    return out


def _quiet(fn, argv):
    with contextlib.redirect_stdout(sys.stderr):
        code = fn(argv)
    if code:
        raise SystemExit(f"peak_labelling: {fn.__module__}.{fn.__name__}({argv}) exited with {code}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work-dir", required=True)
    p.add_argument("--per-class", type=int, default=10)
    p.add_argument("--subjects", type=int, default=10)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps-per-epoch", type=int, default=5,
                   help="the same optimiser steps for both choices (near_peak has fewer clips)")
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--choices", default=",".join(CHOICES))
    args = p.parse_args(argv)

    from vtcaps_pipeline.synth import render as synth
    from vtcaps_tf.cli import crossval as crossval_cli
    from vtcaps_tf.cli import preprocess
    from vtcaps_tf.config.presets import get_preset

    gflops = matmul_gflops()
    synth_dir = os.path.join(args.work_dir, "synth")
    if not os.path.exists(os.path.join(synth_dir, "manifest.json")):
        synth.generate(synth.SynthConfig(output=synth_dir, per_class=args.per_class,
                                         subjects=args.subjects, frames=args.frames, seed=args.seed))
    with open(os.path.join(synth_dir, "manifest.json")) as f:
        manifest = json.load(f)
    preset = get_preset(args.preset)
    result = {"benchmark": "peak_labelling", "preset": args.preset, "folds": args.folds,
              "epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch,
              "batch_size": args.batch_size, "videos": len(manifest["videos"]),
              "frames_per_video": manifest["frames"], "clip_frames": preset.clip_frames,
              "label_noise": label_noise(manifest, preset.clip_frames, preset.long_frames, "resample"),
              "crossval": {}, "seconds": {}, "matmul_2048_fp32_gflops": round(gflops, 1)}
    for choice in args.choices.split(","):
        data = os.path.join(args.work_dir, f"tfr_{choice}")
        start = time.perf_counter()
        if not os.path.exists(os.path.join(data, "metadata.json")):
            _quiet(preprocess.main, ["--source", "synthetic", "--input", synth_dir, "--output", data,
                                         "--preset", args.preset, "--folds", str(args.folds),
                                         "--seed", str(args.seed), "--clip-labels", choice,
                                         "--no-progress"])
        prep_s = time.perf_counter() - start
        start = time.perf_counter()
        _quiet(crossval_cli.main, ["--data", data, "--output", os.path.join(args.work_dir, f"cv_{choice}"),
                                   "--preset", args.preset, "--epochs", str(args.epochs),
                                   "--batch-size", str(args.batch_size),
                                   "--learning-rate", str(args.learning_rate), "--no-augment",
                                   "--steps-per-epoch", str(args.steps_per_epoch),
                                   "--verbose", "0"])
        with open(os.path.join(args.work_dir, f"cv_{choice}", "report.json")) as f:
            report = json.load(f)
        result["crossval"][choice] = {
            "mean": {k: round(v, 4) for k, v in report["mean"].items()},
            "std": {k: round(v, 4) for k, v in report["std"].items()},
            "folds": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in f.items()}
                      for f in report["folds"]]}
        result["seconds"][choice] = {"preprocess": round(prep_s, 1),
                                     "crossval": round(time.perf_counter() - start, 1)}
    if all(c in result["crossval"] for c in CHOICES):
        a, b = result["crossval"]["all"]["mean"], result["crossval"]["near_peak"]["mean"]
        result["near_peak_minus_all_points"] = {
            k: round(100 * (b[k] - a[k]), 2) for k in ("clip_accuracy", "video_accuracy")}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
