"""Which emotion each face of a video (or photo) shows, clip by clip (`vtcaps predict`).

A video is read one frame at a time (`vtcaps_tf.face.video.open_frames`): every face in a frame is
found, followed from frame to frame by box overlap, aligned and cropped, and the frame let go; each
face's crops are cut into the Beam job's clips (N frames and a centred TPN window of M, read from
the model's serving signature) as they complete, and each clip goes to the model (over REST, or in
process) in batches. Memory does not grow with the video's length. A clip where most frames lack
the face is `no_face` and gets no emotion. A photo is a static clip per face.

Here: the predict loop and its entry point, `predict_paths` (`vtcaps_tf.cli.predict` holds the
command's flags). The videos and photos to read are listed by `predict_inputs`, the model is
called through `predict_models`, the results are written by `predict_report`, and the options are
`options.PredictOptions`.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Callable

import numpy as np

from vtcaps_tf.apps.options import PredictOptions
from vtcaps_tf.apps.predict_inputs import find_videos, is_photo
from vtcaps_tf.apps.predict_models import (  # noqa: F401 - the command's public names
    SIGNATURE, ClipShape, InProcessModel, RestModel, clip_shape_from_inputs, open_model)
from vtcaps_tf.apps.predict_report import (  # noqa: F401
    FORMATS, MAX_PLOT_PANELS, NO_FACE, OK, ClipPrediction, VideoPrediction, format_csv, format_json,
    format_table, plot_timelines)
from vtcaps_tf.errors import UsageError


class ClipBatcher:
    """Clips with a face -> the model, `batch` at a time; remembers every clip's outcome per face.

    A clip goes to the model as its stored window (`StreamClip`: crops, landmarks, offset); the
    model turns it into inputs by the input contract (`predict_models`)."""

    def __init__(self, model, batch: int):
        self.model = model
        self.batch = batch
        self.waiting: list = []  # (ClipPrediction, window)
        self.clips: dict[int, list[ClipPrediction]] = {}
        self.classes: list[str] | None = None

    def add(self, face: int, clip: ClipPrediction, window=None):
        self.clips.setdefault(face, []).append(clip)
        if window is not None:
            self.waiting.append((clip, window))
            if len(self.waiting) >= self.batch:
                self.flush()

    def flush(self):
        if not self.waiting:
            return
        part, self.waiting = self.waiting, []
        outputs = self.model.predict_windows([w for _, w in part])
        for (clip, _), p in zip(part, np.asarray(outputs["probabilities"], np.float64)):
            clip.probabilities = p
        if self.classes is None and "classes" in outputs:
            self.classes = [c.decode() if isinstance(c, bytes) else str(c)
                            for c in np.asarray(outputs["classes"])[0]]
        elif self.classes is None:
            self.classes = [f"class_{i}" for i in range(len(part[0][0].probabilities))]


def _batch_size(model, batch_size: int) -> int:
    return max(1, min(batch_size, model.max_batch or batch_size))


def predict_video(path: str, model, analyzer, batch_size: int = 4, faces: str = "all",
                  max_frames: int | None = None, photo_analyzer=None,
                  timelines_out: dict | None = None) -> list[VideoPrediction]:
    """One video (or photo) -> one `VideoPrediction` per face; failures come back as `error`,
    never raised. `timelines_out`, when given, receives the `FaceTimelines` (boxes per frame)."""
    from vtcaps_tf.face.streaming import FaceTimelines
    from vtcaps_tf.face.video import MAX_FRAME_SIDE, VideoReadError, open_frames

    try:
        stream = open_frames(path, max_frames=max_frames, max_side=MAX_FRAME_SIDE)
    except VideoReadError as err:
        return [VideoPrediction(path, error=f"cannot read the video ({err})")]
    if stream.still:
        return predict_photo(path, next(stream.frames), model, photo_analyzer or analyzer,
                             batch_size, faces, scale=stream.scale)
    s = model.shape
    timelines = FaceTimelines(analyzer, stream.fps, s.clip_frames, s.long_frames, faces,
                              keep_boxes=timelines_out is not None)
    batcher = ClipBatcher(model, _batch_size(model, batch_size))

    def take(track_clips):
        for tc in track_clips:
            w = tc.clip.window
            start, end = (tc.first_frame + w.start) / stream.fps, (tc.first_frame + w.stop) / stream.fps
            ok = tc.clip.has_face
            batcher.add(tc.face, ClipPrediction(w.index, float(start), float(end), OK if ok else NO_FACE),
                        tc.clip if ok else None)

    try:
        for t, frame in enumerate(stream.frames):
            take(timelines.push(t, frame))
    except VideoReadError as err:
        return [VideoPrediction(path, error=f"cannot read the video ({err})")]
    take(timelines.finish())
    batcher.flush()
    if timelines_out is not None:
        timelines_out["timelines"] = timelines
    n, fps = timelines.num_frames, float(stream.fps)
    skipped = timelines.skipped.to_list()
    if n < s.clip_frames:
        return [VideoPrediction(path, fps=fps, num_frames=n, skipped_faces=skipped,
                                error=f"too short: {n} frames, a clip needs {s.clip_frames}")]
    if not timelines.tracks:
        return [VideoPrediction(path, fps=fps, num_frames=n, skipped_faces=skipped,
                                error=f"no face found in any of its {n} frames")]
    results = []
    for face, track in sorted(timelines.tracks.items()):
        r = VideoPrediction(path, face, batcher.classes or [], sorted(batcher.clips.get(face, []),
                                                                      key=lambda c: c.index),
                            fps=fps, num_frames=n, start=track.first_frame / fps,
                            end=(track.last_frame + 1) / fps,
                            box=[v * stream.scale for v in track.mean_box],
                            skipped_faces=skipped)
        if not r.clips:
            r.error = (f"face seen for {track.num_frames} frames "
                       f"({r.start:.2f}-{r.end:.2f} s), a clip needs {s.clip_frames}")
        results.append(r)
    return results


@dataclasses.dataclass
class StillWindow:
    """A photo's face as a clip's stored window: its crop and landmarks repeated M times."""

    crops: np.ndarray  # uint8 [M, S, S, 3]
    landmarks: np.ndarray  # float32 [M, 68, 2]
    offset: int


def predict_photo(path: str, image: np.ndarray, model, analyzer, batch_size: int = 4,
                  faces: str = "all", scale: float = 1.0) -> list[VideoPrediction]:
    """A still image: every face (left to right; the largest only with faces="largest") shown to
    the model as a static clip, the face's crop repeated N (and M) times. A large photo (a phone's
    6000x4000) is analysed, decoded reduced (`open_frames`; `scale`: the file's pixels per pixel of
    `image`, so that the boxes reported are in the file's pixels) and downscaled further by the
    finder for detection only."""
    from vtcaps_tf.face.finder import SkipTally
    from vtcaps_tf.face.tracking import box_area

    analyzer.reset()
    frame_faces = analyzer.find(image)
    skipped = SkipTally.of(frame_faces.skipped)
    found = [f.landmarks for f in frame_faces.faces]
    if not found:
        return [VideoPrediction(path, num_frames=1, single_frame=True, skipped_faces=skipped,
                                error="no face found in the image")]
    boxes = [f.box for f in frame_faces.faces]
    order = sorted(range(len(found)), key=lambda k: boxes[k][0])
    if faces == "largest":
        order = [max(order, key=lambda k: box_area(boxes[k]))]
    s = model.shape
    batcher = ClipBatcher(model, _batch_size(model, batch_size))
    for face, k in enumerate(order):
        crop, lm01 = analyzer.crop(image, found[k])
        window = StillWindow(np.repeat(crop[None], s.long_frames, axis=0),
                             np.repeat(np.asarray(lm01, np.float32)[None], s.long_frames, axis=0),
                             s.before)
        batcher.add(face, ClipPrediction(0, 0.0, 0.0, OK), window)
    batcher.flush()
    return [VideoPrediction(path, face, batcher.classes, batcher.clips[face], num_frames=1,
                            box=[float(v) * scale for v in boxes[k]], single_frame=True,
                            skipped_faces=skipped)
            for face, k in enumerate(order)]


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def predict_paths(paths: list[str], options: PredictOptions, say: Callable[[str], None] | None = None,
                  warn: Callable[[str], None] = _to_stderr) -> list[VideoPrediction]:
    """Every video, frame folder and photo named or found under `paths` -> one `VideoPrediction`
    per face (or per path that gave none, with its error), in order.

    `say` gets the progress lines (None: none), `warn` the model card's warning about a model
    trained on synthetic faces only. Raises UsageError when the paths hold nothing to predict or
    the model named is missing or unusable; a server that does not answer raises
    ServingClientError. One video that fails is its own error result, never raised."""
    say = say or (lambda text: None)
    videos, results = find_videos(paths)
    if not videos:
        raise UsageError("nothing to predict: " + "; ".join(f"{r.video}: {r.error}" for r in results))
    for r in results:
        say(f"{r.video}: {r.error}")
    if options.annotate and (len(videos) != 1 or is_photo(videos[0])):
        raise UsageError(f"annotating needs exactly one video, got {len(videos)} videos and photos")
    model = open_model(options.model)
    s = model.shape
    say(f"model: {model.describe()} (clips of {s.clip_frames} frames, TPN window {s.long_frames}, "
        f"{s.image_size}px crops)")
    from vtcaps_tf.export.model_card import describe, synthetic_warning

    if model.card is not None or not options.model.server:
        say(f"model card: {describe(model.card)}")
    warning = synthetic_warning(model.card)
    if warning:
        warn(warning)

    from vtcaps_tf.face import FaceAnalyzer

    # faces="largest" still analyses max_faces faces, the largest of which is kept per frame.
    analyzer = FaceAnalyzer(crop_size=s.image_size, video=True, max_num_faces=options.max_faces)
    photo_analyzer = None
    try:
        for i, path in enumerate(videos, 1):
            if photo_analyzer is None and is_photo(path):
                photo_analyzer = FaceAnalyzer(crop_size=s.image_size, video=False,
                                              max_num_faces=options.max_faces)
            got = {} if options.annotate else None
            try:
                found = predict_video(path, model, analyzer, options.batch, options.faces,
                                      options.max_frames, photo_analyzer, timelines_out=got)
            except Exception as err:  # noqa: BLE001 - one bad video must not stop the others
                found = [VideoPrediction(path, error=f"{type(err).__name__}: {err}")]
            if got and "timelines" in got:
                from vtcaps_tf.apps.annotate import annotate_video

                written = annotate_video(path, options.annotate, found, got["timelines"], s.clip_frames,
                                         options.max_frames)
                say(f"wrote {options.annotate} ({written} frames)")
            results += found
            for r in found:
                if r.ok:
                    say(f"[{i}/{len(videos)}] {r.label}: {r.emotion} ({r.probability:.3f}), "
                        f"{len(r.ok_clips)} clips" + (f", {len(r.clips) - len(r.ok_clips)} no_face"
                                                      if len(r.clips) > len(r.ok_clips) else ""))
                elif r.error is None:
                    say(f"[{i}/{len(videos)}] {r.label}: no emotion: none of its {len(r.clips)} clips shows the face")
                else:
                    say(f"[{i}/{len(videos)}] {r.label}: no prediction: {r.error}")
    finally:
        analyzer.close()
        if photo_analyzer is not None:
            photo_analyzer.close()
    return results


def write_results(results: list[VideoPrediction], options: PredictOptions,
                  say: Callable[[str], None] | None = None) -> None:
    """The results in `options.format` to `options.output` (None: stdout), and the timeline plot
    to `options.plot` when set; `say` gets a line per file written."""
    say = say or (lambda text: None)
    text = FORMATS[options.format](results)
    if options.output:
        with open(options.output, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        say(f"wrote {options.output}")
    else:
        sys.stdout.write(text)
    if options.plot:
        predicted = sum(r.ok for r in results)
        panels = plot_timelines(results, options.plot)
        if panels:
            say(f"wrote {options.plot}" + (f" (the first {panels} of {predicted} faces)"
                                           if panels < predicted else ""))
