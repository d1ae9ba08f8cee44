"""`vtcaps stream SOURCE`: emotions of every face in a live stream, as they come.

    vtcaps stream 0 --saved-model saved_models/vtcaps                 # camera 0
    vtcaps stream rtsp://camera.local/live --server http://localhost:8501
    vtcaps stream talk.mp4 --saved-model saved_models/vtcaps --realtime --output preds.jsonl

SOURCE is a camera index, a video file or a URL OpenCV can open (RTSP, HTTP). A reader thread
takes frames from it; the main thread finds and tracks the faces (as `vtcaps predict` does) and
keeps each face's last M aligned crops. Every `--every` frames, each face whose window is full is
asked about: the model sees the window laid out as in training (the N-frame clip centred in the
M-frame TPN window), so a prediction describes the clip that ends (M - N) / 2 frames before the
newest frame. One JSON line per (window, face) is printed as it comes, with `latency_ms`: from
reading the window's newest frame to having its prediction.

A camera or URL, or a file with `--realtime` (paced at its own frame rate), never waits: when the
analysis falls behind, the reader drops the oldest waiting frame and counts it; the summary line
at the end says how many were dropped. A file without `--realtime` is read as fast as it is
analysed, every frame.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import queue
import sys
import threading
import time

import numpy as np

from vtcaps_tf.face.streaming import BRIDGE_SECONDS, MIN_FACE_FRACTION, TRACK_LOST_SECONDS
from vtcaps_tf.face.tracking import FaceTracker, box_area, landmark_box

QUEUE_FRAMES = 2  # frames waiting for the analysis at most (live sources)
DEFAULT_FPS = 30.0


class FrameReader(threading.Thread):
    """Reads `capture` into `frames`: (index, RGB frame, time read) items, then None at the end.

    `drop=True` never blocks: a full queue loses its oldest frame (counted in `dropped`).
    `pace_fps`: wait until each frame's own time (a file played at its frame rate)."""

    def __init__(self, capture, drop: bool, pace_fps: float | None = None, max_frames: int | None = None):
        super().__init__(daemon=True)
        self.capture = capture
        self.drop = drop
        self.pace_fps = pace_fps
        self.max_frames = max_frames
        self.frames: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self.read = 0
        self.dropped = 0
        self.stop_event = threading.Event()

    def run(self):
        import cv2

        start = time.perf_counter()
        try:
            while not self.stop_event.is_set() and (not self.max_frames or self.read < self.max_frames):
                ok, bgr = self.capture.read()
                if not ok:
                    break
                if self.pace_fps:
                    delay = start + self.read / self.pace_fps - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                item = (self.read, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), time.perf_counter())
                self.read += 1
                if not self.drop:
                    self.frames.put(item)
                    continue
                while True:
                    try:
                        self.frames.put_nowait(item)
                        break
                    except queue.Full:
                        try:
                            self.frames.get_nowait()
                            self.dropped += 1
                        except queue.Empty:
                            pass
        finally:
            self.frames.put(None)

    def stop(self):
        self.stop_event.set()


@dataclasses.dataclass
class _FaceWindow:
    """One face's last M crops (crop, landmarks, detected, frame) and when it was last asked about."""

    frames: collections.deque
    landmarks: np.ndarray | None = None  # pixels, of the last detection
    box: np.ndarray | None = None  # the last detected box
    seen_at: int = -1  # frame index of the last detection
    since_prediction: int = 0
    last: dict | None = None  # the last prediction


@dataclasses.dataclass
class LiveWindow:
    """A face's newest M crops and their landmarks; the short clip starts at `offset`."""

    crops: np.ndarray  # uint8 [M, S, S, 3]
    landmarks: np.ndarray  # float32 [M, 68, 2] in [0, 1] of the crop
    offset: int


class LiveFaces:
    """Frames (possibly with gaps where frames were dropped) -> per face, its newest full window
    (a `LiveWindow`, which the model turns into inputs by the input contract) every `every` frames."""

    def __init__(self, analyzer, fps: float, clip_frames: int, long_frames: int, every: int,
                 faces: str = "all"):
        self.analyzer = analyzer
        self.n, self.m = clip_frames, long_frames
        self.before = (long_frames - clip_frames) // 2
        self.every = every
        self.faces = faces
        self.tracker = FaceTracker(max_lost=max(1, int(round(TRACK_LOST_SECONDS * fps))))
        self.bridge = max(1, int(round(BRIDGE_SECONDS * fps)))
        self.windows: dict[int, _FaceWindow] = {}
        analyzer.reset()

    def push(self, t: int, frame: np.ndarray) -> list[tuple[int, LiveWindow, bool, int]]:
        """One frame -> [(face, window, has_face, the window's first frame)] of the windows
        due at this frame (with frames dropped, a window spans more than M source frames)."""
        found = self.analyzer.detect_faces(frame)
        boxes = [landmark_box(lm) for lm in found]
        if self.faces == "largest" and len(found) > 1:
            k = int(np.argmax([box_area(b) for b in boxes]))
            found, boxes = [found[k]], [boxes[k]]
        ids, closed = self.tracker.update(t, boxes)
        for i in closed:
            self.windows.pop(i, None)
        seen = {}
        for i, lm, box in zip(ids, found, boxes):
            w = self.windows.setdefault(i, _FaceWindow(collections.deque(maxlen=self.m)))
            w.landmarks, w.box, w.seen_at = lm, box, t
            seen[i] = True
        due = []
        for i, w in self.windows.items():
            # Live: no waiting for the next detection; a frame without the face is cropped where
            # it was last seen (counted as not detected).
            crop, lm01 = self.analyzer.crop(frame, w.landmarks)
            w.frames.append((crop, np.asarray(lm01, np.float32), i in seen, t))
            w.since_prediction += 1
            if len(w.frames) == self.m and w.since_prediction >= self.every:
                w.since_prediction = 0
                window = list(w.frames)
                short = window[self.before:self.before + self.n]
                inputs = LiveWindow(np.stack([c for c, _, _, _ in window]),
                                    np.stack([lm for _, lm, _, _ in window]), self.before)
                due.append((i, inputs, np.mean([f for _, _, f, _ in short]) >= MIN_FACE_FRACTION,
                            window[0][3]))
        return due

    def box_of(self, i: int, t: int) -> np.ndarray | None:
        """The face's box when it is detected in frame t (or within the bridge before it)."""
        w = self.windows.get(i)
        return w.box if w is not None and t - w.seen_at <= self.bridge else None


def open_capture(source: str):
    """A camera index ("0"), a file or a URL -> (cv2.VideoCapture, fps, is_live)."""
    import os

    import cv2

    live = source.isdigit() or "://" in source
    if not live and not os.path.exists(source):
        raise OSError(f"no such file {source!r} (a camera is a number, a stream a URL)")
    cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not cap.isOpened():
        cap.release()
        raise OSError(f"OpenCV cannot open {source!r}")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return cap, (fps if 0.0 < fps < 1000.0 else DEFAULT_FPS), live


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vtcaps stream", description=(
        "Emotions of every face in a camera, a video file or a stream URL, printed as JSON lines "
        "as they come, with the latency from a window's newest frame to its prediction."))
    p.add_argument("source", help="camera index (0, 1, ...), video file, or URL (rtsp://, http://)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", help="REST address of TF Serving or `vtcaps serve`")
    where.add_argument("--saved-model", help="SavedModel folder (a version, or a base path: its newest)")
    p.add_argument("--model-name", default="vtcaps", help="served model name (default: vtcaps)")
    p.add_argument("--model-version", type=int, default=None)
    p.add_argument("--every", type=int, default=None,
                   help="frames between two predictions of a face (default: the clip length N)")
    p.add_argument("--realtime", action="store_true",
                   help="play a file at its own frame rate, dropping frames when behind")
    p.add_argument("--faces", choices=("all", "largest"), default="all")
    p.add_argument("--max-faces", type=int, default=4, help="faces looked for per frame (default 4)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--output", help="write the JSON lines to this file instead of stdout")
    p.add_argument("--annotate", metavar="OUT.mp4", help="also write the analysed frames, annotated")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary lines on stderr")
    return p


def cli_main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.every is not None and args.every < 1:
        parser.error("--every must be at least 1")

    def say(text):
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    from vtcaps_tf.apps.predict_models import InProcessModel, RestModel

    try:
        model = (RestModel(args.server, args.model_name, args.model_version) if args.server
                 else InProcessModel(args.saved_model))
        cap, fps, live = open_capture(args.source)
    except Exception as err:  # noqa: BLE001 - any failure to start is one clear line
        print(f"vtcaps stream: {getattr(err, 'message', None) or err}", file=sys.stderr)
        return 2  # the model or source named is missing or unusable (vtcaps_tf.errors)
    from vtcaps_tf.face import FaceAnalyzer
    from vtcaps_tf.export.model_card import describe, synthetic_warning

    s = model.shape
    every = args.every or s.clip_frames
    say(f"model: {model.describe()} ({describe(model.card)}); source {args.source} at {fps:g} fps; "
        f"windows of {s.long_frames} frames, a prediction every {every}")
    warning = synthetic_warning(model.card)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    reader = FrameReader(cap, drop=live or args.realtime, pace_fps=fps if args.realtime and not live else None,
                         max_frames=args.max_frames)
    writer = None
    latencies, classes, processed = [], None, 0
    analyzer = FaceAnalyzer(s.image_size, video=True,
                            max_num_faces=args.max_faces)
    live_faces = LiveFaces(analyzer, fps, s.clip_frames, s.long_frames, every, args.faces)
    reader.start()
    try:
        while True:
            item = reader.frames.get()
            if item is None:
                break
            t, frame, read_at = item
            processed += 1
            due = live_faces.push(t, frame)
            asked = [(i, inp) for i, inp, ok, _ in due if ok]
            probs = {}
            if asked:
                outputs = model.predict_windows([inp for _, inp in asked])
                if classes is None:
                    classes = ([c.decode() if isinstance(c, bytes) else str(c)
                                for c in np.asarray(outputs["classes"])[0]] if "classes" in outputs
                               else [f"class_{k}" for k in range(np.shape(outputs["probabilities"])[1])])
                probs = {i: np.asarray(p, np.float64) for (i, _), p in zip(asked, outputs["probabilities"])}
            done_at = time.perf_counter()
            for i, _, ok, first in due:
                latency = (done_at - read_at) * 1000.0
                latencies.append(latency)
                record = {"frame": t, "time": round(t / fps, 3), "face": i,
                          "window": [first, t], "status": "ok" if ok else "no_face",
                          "emotion": None, "probability": None, "probabilities": None,
                          "latency_ms": round(latency, 1), "dropped_so_far": reader.dropped}
                if ok:
                    p = probs[i]
                    record.update(emotion=classes[int(np.argmax(p))], probability=float(np.max(p)),
                                  probabilities=dict(zip(classes, map(float, p))))
                live_faces.windows[i].last = record
                out.write(json.dumps(record) + "\n")
                out.flush()
            if args.annotate:
                writer = _annotate(writer, args.annotate, frame, fps, t, live_faces)
    except KeyboardInterrupt:
        say("stopped")
    finally:
        reader.stop()
        analyzer.close()
        if writer is not None:
            writer.release()
        if out is not sys.stdout:
            out.close()
    lat = np.array(latencies) if latencies else np.array([np.nan])
    summary = {"frames_read": reader.read, "frames_analysed": processed, "frames_dropped": reader.dropped,
               "predictions": len(latencies), "latency_ms_mean": round(float(np.mean(lat)), 1),
               "latency_ms_p50": round(float(np.median(lat)), 1),
               "latency_ms_p95": round(float(np.percentile(lat, 95)), 1),
               "latency_ms_max": round(float(np.max(lat)), 1)}
    say("summary: " + json.dumps(summary))
    return 0 if processed else 1


def _annotate(writer, path: str, frame: np.ndarray, fps: float, t: int, live_faces: LiveFaces):
    import cv2

    from vtcaps_tf.apps.annotate import FaceMark, draw_marks

    if writer is None:
        h, w = frame.shape[:2]
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    marks = []
    for i, w in live_faces.windows.items():
        last = w.last or {}
        marks.append(FaceMark(i, live_faces.box_of(i, t), last.get("emotion"), last.get("probability") or 0.0,
                              last.get("status", "waiting")))
    writer.write(draw_marks(np.ascontiguousarray(frame[..., ::-1]), marks))
    return writer
