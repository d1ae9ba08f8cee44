"""Ablation of VT-3DCapsNet on a tempo task built for TPN-ERM (paper Tables 6-7, Fig 14, Fig 15).

The task (`pipeline/synth/tempo.py`): two classes of the same expression rising at the same speed,
told apart only by whether the rise stops within the long window: a short clip is ambiguous, the
long window is not. Every row is the `tiny` preset (N=8, M=16 frames) at 16 px (`--image-size`;
AU maps at the same size unless `--au-size`) with one change, trained in memory (no augmentation,
Adam) for the same epochs, batch and seeds, and evaluated on the same test videos (subjects not
seen in training):

- Table 6/7: reference VT3DCapsNet (adaptive flow, fast fusion) vs CapsNet3D (no TPN-ERM), AU
  attention off, non-local off, softmax head in place of the capsules;
- Fig 14: each other information flow of the pyramid;
- Fig 15: softmax fusion (accuracy, and milliseconds per training step, same run), and one fusion
  node alone, fast vs softmax, timed interleaved;
- no feature matching (`matching_weight` 0), and a three-level pyramid (stages 2-4, Fig 6 / Eq. 17);
- the TPN head's pooling: `--tpn-pool` sets every row's (max, the paper's, by default) and the
  `tpn_pool_max` / `tpn_pool_mean` rows flip it;
- `long_window_softmax` (not a paper row): the backbone and a softmax head reading the whole long
  window as its clip, what a plain 3D CNN learns from the window in the same steps.

`--apex-gain` scales the expression's motion in the task (1: the synth's apex; see BUILD.md for
what the model learns at 1 and at 3).

The model's prediction (`probabilities`) is the capsule output, which reads the short clip only:
TPN-ERM reaches it through training (the feature-matching term), not at inference, so on this task
its accuracy cannot exceed what the short clip allows. The TPN head's own accuracy (`tpn_accuracy`,
the long window) and that of the two heads' probabilities averaged (`fused_accuracy`) are reported
beside it.

For each row vs the reference: the accuracy difference and its 95% CI from a paired bootstrap over
test videos (correctness averaged over seeds per video, videos resampled), at clip level (each of a
video's clips) and video level (the mean of its clips' probabilities); for rows with TPN-ERM, the
same for the TPN head's clip accuracy. A non-deep reference, a
logistic regression on frame differences of the long window and of the short clip, says what each
view allows.

Prints one JSON line; a markdown table goes to stderr. `--quick`: a smoke run in CI time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

# Row name -> ModelConfig overrides of the reference (the `tiny` preset's defaults). In run order:
# Table 6/7 and Fig 15 first, so that a run cut short still has them.
ROWS = {
    "reference": {},
    "capsnet3d": {"use_tpn": False},
    "no_au_attention": {"use_au_attention": False},
    "no_nonlocal": {"use_nonlocal": False},
    "softmax_head": {"use_capsules": False},
    "fusion_softmax": {"fusion": "softmax"},
    "flow_isolation": {"flow": "isolation"},
    "flow_top_down": {"flow": "top_down"},
    "flow_bottom_up": {"flow": "bottom_up"},
    "flow_cascade": {"flow": "cascade"},
    "flow_parallel": {"flow": "parallel"},
    "no_matching": {"matching_weight": 0.0},  # TPN-ERM trained, nothing distilled into the capsules
    "three_levels": {"tpn_levels": (2, 3, 4)},  # Fig 6 / Eq. 17's three-input node
    # The motion feature's pooling over (T, H, W); the row equal to `--tpn-pool` is the reference.
    "tpn_pool_max": {"tpn_pool": "max"},
    "tpn_pool_mean": {"tpn_pool": "mean"},
    # Not a paper row: the backbone with a softmax head given the whole long window as its clip,
    # what a plain 3D CNN extracts from the window in the same steps (TPN head's yardstick).
    "long_window_softmax": {"use_tpn": False, "use_capsules": False, "clip_frames": 16},
}
# Rows whose clip is the long window (`clips_of(..., long_clip=True)`).
LONG_CLIP_ROWS = ("long_window_softmax",)
QUICK_ROWS = ("reference", "capsnet3d")


# ---------------------------------------------------------------------------------------------
# data


def load_task(work_dir: str, train_videos: int, test_videos: int, subjects: int, seed: int,
              image_size: int, apex_gain: float = 1.0) -> dict:
    """Train and test videos of the tempo task (cached as .npz in work_dir); test subjects are
    disjoint from training subjects."""
    from vtcaps_pipeline.synth import tempo as synth_tempo

    # The name changes with the task's layout (v2: every subject shows both classes).
    path = os.path.join(work_dir, f"tempo_v2_{train_videos}_{test_videos}_{subjects}_{seed}_{image_size}"
                        + ("" if apex_gain == 1 else f"_gain{apex_gain:g}") + ".npz")
    if os.path.exists(path):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def report(done, total):
        if done % 50 == 0 or done == total:
            print(f"ablation: rendered {done}/{total} videos", file=sys.stderr, flush=True)

    train = synth_tempo.generate_arrays(train_videos, image_size, subjects=subjects, seed=seed,
                                        progress=report, apex_gain=apex_gain)
    # Other subjects: a different identity seed; the test set draws its own clips.
    test = synth_tempo.generate_arrays(test_videos, image_size, subjects=subjects, seed=seed + 1000,
                                       progress=report, apex_gain=apex_gain)
    data = {f"train_{k}": v for k, v in train.items()} | {f"test_{k}": v for k, v in test.items()}
    os.makedirs(work_dir, exist_ok=True)
    np.savez(path, **data)
    return data


def clips_of(data: dict, split: str, long_clip: bool = False) -> dict:
    """Every clip of every video: frames [K,N,S,S,3], long [K,M,S,S,3], landmarks [K,N,68,2],
    labels [K], video [K]. long_clip: the clip is the long window (frames and landmarks of its M
    frames), in the same order."""
    from vtcaps_pipeline.synth import tempo as synth_tempo

    frames, marks = data[f"{split}_frames"], data[f"{split}_landmarks"]
    parts = {"frames": [], "long_frames": [], "landmarks": [], "labels": [], "video": []}
    for short, long in synth_tempo.clip_indices():
        clip = long if long_clip else short
        parts["frames"].append(frames[:, clip])
        parts["long_frames"].append(frames[:, long])
        parts["landmarks"].append(marks[:, clip])
        parts["labels"].append(data[f"{split}_labels"])
        parts["video"].append(np.arange(len(frames)))
    return {k: np.concatenate(v) for k, v in parts.items()}


def model_inputs(model, clips: dict, index) -> dict:
    """The model's inputs (by `model.input_specs()`) for clips[index]."""
    from vtcaps_tf.face.au import au_attention_map

    out = {}
    for name, spec in model.input_specs().items():
        if name in ("frames", "long_frames", "landmarks"):
            out[name] = clips[name][index]
        elif name == "au_map":
            size = spec.shape[-1]
            lm = clips["landmarks"][index]
            out[name] = np.stack([[au_attention_map(f * size, size) for f in clip] for clip in lm])
        else:
            raise ValueError(f"ablation: no rule to build the model input {name!r}")
    return out


# ---------------------------------------------------------------------------------------------
# non-deep reference


def motion_features(frames: np.ndarray, grid: int = 4) -> np.ndarray:
    """uint8 [K, T, S, S, 3] -> [K, (T-1) * grid^2]: mean absolute frame difference per cell."""
    grey = frames.astype(np.float32).mean(-1)
    diff = np.abs(np.diff(grey, axis=1))
    k, t, s, _ = diff.shape
    cells = diff.reshape(k, t, grid, s // grid, grid, s // grid).mean(axis=(3, 5))
    return cells.reshape(k, -1)


def logistic_regression(x_train, y_train, x_test, l2=1e-2, steps=500):
    """Binary logistic regression (standardised features, L2, Newton steps); test P(y=1)."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    a = np.c_[(x_train - mu) / sd, np.ones(len(x_train))]
    b = np.c_[(x_test - mu) / sd, np.ones(len(x_test))]
    w = np.zeros(a.shape[1])
    reg = l2 * len(a) * np.eye(a.shape[1])
    reg[-1, -1] = 0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-a @ w))
        grad = a.T @ (p - y_train) + reg @ w
        hess = (a * (p * (1 - p))[:, None]).T @ a + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return 1 / (1 + np.exp(-b @ w))


def reference_accuracy(train: dict, test: dict) -> dict:
    """Clip-level accuracy of the logistic regression on each view."""
    out = {}
    for view in ("long_frames", "frames"):
        p = logistic_regression(motion_features(train[view]), train["labels"].astype(float),
                                motion_features(test[view]))
        out["long_window" if view == "long_frames" else "short_clip"] = float(
            np.mean((p > 0.5) == (test["labels"] == 1)))
    return out


# ---------------------------------------------------------------------------------------------
# training


class _Batches:
    """Shuffled training batches of model inputs, one epoch per `epoch(rng)` call."""

    def __init__(self, model, clips, batch_size):
        self.model, self.clips, self.batch_size = model, clips, batch_size

    def epoch(self, rng):
        order = rng.permutation(len(self.clips["labels"]))
        for i in range(0, len(order) - self.batch_size + 1, self.batch_size):
            idx = np.sort(order[i:i + self.batch_size])
            yield model_inputs(self.model, self.clips, idx), self.clips["labels"][idx]


def row_overrides(name: str, tpn_pool: str, au_size: int) -> dict:
    """The ModelConfig overrides of row `name`: the run's settings, then the row's own change."""
    return {"tpn_pool": tpn_pool, "au_size": au_size, **ROWS[name]}


def train_row(overrides: dict, train: dict, test: dict, seeds, epochs: int, batch_size: int,
              learning_rate: float, image_size: int, on_run=None) -> list[dict]:
    """Train one row once per seed; per seed the test probabilities [K, C] (and TPN's), the
    milliseconds per training step and the seconds taken.

    One model per row: each seed loads the initial weights of a model built under that seed and
    zeroes the optimizer's state, so the traced train and predict functions are reused (tracing
    this model takes longer than a whole training of it on a small CPU).
    """
    import keras

    from vtcaps_tf.models import build_model

    def fresh(seed):
        keras.utils.set_random_seed(seed)
        return build_model("tiny", num_classes=2, image_size=image_size, **overrides)

    model = None
    runs = []
    for seed in seeds:
        t_start = time.monotonic()
        if model is None:
            model = fresh(seed)
            model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=False)
        else:
            model.set_weights(fresh(seed).get_weights())
            for v in model.optimizer.variables:  # step count and Adam moments back to zero
                if "learning_rate" not in v.path:
                    v.assign(np.zeros(v.shape, v.dtype))
            keras.utils.set_random_seed(seed)
        batches = _Batches(model, train, batch_size)
        rng = np.random.default_rng(seed)
        step_times = []
        for _ in range(epochs):
            for x, y in batches.epoch(rng):
                t0 = time.perf_counter()
                model.train_on_batch(x, y)
                step_times.append(time.perf_counter() - t0)
        probs, tpn = [], []
        for i in range(0, len(test["labels"]), 128):
            idx = np.arange(i, min(i + 128, len(test["labels"])))
            out = model.predict_on_batch(model_inputs(model, test, idx))
            probs.append(np.asarray(out["probabilities"]))
            if "tpn_probabilities" in out:
                tpn.append(np.asarray(out["tpn_probabilities"]))
        warm = step_times[min(3, len(step_times) - 1):]  # the first steps trace the function
        runs.append({"seed": seed, "probabilities": np.concatenate(probs),
                     "tpn_probabilities": np.concatenate(tpn) if tpn else None,
                     "ms_per_step": 1000 * float(np.median(warm)), "steps": len(step_times),
                     "seconds": time.monotonic() - t_start})
        if on_run:
            on_run(runs[-1])
    return runs


def fusion_timing(shape=(16, 16, 4, 4, 32), inputs=3, repeats=200) -> dict:
    """Microseconds per forward + backward pass of one fusion node, fast vs softmax, interleaved in
    the same run (paper Fig 15's speed claim, without the rest of the model around it). Default
    shape: a `tiny` pyramid level at batch 16; 3 inputs as P2_out of a three-level pyramid."""
    import tensorflow as tf

    from vtcaps_tf.layers import FastNormalizedFusion, SoftmaxFusion

    xs = [tf.random.normal(shape, seed=i) for i in range(inputs)]
    layers = {"fast": FastNormalizedFusion(), "softmax": SoftmaxFusion()}
    steps = {}
    for name, layer in layers.items():
        layer(xs)

        @tf.function
        def step(layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(xs)
                loss = tf.reduce_sum(layer(xs))
            return tape.gradient(loss, xs + layer.trainable_weights)

        step()  # trace
        steps[name] = step
    times = {name: [] for name in layers}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return {f"{name}_us": round(1e6 * float(np.median(t)), 1) for name, t in times.items()}


# ---------------------------------------------------------------------------------------------
# statistics


def correctness(probs: np.ndarray, test: dict) -> tuple[np.ndarray, np.ndarray]:
    """(clip-level correct fraction per video [V], video-level correct per video [V]) for one run."""
    videos = test["video"]
    n = videos.max() + 1
    correct = (probs.argmax(-1) == test["labels"]).astype(float)
    clip = np.bincount(videos, correct, n) / np.bincount(videos, None, n)
    mean_prob = np.stack([np.bincount(videos, probs[:, c], n) for c in range(probs.shape[1])], -1)
    video_label = np.bincount(videos, test["labels"], n) / np.bincount(videos, None, n)
    video = (mean_prob.argmax(-1) == np.rint(video_label)).astype(float)
    return clip, video


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = 4000, seed: int = 0) -> dict:
    """Mean of a - b over videos (in points) and its 95% percentile CI, videos resampled."""
    d = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (resamples, len(d)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"diff": round(100 * float(d.mean()), 2), "ci95": [round(100 * float(lo), 2),
                                                              round(100 * float(hi), 2)]}


def summarize(runs: dict, test: dict, overrides: dict) -> dict:
    """Row name -> accuracies (averaged over seeds), and for rows other than the reference the
    paired-bootstrap difference to it, clip- and video-level (and the TPN head's, where both have
    one)."""
    def per_video(name, level):
        return np.mean([correctness(r["probabilities"], test)[level] for r in runs[name]], axis=0)

    def tpn_per_video(name):
        return np.mean([correctness(r["tpn_probabilities"], test)[0] for r in runs[name]], axis=0)

    out = {}
    for name, name_runs in runs.items():
        tpn = [r["tpn_probabilities"] for r in name_runs if r["tpn_probabilities"] is not None]
        row = {"overrides": overrides[name], "seeds": [r["seed"] for r in name_runs],
               "clip_accuracy": round(float(per_video(name, 0).mean()), 4),
               "video_accuracy": round(float(per_video(name, 1).mean()), 4),
               "per_seed_clip_accuracy": [round(float(correctness(r["probabilities"], test)[0].mean()), 4)
                                          for r in name_runs],
               "tpn_accuracy": (round(float(np.mean([correctness(t, test)[0].mean() for t in tpn])), 4)
                                if tpn else None),
               # The capsule and TPN probabilities averaged: a prediction that reads the long window.
               "fused_accuracy": (round(float(np.mean([
                   correctness((r["probabilities"] + r["tpn_probabilities"]) / 2, test)[0].mean()
                   for r in name_runs])), 4) if tpn else None),
               "ms_per_step": round(float(np.median([r["ms_per_step"] for r in name_runs])), 1),
               "train_seconds": round(float(np.mean([r["seconds"] for r in name_runs])), 1)}
        if tpn:  # the long-window head against the model's own prediction, same videos
            tpn_clip = tpn_per_video(name)
            row["tpn_minus_prediction"] = paired_bootstrap(tpn_clip, per_video(name, 0))
        paired = name != "reference" and "reference" in runs and row["seeds"] == [
            r["seed"] for r in runs["reference"]]
        if paired:
            row["clip_diff"] = paired_bootstrap(per_video(name, 0), per_video("reference", 0))
            row["video_diff"] = paired_bootstrap(per_video(name, 1), per_video("reference", 1))
            if tpn and runs["reference"][0]["tpn_probabilities"] is not None:
                row["tpn_clip_diff"] = paired_bootstrap(tpn_clip, tpn_per_video("reference"))
        out[name] = row
    return out


def markdown(result: dict) -> str:
    lines = ["| row | clip acc | video acc | clip diff vs ref [95% CI] | video diff vs ref [95% CI] "
             "| TPN head acc | TPN head diff vs ref [95% CI] | heads averaged acc | ms/step |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["rows"].items():
        def ci(key):
            d = r.get(key)
            return "-" if d is None else f"{d['diff']:+.1f} [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}]"
        tpn = "-" if r["tpn_accuracy"] is None else f"{100 * r['tpn_accuracy']:.1f}"
        fused = "-" if r["fused_accuracy"] is None else f"{100 * r['fused_accuracy']:.1f}"
        lines.append(f"| {name} | {100 * r['clip_accuracy']:.1f} | {100 * r['video_accuracy']:.1f} | "
                     f"{ci('clip_diff')} | {ci('video_diff')} | {tpn} | {ci('tpn_clip_diff')} | {fused} | "
                     f"{r['ms_per_step']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from vtcaps_tf.config.pyramid_options import POOLS  # Keras-free: the parser stays fast

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 2 rows, 1 seed, 16 videos a split, 1 epoch")
    p.add_argument("--rows", default=None, help=f"comma-separated subset of {', '.join(ROWS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--train-videos", type=int, default=240)
    p.add_argument("--test-videos", type=int, default=600)
    p.add_argument("--subjects", type=int, default=8, help="subjects per split (test subjects differ)")
    p.add_argument("--image-size", type=int, default=16,
                   help="frames are rendered at 64 px and area-resized to this (default %(default)s)")
    p.add_argument("--apex-gain", type=float, default=1.0,
                   help="scale of the expression's motion in the task (default %(default)s; see BUILD.md)")
    p.add_argument("--tpn-pool", choices=POOLS, default="max",
                   help="every row's TPN motion-feature pooling (default %(default)s, the paper's)")
    p.add_argument("--au-size", type=int, default=None,
                   help="side of the AU attention map (default: --image-size, the crop's own)")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--work-dir", default="/tmp/vtcaps_ablation", help="cache of the rendered videos")
    p.add_argument("--output", default=None, help="also write the JSON result here")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.train_videos, args.test_videos = "0", 1, 16, 16
        args.rows = args.rows or ",".join(QUICK_ROWS)
    rows = [r.strip() for r in (args.rows or ",".join(ROWS)).split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    same = f"tpn_pool_{args.tpn_pool}"
    if same in rows:  # the reference itself under this --tpn-pool
        print(f"ablation: {same} is the reference with --tpn-pool {args.tpn_pool}; not run twice",
              file=sys.stderr)
        rows.remove(same)
    if "reference" not in rows:
        rows.insert(0, "reference")
    au_size = args.au_size or args.image_size
    overrides = {name: row_overrides(name, args.tpn_pool, au_size) for name in rows}
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from matmul import matmul_gflops

    gflops = matmul_gflops()
    start = time.monotonic()
    data = load_task(args.work_dir, args.train_videos, args.test_videos, args.subjects, args.data_seed,
                     args.image_size, args.apex_gain)
    data_seconds = time.monotonic() - start
    train, test = clips_of(data, "train"), clips_of(data, "test")
    reference = reference_accuracy(train, test)
    print(f"ablation: logistic regression on frame differences: {reference}", file=sys.stderr, flush=True)

    fusion = fusion_timing()
    print(f"ablation: one fusion node, forward + backward: {fusion}", file=sys.stderr, flush=True)
    runs = {}
    for name in rows:
        def report(r, name=name):
            clip, video = correctness(r["probabilities"], test)
            tpn = ("" if r["tpn_probabilities"] is None else
                   f", TPN head {correctness(r['tpn_probabilities'], test)[0].mean():.3f}")
            print(f"ablation: {name} seed {r['seed']}: clip {clip.mean():.3f} video {video.mean():.3f}{tpn} "
                  f"({r['seconds']:.0f} s, {r['ms_per_step']:.0f} ms/step)", file=sys.stderr, flush=True)

        views = ((clips_of(data, "train", True), clips_of(data, "test", True))
                 if name in LONG_CLIP_ROWS else (train, test))
        runs[name] = train_row(overrides[name], *views, seeds, args.epochs, args.batch_size,
                               args.learning_rate, args.image_size, report)
        if args.output:  # what is done so far, in case the run is cut short
            with open(args.output + ".partial", "w") as f:
                json.dump(summarize(runs, test, overrides), f)

    out_rows = summarize(runs, test, overrides)
    result = {"benchmark": "ablation", "preset": "tiny", "image_size": args.image_size,
              "apex_gain": args.apex_gain, "tpn_pool": args.tpn_pool, "au_size": au_size,
              "quick": args.quick, "seeds": seeds,
              "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
              "train_videos": args.train_videos, "test_videos": args.test_videos,
              "train_clips": int(len(train["labels"])), "test_clips": int(len(test["labels"])),
              "subjects_per_split": args.subjects, "data_seed": args.data_seed,
              "logistic_regression_accuracy": {k: round(v, 4) for k, v in reference.items()},
              "fusion_node_timing": fusion, "rows": out_rows, "data_seconds": round(data_seconds, 1),
              "total_seconds": round(time.monotonic() - start, 1), "matmul_gflops": round(gflops, 1)}
    line = json.dumps(result)
    if args.output:
        with open(args.output, "w") as f:
            f.write(line + "\n")
    print(markdown(result), file=sys.stderr)
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
