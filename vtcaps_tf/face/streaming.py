"""Face analysis as frames arrive, in memory that does not grow with the video's length.

A frame is decoded, its faces found, each face cropped and aligned, and the frame let go: only
the aligned crops (small) and their landmarks are kept, and only as long as a clip still needs
them. The pieces:

- `TrackCropper` turns one face's detections into one aligned crop per frame. A frame where the
  face is not detected takes the landmarks of the nearest frame where it is (so a blink or a hand
  is bridged); to know the next detection it holds the raw frames of a gap, but at most `bridge`
  of them: older frames of a longer gap take the landmarks of the detection before the gap.
- `ClipCutter` cuts those crops into the clips `vtcaps_tf.data.clips.clip_windows` cuts, each as
  soon as its last frame (TPN window included) has arrived, keeping only the frames later clips
  still need.
- `FaceTimelines` tracks every face (`vtcaps_tf.face.tracking`) and gives each track its own
  cropper and cutter: each face gets its own clips on its own timeline.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from vtcaps_tf.data.clips import ClipWindow
from vtcaps_tf.face.finder import SkipTally
from vtcaps_tf.face.tracking import FaceTracker, box_area

# A gap of up to this long without a detection is bridged with the nearest detection's landmarks;
# frames of a longer gap take the landmarks of the detection before it.
BRIDGE_SECONDS = 0.5
# A face not seen for longer than this ends its track; when it comes back it is a new track.
TRACK_LOST_SECONDS = 5.0
# A clip is `no_face` when fewer than this fraction of its frames have a detected face.
MIN_FACE_FRACTION = 0.5


@dataclasses.dataclass
class FrameCrop:
    crop: np.ndarray  # uint8 [S, S, 3]
    landmarks: np.ndarray | None  # float32 [68, 2] in crop coordinates / S; None until known
    found: bool  # the face was detected in this frame


class TrackCropper:
    """One face's frames -> `FrameCrop`s in frame order, pushed to `sink.push(frame_crop)`.

    `crop_fn(frame, landmarks_px) -> (crop, landmarks01)`. `bridge`: raw frames held at most while
    waiting for the next detection (None: no bound, the whole gap). `whole_video`: every frame from
    the first one pushed belongs to the face (the preprocessing job's one subject per video);
    otherwise the track ends at its last detection and the frames after it are dropped.
    """

    def __init__(self, crop_fn, sink, crop_size: int, bridge: int | None, whole_video: bool = False):
        self.crop_fn = crop_fn
        self.sink = sink
        self.crop_size = int(crop_size)
        self.bridge = bridge
        self.whole_video = whole_video
        self.last_landmarks = None  # pixels, of the last detection
        self.last_found = -1
        self.pending: collections.deque = collections.deque()  # (t, raw frame) since the last detection
        self.unconfirmed: list[FrameCrop] = []  # cropped since the last detection, not yet pushed

    @property
    def frames_held(self) -> int:
        return len(self.pending)

    def found(self, t: int, frame: np.ndarray, landmarks_px: np.ndarray):
        crop, lm01 = self.crop_fn(frame, landmarks_px)
        for fc in self.unconfirmed:
            if fc.landmarks is None:  # before the first detection: its landmarks are the nearest
                fc.landmarks = lm01
            self.sink.push(fc)
        for u, raw in self.pending:
            before = self.last_landmarks is not None and u - self.last_found <= t - u  # tie: earlier
            self.sink.push(FrameCrop(*self.crop_fn(raw, self.last_landmarks if before else landmarks_px),
                                     found=False))
        self.unconfirmed.clear()
        self.pending.clear()
        self.sink.push(FrameCrop(crop, lm01, True))
        self.last_landmarks = np.asarray(landmarks_px, np.float32)
        self.last_found = t

    def missing(self, t: int, frame: np.ndarray):
        self.pending.append((t, frame))
        if self.bridge is None or len(self.pending) <= self.bridge:
            return
        _, raw = self.pending.popleft()
        if self.last_landmarks is None:  # no face seen yet: a grey crop, landmarks filled later
            fc = FrameCrop(np.full((self.crop_size, self.crop_size, 3), 128, np.uint8), None, False)
        else:
            fc = FrameCrop(*self.crop_fn(raw, self.last_landmarks), found=False)
        if self.whole_video and self.last_landmarks is not None:
            self.sink.push(fc)  # part of the video whatever comes next
        else:
            self.unconfirmed.append(fc)

    def finish(self) -> bool:
        """End of the face's frames; returns whether any frame had a detection."""
        if self.whole_video and self.last_landmarks is not None:
            for fc in self.unconfirmed:
                self.sink.push(fc)
            for _, raw in self.pending:
                self.sink.push(FrameCrop(*self.crop_fn(raw, self.last_landmarks), found=False))
        self.unconfirmed.clear()
        self.pending.clear()
        return self.last_landmarks is not None


@dataclasses.dataclass
class StreamClip:
    """One clip's stored window, cut as `clip_windows` cuts it: the M crops of its TPN window with
    their landmarks (the short clip starts at `window.offset`), and which short-clip frames show a
    face. `inputs(contract)` turns it into model inputs with the same step the training reader uses."""

    window: ClipWindow  # frame indices relative to the track's first frame
    crops: np.ndarray  # uint8 [M, S, S, 3]: the long window
    landmarks: np.ndarray  # float32 [M, 68, 2] in [0, 1] of the crop
    found: np.ndarray  # bool [N]

    @property
    def offset(self) -> int:
        return int(self.window.offset)

    @property
    def face_fraction(self) -> float:
        return float(np.mean(self.found))

    @property
    def has_face(self) -> bool:
        return self.face_fraction >= MIN_FACE_FRACTION

    def inputs(self, contract, with_teacher: bool = True) -> dict[str, np.ndarray]:
        """The model's named inputs (numpy, no batch axis) by `contract` (an InputContract)."""
        out = contract.window_inputs(self.crops, self.landmarks, self.offset, with_teacher=with_teacher)
        return {k: np.asarray(v) for k, v in out.items()}


class ClipCutter:
    """`FrameCrop`s in order -> `StreamClip`s, each ready (`take()`) once the `push` that completes
    it is done (or after `finish`, for the last clips, whose TPN windows repeat the last frame). The clips are exactly
    `clip_windows(num_frames, clip_frames, long_frames)`; at most about M + N frames are held."""

    def __init__(self, clip_frames: int, long_frames: int):
        if clip_frames <= 0 or long_frames < clip_frames:
            raise ValueError("need 0 < clip_frames <= long_frames")
        self.n, self.m = int(clip_frames), int(long_frames)
        self.before = (self.m - self.n) // 2  # frames of the TPN window before the clip
        self.base = 0  # video index of buffer[0]
        self.buffer: collections.deque = collections.deque()  # (crop, landmarks, found)
        self.count = 0  # frames pushed
        self.next_clip = 0
        self.ready: list[StreamClip] = []

    @property
    def frames_held(self) -> int:
        return len(self.buffer)

    def push(self, fc: FrameCrop):
        self.buffer.append((fc.crop, np.asarray(fc.landmarks, np.float32), fc.found))
        self.count += 1
        # Clip k is complete when the last frame of its TPN window has arrived.
        while (self.next_clip * self.n - self.before + self.m) <= self.count:
            self.ready.append(self._cut(self.next_clip, self.count))
            self.next_clip += 1
            self._drop()

    def finish(self):
        while (self.next_clip + 1) * self.n <= self.count:
            self.ready.append(self._cut(self.next_clip, self.count))
            self.next_clip += 1
        self.buffer.clear()

    def take(self) -> list[StreamClip]:
        """The clips completed since the last call."""
        out, self.ready = self.ready, []
        return out

    def _cut(self, k: int, num_frames: int) -> StreamClip:
        start = k * self.n
        first = start - self.before
        window = np.clip(np.arange(first, first + self.m), 0, num_frames - 1)
        w = ClipWindow(k, start, start + self.n, window, start - first)
        held = [self.buffer[i - self.base] for i in window]
        short = [self.buffer[i - self.base] for i in range(start, start + self.n)]
        return StreamClip(w, np.stack([h[0] for h in held]), np.stack([h[1] for h in held]),
                          np.array([h[2] for h in short]))

    def _drop(self):
        keep_from = max(0, self.next_clip * self.n - self.before)
        while self.base < keep_from and self.buffer:
            self.buffer.popleft()
            self.base += 1


@dataclasses.dataclass
class TrackSummary:
    """Where and when one face was seen (frames relative to the video)."""

    face: int
    first_frame: int
    last_frame: int  # its last detection
    frames_found: int = 0
    box_sum: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(4))
    boxes: dict | None = None  # frame -> [x0, y0, x1, y1], kept when asked for

    @property
    def mean_box(self) -> list[float]:
        return [float(v) for v in self.box_sum / max(1, self.frames_found)]

    @property
    def num_frames(self) -> int:
        return self.last_frame - self.first_frame + 1


@dataclasses.dataclass
class TrackClip:
    face: int
    first_frame: int  # the track's first frame in the video
    clip: StreamClip


class FaceTimelines:
    """Frames of one video -> clips of every face in it, as they complete.

    `analyzer` (a `FaceAnalyzer`) finds, crops and draws; `faces`: "all", or "largest" (the largest
    face of each frame only). `keep_boxes` keeps each track's box per frame (for drawing)."""

    def __init__(self, analyzer, fps: float, clip_frames: int, long_frames: int, faces: str = "all",
                 bridge_seconds: float = BRIDGE_SECONDS, lost_seconds: float = TRACK_LOST_SECONDS,
                 keep_boxes: bool = False):
        if faces not in ("all", "largest"):
            raise ValueError(f"faces must be 'all' or 'largest', got {faces!r}")
        self.analyzer = analyzer
        self.n, self.m = clip_frames, long_frames
        self.faces = faces
        self.bridge = max(1, int(round(bridge_seconds * fps)))
        self.tracker = FaceTracker(max_lost=max(1, int(round(lost_seconds * fps))))
        self.keep_boxes = keep_boxes
        self.croppers: dict[int, TrackCropper] = {}
        self.cutters: dict[int, ClipCutter] = {}
        self.tracks: dict[int, TrackSummary] = {}
        self.num_frames = 0
        self.peak_frames_held = 0  # raw frames (the current one included) held at once
        self.peak_crops_held = 0
        self.skipped = SkipTally()  # the faces the analyzer left out, per reason
        analyzer.reset()

    def push(self, t: int, frame: np.ndarray) -> list[TrackClip]:
        if t != self.num_frames:
            raise ValueError(f"frames must come in order: expected {self.num_frames}, got {t}")
        self.num_frames += 1
        found = self.analyzer.find(frame)
        self.skipped.add(found.skipped)
        faces = [f.landmarks for f in found.faces]
        boxes = [f.box for f in found.faces]
        if self.faces == "largest" and len(faces) > 1:
            k = int(np.argmax([box_area(b) for b in boxes]))
            faces, boxes = [faces[k]], [boxes[k]]
        ids, closed = self.tracker.update(t, boxes)
        out = []
        for i in closed:
            out += self._close(i)
        for i, lm, box in zip(ids, faces, boxes):
            if i not in self.croppers:
                self.cutters[i] = ClipCutter(self.n, self.m)
                self.croppers[i] = TrackCropper(self.analyzer.crop, self.cutters[i],
                                                self.analyzer.crop_size, self.bridge)
                self.tracks[i] = TrackSummary(i, t, t, boxes={} if self.keep_boxes else None)
            summary = self.tracks[i]
            summary.last_frame, summary.frames_found = t, summary.frames_found + 1
            summary.box_sum = summary.box_sum + box
            if summary.boxes is not None:
                summary.boxes[t] = box
            self.croppers[i].found(t, frame, lm)
        for i, cropper in self.croppers.items():
            if i not in ids:
                cropper.missing(t, frame)
        for i, cutter in self.cutters.items():
            out += [TrackClip(i, self.tracks[i].first_frame, c) for c in cutter.take()]
        held = {u for c in self.croppers.values() for u, _ in c.pending} | {t}
        self.peak_frames_held = max(self.peak_frames_held, len(held))
        crops = sum(c.frames_held for c in self.cutters.values()) + \
            sum(len(c.unconfirmed) for c in self.croppers.values())
        self.peak_crops_held = max(self.peak_crops_held, crops)
        return out

    def finish(self) -> list[TrackClip]:
        """End of the video: the last clips of the faces still open."""
        out = []
        for i in self.tracker.close_all():
            out += self._close(i)
        return out

    def _close(self, i: int) -> list[TrackClip]:
        self.croppers.pop(i).finish()
        cutter = self.cutters.pop(i)
        cutter.finish()
        return [TrackClip(i, self.tracks[i].first_frame, c) for c in cutter.take()]
