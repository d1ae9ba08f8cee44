"""`vtcaps predict`: which emotion a video shows, clip by clip.

    vtcaps predict clip.avi videos/ --server http://localhost:8501 --model-name vtcaps
    vtcaps predict clip.avi --saved-model saved_models/vtcaps --format json --plot timeline.png

Every video goes through the Beam job's face analysis (`vtcaps_tf.face.FaceAnalyzer`) and clip
cutting (`vtcaps_tf.data.clips.clip_windows`), with the clip length N, TPN window M and crop size S
read from the model's serving signature. The model is asked over REST (any TF Serving) or in
process; a video's emotion is the class with the highest mean clip probability.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import sys

import numpy as np

SIGNATURE = "serving_default"
# Keep one REST request body (JSON text, ~4 bytes per uint8 value) well under a server's limit.
_REST_BODY_BUDGET = 32 << 20


@dataclasses.dataclass
class ClipPrediction:
    index: int
    start: float  # seconds
    end: float
    probabilities: np.ndarray  # [C]


@dataclasses.dataclass
class VideoPrediction:
    video: str
    classes: list[str] = dataclasses.field(default_factory=list)
    clips: list[ClipPrediction] = dataclasses.field(default_factory=list)
    fps: float = 0.0
    num_frames: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.clips)

    @property
    def mean_probabilities(self) -> np.ndarray:
        return np.mean([c.probabilities for c in self.clips], axis=0)

    @property
    def emotion(self) -> str:
        return self.classes[int(np.argmax(self.mean_probabilities))]

    @property
    def probability(self) -> float:
        return float(np.max(self.mean_probabilities))

    def to_dict(self) -> dict:
        if not self.ok:
            return {"video": self.video, "error": self.error}
        return {
            "video": self.video, "emotion": self.emotion, "probability": self.probability,
            "probabilities": dict(zip(self.classes, map(float, self.mean_probabilities))),
            "fps": self.fps, "num_frames": self.num_frames, "num_clips": len(self.clips),
            "clips": [{"clip": c.index, "start": c.start, "end": c.end,
                       "emotion": self.classes[int(np.argmax(c.probabilities))],
                       "probabilities": dict(zip(self.classes, map(float, c.probabilities)))}
                      for c in self.clips],
        }


# ---------------------------------------------------------------------------------------------
# the model: in process or over REST


@dataclasses.dataclass(frozen=True)
class ClipShape:
    clip_frames: int  # N
    long_frames: int  # M
    image_size: int  # S


def clip_shape_from_inputs(inputs: dict) -> ClipShape:
    """{name: shape tuple} of serving_default's inputs -> N, M, S (all must be static)."""
    missing = {"frames", "au_map", "long_frames"} - set(inputs)
    if missing:
        raise ValueError(f"the model's {SIGNATURE} signature lacks inputs {sorted(missing)}; "
                         f"it has {sorted(inputs)}")
    frames, long_frames = inputs["frames"], inputs["long_frames"]
    for name, shape in (("frames", frames), ("long_frames", long_frames)):
        if shape is None or len(shape) != 5 or None in shape[1:]:
            raise ValueError(f"input {name!r} needs a static shape [-1, T, S, S, 3], got {shape}")
    if frames[2] != frames[3] or frames[2:] != long_frames[2:]:
        raise ValueError(f"frames {frames} and long_frames {long_frames} disagree on the crop size")
    return ClipShape(frames[1], long_frames[1], frames[2])


class InProcessModel:
    """A SavedModel loaded here: a version folder, or a base path (its highest version)."""

    def __init__(self, path: str):
        from vtcaps_tf.serving.models import SAVED_MODEL_FILES, Servable, ready_versions

        if not os.path.isdir(path):
            raise FileNotFoundError(f"no SavedModel folder {path!r}")
        if not any(os.path.exists(os.path.join(path, f)) for f in SAVED_MODEL_FILES):
            versions = ready_versions(path)
            if not versions:
                raise FileNotFoundError(f"{path!r} is neither a SavedModel nor a base path with "
                                        "integer version folders")
            path = os.path.join(path, str(versions[-1]))
        self.path = path
        self.servable = Servable("local", 0, path, warmup=False)
        self.signature = self.servable.signature(SIGNATURE)
        self.shape = clip_shape_from_inputs({k: s.shape for k, s in self.signature.inputs.items()})
        self.max_batch = None

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.signature.run(inputs)

    def describe(self) -> str:
        return f"SavedModel {self.path}"


class RestModel:
    """A model behind TF Serving's REST API."""

    def __init__(self, server: str, model_name: str, version: int | None = None):
        from vtcaps_tf.serving.client import ServingClient

        self.client = ServingClient(server, model_name, version)
        signature = self.client.signature(SIGNATURE)
        self.shape = clip_shape_from_inputs({k: shape for k, (_, shape) in signature["inputs"].items()})
        s = self.shape
        per_clip = 4 * 3 * s.image_size ** 2 * (s.clip_frames + s.long_frames) + 20 * s.clip_frames * 100 * 100
        self.max_batch = max(1, _REST_BODY_BUDGET // per_clip)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.client.predict(inputs, SIGNATURE)

    def describe(self) -> str:
        return self.client.url


# ---------------------------------------------------------------------------------------------
# videos


def find_videos(paths: list[str]) -> tuple[list[str], list[VideoPrediction]]:
    """Video files and frame folders named or found (recursively) under the given paths.

    A folder holding images and no videos or sub-folders is one video (its frames)."""
    from vtcaps_tf.face.video import is_image_file, is_video_file

    videos, missing = [], []
    for path in paths:
        if os.path.isfile(path):
            videos.append(path)
        elif os.path.isdir(path):
            found = []
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                visible = [f for f in files if not f.startswith(".")]
                if not dirs and visible and all(is_image_file(f) for f in visible):
                    found.append(root)  # a frame folder
                    continue
                found += [os.path.join(root, f) for f in sorted(visible) if is_video_file(f)]
            if not found:
                missing.append(VideoPrediction(path, error="no video files or frame folders in it"))
            videos += sorted(found)
        else:
            missing.append(VideoPrediction(path, error="no such file or folder"))
    return videos, missing


def clip_inputs(track, windows) -> list[dict[str, np.ndarray]]:
    """Each clip's model inputs, cut as the Beam job cuts them (short clip + centred long window)."""
    return [{"frames": track.crops[w.start:w.stop],
             "au_map": track.au_maps[w.start:w.stop].astype(np.float32),
             "long_frames": track.crops[w.window]} for w in windows]


def predict_video(path: str, model, analyzer, batch_size: int = 4) -> VideoPrediction:
    """One video -> its per-clip probabilities; failures come back as `error`, never raised."""
    from vtcaps_tf.data.clips import clip_windows
    from vtcaps_tf.face import NoFaceError, VideoReadError, read_video

    result = VideoPrediction(path)
    try:
        video = read_video(path)
    except VideoReadError as err:
        result.error = f"cannot read the video ({err})"
        return result
    result.fps, result.num_frames = float(video.fps), video.num_frames
    s = model.shape
    windows = clip_windows(video.num_frames, s.clip_frames, s.long_frames)
    if not windows:
        result.error = f"too short: {video.num_frames} frames, a clip needs {s.clip_frames}"
        return result
    try:
        track = analyzer.analyze(video.frames)
    except NoFaceError:
        result.error = f"no face found in any of its {video.num_frames} frames"
        return result
    clips = clip_inputs(track, windows)
    batch = max(1, min(batch_size, model.max_batch or batch_size))
    probabilities, classes = [], None
    for i in range(0, len(clips), batch):
        part = clips[i:i + batch]
        outputs = model.predict({k: np.stack([c[k] for c in part]) for k in part[0]})
        probabilities.append(np.asarray(outputs["probabilities"], np.float64))
        if classes is None and "classes" in outputs:
            classes = [c.decode() if isinstance(c, bytes) else str(c) for c in np.asarray(outputs["classes"])[0]]
    probabilities = np.concatenate(probabilities)
    result.classes = classes or [f"class_{i}" for i in range(probabilities.shape[1])]
    for w, p in zip(windows, probabilities):
        start, end = w.times(video.fps)
        result.clips.append(ClipPrediction(w.index, float(start), float(end), p))
    return result


# ---------------------------------------------------------------------------------------------
# output


def format_table(results: list[VideoPrediction]) -> str:
    out = []
    for r in results:
        if not r.ok:
            out.append(f"{r.video}: no prediction: {r.error}")
            continue
        out.append(f"{r.video}: {r.emotion} ({r.probability:.3f}) from {len(r.clips)} clip"
                   f"{'s' if len(r.clips) != 1 else ''}, {r.num_frames} frames at {r.fps:g} fps")
        width = max(8, *(len(c) for c in r.classes))
        out.append("  clip   start     end  " + "".join(f"{c:>{width + 1}}" for c in r.classes))
        for c in r.clips:
            out.append(f"  {c.index:>4} {c.start:7.2f} {c.end:7.2f}  "
                       + "".join(f"{p:>{width + 1}.3f}" for p in c.probabilities))
    return "\n".join(out) + "\n"


def format_json(results: list[VideoPrediction]) -> str:
    return json.dumps([r.to_dict() for r in results], indent=2) + "\n"


def format_csv(results: list[VideoPrediction]) -> str:
    classes = []
    for r in results:
        classes += [c for c in r.classes if c not in classes]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["video", "clip", "start", "end", "emotion", "probability", *classes, "error"])
    for r in results:
        if not r.ok:
            writer.writerow([r.video, "", "", "", "", "", *[""] * len(classes), r.error])
            continue
        rows = [(c.index, f"{c.start:.3f}", f"{c.end:.3f}", c.probabilities) for c in r.clips]
        rows.append(("all", f"{r.clips[0].start:.3f}", f"{r.clips[-1].end:.3f}", r.mean_probabilities))
        for index, start, end, p in rows:
            by_class = dict(zip(r.classes, p))
            writer.writerow([r.video, index, start, end, r.classes[int(np.argmax(p))], f"{np.max(p):.6f}",
                             *[f"{by_class[c]:.6f}" if c in by_class else "" for c in classes], ""])
    return buf.getvalue()


FORMATS = {"table": format_table, "json": format_json, "csv": format_csv}


MAX_PLOT_PANELS = 24


def plot_timelines(results: list[VideoPrediction], path: str) -> int:
    """Per-clip class probabilities over time, one panel per predicted video (the first
    MAX_PLOT_PANELS of them, so that the image stays readable). Returns the panels drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in results if r.ok][:MAX_PLOT_PANELS]
    if not done:
        return 0
    fig, axes = plt.subplots(len(done), 1, figsize=(8, 2.6 * len(done)), squeeze=False)
    for ax, r in zip(axes[:, 0], done):
        t = np.array([c.start for c in r.clips] + [r.clips[-1].end])
        p = np.array([c.probabilities for c in r.clips])
        for k, name in enumerate(r.classes):
            ax.step(t, np.append(p[:, k], p[-1, k]), where="post", label=name)
        ax.set_ylim(0, 1)
        ax.set_xlim(t[0], t[-1])
        ax.set_ylabel("probability")
        ax.set_title(f"{os.path.basename(r.video.rstrip(os.sep))}: {r.emotion} ({r.probability:.2f})",
                     fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time (s)")
    axes[0, 0].legend(loc="upper right", fontsize=8, ncol=min(4, len(done[0].classes)))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(done)


# ---------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vtcaps predict",
        description="Say which emotion each video shows, with a per-clip timeline.")
    p.add_argument("paths", nargs="+", metavar="VIDEO_OR_DIR",
                   help="video files, frame folders, or folders searched for them")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", help="REST address of TF Serving or `vtcaps serve`, e.g. http://localhost:8501")
    where.add_argument("--saved-model", help="SavedModel folder (a version, or a base path: its newest)")
    p.add_argument("--model-name", default="vtcaps", help="served model name (default: vtcaps)")
    p.add_argument("--model-version", type=int, default=None, help="served version (default: newest)")
    p.add_argument("--format", choices=sorted(FORMATS), default="table", help="output format (default: table)")
    p.add_argument("--output", help="write the results to this file instead of stdout")
    p.add_argument("--plot", help="PNG file for the per-clip probabilities over time")
    p.add_argument("--batch-size", type=int, default=4, help="clips per model call (default 4)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


def cli_main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.plot and not args.plot.lower().endswith(".png"):
        parser.error("--plot needs a .png file name")

    def say(text):
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    videos, results = find_videos(args.paths)
    for r in results:
        say(f"{r.video}: {r.error}")
    if not videos:
        print("vtcaps predict: nothing to predict", file=sys.stderr)
        return 1
    try:
        if args.server:
            from vtcaps_tf.serving.client import ServingClientError

            try:
                model = RestModel(args.server, args.model_name, args.model_version)
            except ServingClientError as err:
                print(f"vtcaps predict: cannot use model {args.model_name!r} at {args.server}: "
                      f"{err.message}", file=sys.stderr)
                return 1
        else:
            model = InProcessModel(args.saved_model)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"vtcaps predict: {err}", file=sys.stderr)
        return 1
    s = model.shape
    say(f"model: {model.describe()} (clips of {s.clip_frames} frames, TPN window {s.long_frames}, "
        f"{s.image_size}px crops)")

    from vtcaps_tf.face import FaceAnalyzer

    analyzer = FaceAnalyzer(crop_size=s.image_size, video=True)
    try:
        for i, path in enumerate(videos, 1):
            try:
                result = predict_video(path, model, analyzer, args.batch_size)
            except Exception as err:  # noqa: BLE001 - one bad video must not stop the others
                result = VideoPrediction(path, error=f"{type(err).__name__}: {err}")
            results.append(result)
            if result.ok:
                say(f"[{i}/{len(videos)}] {path}: {result.emotion} ({result.probability:.3f}), "
                    f"{len(result.clips)} clips")
            else:
                say(f"[{i}/{len(videos)}] {path}: no prediction: {result.error}")
    finally:
        analyzer.close()

    text = FORMATS[args.format](results)
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        say(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    if args.plot:
        panels = plot_timelines(results, args.plot)
        predicted = sum(r.ok for r in results)
        if panels:
            say(f"wrote {args.plot}" + (f" (the first {panels} of {predicted} videos)"
                                        if panels < predicted else ""))
    predicted = sum(r.ok for r in results)
    say(f"{predicted} of {len(results)} videos predicted")
    return 0 if predicted else 1
