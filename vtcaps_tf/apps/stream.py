"""Emotions of every face in a live stream, as they come (`vtcaps stream`; its flags are in
`vtcaps_tf.cli.stream`, its options `options.StreamOptions`, its entry point `stream_faces`).

The source is a camera index, a video file or a URL OpenCV can open (RTSP, HTTP). A reader thread
takes frames from it; the main thread finds and tracks the faces (as `vtcaps predict` does) and
keeps each face's last M aligned crops. Every `every` frames, each face whose window is full is
asked about: the model sees the window laid out as in training (the N-frame clip centred in the
M-frame TPN window), so a prediction describes the clip that ends (M - N) / 2 frames before the
newest frame. One JSON line per (window, face) is printed as it comes, with `latency_ms`: from
reading the window's newest frame to having its prediction.

A camera or URL, or a file with `realtime` (paced at its own frame rate), never waits: when the
analysis falls behind, the reader drops the oldest waiting frame and counts it; the summary says
how many were dropped. A file without `realtime` is read as fast as it is analysed, every frame.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import queue
import sys
import threading
import time
from typing import Callable, TextIO

import numpy as np

from vtcaps_tf.apps.options import StreamOptions
from vtcaps_tf.errors import InputNotFoundError, UsageError
from vtcaps_tf.face.streaming import BRIDGE_SECONDS, MIN_FACE_FRACTION, TRACK_LOST_SECONDS
from vtcaps_tf.face.finder import SkipTally
from vtcaps_tf.face.tracking import FaceTracker, box_area
from vtcaps_tf.face.video import MAX_FRAME_SIDE, fit_frame

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
                rgb = fit_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), MAX_FRAME_SIDE)
                item = (self.read, rgb, time.perf_counter())
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
        self.skipped = SkipTally()  # the faces the analyzer left out, per reason
        self.skipped_now: dict[str, int] = {}  # those of the newest frame: reason -> faces
        analyzer.reset()

    def push(self, t: int, frame: np.ndarray) -> list[tuple[int, LiveWindow, bool, int]]:
        """One frame -> [(face, window, has_face, the window's first frame)] of the windows
        due at this frame (with frames dropped, a window spans more than M source frames)."""
        frame_faces = self.analyzer.find(frame)
        self.skipped.add(frame_faces.skipped)
        self.skipped_now = {r["reason"]: r["faces"] for r in SkipTally.of(frame_faces.skipped)}
        found = [f.landmarks for f in frame_faces.faces]
        boxes = [f.box for f in frame_faces.faces]
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


def is_live(source: str) -> bool:
    """A camera index or a URL: read as it comes, never waited for."""
    return source.isdigit() or "://" in source


def check_source(source: str) -> None:
    """Raise InputNotFoundError for a file source that does not exist (before a model loads)."""
    if not is_live(source) and not os.path.exists(source):
        raise InputNotFoundError(f"no such file {source!r} (a camera is a number, a stream a URL)")


def open_capture(source: str):
    """A camera index ("0"), a file or a URL -> (cv2.VideoCapture, fps, is_live). A file OpenCV
    cannot open raises UsageError; a camera or URL that does not open, OSError."""
    import cv2

    check_source(source)
    live = is_live(source)
    cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not cap.isOpened():
        cap.release()
        if live:
            raise OSError(f"OpenCV cannot open {source!r}")
        raise UsageError(f"OpenCV cannot open {source!r} as a video")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return cap, (fps if 0.0 < fps < 1000.0 else DEFAULT_FPS), live


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def stream_faces(options: StreamOptions, out: TextIO, say: Callable[[str], None] | None = None,
                 warn: Callable[[str], None] = _to_stderr) -> dict:
    """Read `options.source`, write one JSON line per (window, face) to `out` as it comes, and
    return the summary: frames read, analysed and dropped, predictions, latencies, and whether
    Ctrl-C ended the stream (`interrupted`; the stream stops cleanly first).

    `say` gets the start line (None: nothing), `warn` the model card's warning about a model
    trained on synthetic faces only. A missing source or model raises UsageError; a server that
    does not answer, ServingClientError."""
    from vtcaps_tf.apps.predict_models import open_model

    say = say or (lambda text: None)
    check_source(options.source)
    model = open_model(options.model)
    cap, fps, live = open_capture(options.source)
    from vtcaps_tf.export.model_card import describe, synthetic_warning
    from vtcaps_tf.face import FaceAnalyzer

    s = model.shape
    every = options.every or s.clip_frames
    say(f"model: {model.describe()} ({describe(model.card)}); source {options.source} at {fps:g} fps; "
        f"windows of {s.long_frames} frames, a prediction every {every}")
    warning = synthetic_warning(model.card)
    if warning:
        warn(warning)
    reader = FrameReader(cap, drop=live or options.realtime,
                         pace_fps=fps if options.realtime and not live else None,
                         max_frames=options.max_frames)
    writer = None
    latencies, classes, processed, interrupted = [], None, 0, False
    analyzer = FaceAnalyzer(s.image_size, video=True, max_num_faces=options.max_faces)
    live_faces = LiveFaces(analyzer, fps, s.clip_frames, s.long_frames, every, options.faces)
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
                          "latency_ms": round(latency, 1), "dropped_so_far": reader.dropped,
                          "skipped_faces": live_faces.skipped_now}
                if ok:
                    p = probs[i]
                    record.update(emotion=classes[int(np.argmax(p))], probability=float(np.max(p)),
                                  probabilities=dict(zip(classes, map(float, p))))
                live_faces.windows[i].last = record
                out.write(json.dumps(record) + "\n")
                out.flush()
            if options.annotate:
                writer = _annotate(writer, options.annotate, frame, fps, t, live_faces)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        reader.stop()
        analyzer.close()
        if writer is not None:
            writer.release()
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"frames_read": reader.read, "frames_analysed": processed, "frames_dropped": reader.dropped,
            "predictions": len(latencies), "latency_ms_mean": round(float(np.mean(lat)), 1),
            "latency_ms_p50": round(float(np.median(lat)), 1),
            "latency_ms_p95": round(float(np.percentile(lat, 95)), 1),
            "latency_ms_max": round(float(np.max(lat)), 1), "interrupted": interrupted,
            "skipped_faces": live_faces.skipped.to_list()}


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
