"""A face track for a whole video: landmarks, aligned crops and AU maps for every frame."""

from __future__ import annotations

import dataclasses

import numpy as np

from vtcaps_tf.face.align import DEFAULT_MARGIN, align_face
from vtcaps_tf.face.landmarks import NUM_LANDMARKS


class NoFaceError(ValueError):
    """No frame of the video shows a face; `num_frames`: how many frames were looked at."""

    def __init__(self, message: str = "no frame has a face", num_frames: int = 0):
        super().__init__(message)
        self.num_frames = num_frames


@dataclasses.dataclass
class FaceTrack:
    crops: np.ndarray  # uint8 [T, S, S, 3], aligned face crops (a list of encoded crops: see analyze_stream)
    landmarks: np.ndarray  # float32 [T, 68, 2] in [0, 1] crop coordinates
    found: np.ndarray  # bool [T]: a face was detected (or given) in this frame

    @property
    def num_frames(self) -> int:
        return int(self.found.shape[0])

    @property
    def num_missing(self) -> int:
        return int(np.sum(~self.found))


def nearest_found(found: np.ndarray) -> np.ndarray:
    """For every frame, the index of the nearest frame with a face (the earlier one on a tie)."""
    found = np.asarray(found, bool)
    idx = np.flatnonzero(found)
    if idx.size == 0:
        raise NoFaceError("no frame has a face")
    t = np.arange(found.size)
    pos = np.clip(np.searchsorted(idx, t), 0, idx.size - 1)
    before = idx[np.maximum(pos - 1, 0)]
    after = idx[pos]
    return np.where(np.abs(t - before) <= np.abs(after - t), before, after)


@dataclasses.dataclass
class StreamedTrack:
    """What `FaceAnalyzer.analyze_stream` gives: the face track, the number of frames read, and
    the most faces any one frame showed (more than 1: the video shows several people; with
    `count_faces_every`, of the frames counted)."""

    track: FaceTrack
    num_frames: int
    max_faces: int
    peak_frames_held: int


class _Collector:
    """TrackCropper sink keeping every frame's crop (the whole-video `FaceTrack`), as pixels or, with
    `encode`, as what `encode(crop)` gives (JPEG bytes: a few KB a frame instead of S*S*3)."""

    def __init__(self, encode=None):
        self.encode = encode
        self.crops, self.landmarks, self.found = [], [], []

    def push(self, fc):
        self.crops.append(fc.crop if self.encode is None else self.encode(fc.crop))
        self.landmarks.append(fc.landmarks)
        self.found.append(fc.found)


class FaceAnalyzer:
    """Finds the faces of every frame (`face.finder.FaceFinder`: full-range detector, then the
    mesh on each face -> 68 landmarks), aligns a `crop_size` crop (the model draws the AU map from
    the crop's landmarks). Open one per worker (`DoFn.setup()`), `close()` when done.
    `max_num_faces`: the most faces analysed in one frame, the largest (the others are reported
    as skipped, `find`); `video`: follow the faces from frame to frame."""

    def __init__(self, crop_size: int, video: bool = True, margin: float = DEFAULT_MARGIN,
                 max_num_faces: int = 1):
        if crop_size < 8:
            raise ValueError(f"crop_size must be at least 8 pixels, got {crop_size}")
        from vtcaps_tf.face.finder import FaceFinder

        self.crop_size = int(crop_size)
        self.video = video
        self.margin = float(margin)
        self._finder = FaceFinder(video=video, max_faces=max_num_faces)

    def reset(self):
        """Forget the followed faces: the next frame starts a new video."""
        if self._finder is None:
            raise RuntimeError("FaceAnalyzer is closed")
        self._finder.reset()

    def find(self, frame: np.ndarray):
        """RGB frame -> its `FrameFaces`: the faces analysed (largest first) and those skipped."""
        if self._finder is None:
            raise RuntimeError("FaceAnalyzer is closed")
        return self._finder.find(frame)

    def detect_faces(self, frame: np.ndarray) -> list[np.ndarray]:
        """RGB frame -> the 68 landmarks [68, 2] in pixels of every face analysed, largest first."""
        return [f.landmarks for f in self.find(frame).faces]

    def crop(self, frame: np.ndarray, landmarks_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(aligned crop uint8 [S, S, 3], landmarks [68, 2] in crop coordinates / S)."""
        aligned = align_face(frame, landmarks_px, self.crop_size, self.margin)
        return aligned.crop, aligned.landmarks

    def detect_landmarks(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frames [T, H, W, 3] -> (68 landmarks in pixels [T, 68, 2] (NaN where none), found [T])."""
        self.reset()  # each video starts without a tracked face
        out = np.full((len(frames), NUM_LANDMARKS, 2), np.nan, np.float32)
        found = np.zeros(len(frames), bool)
        for t, frame in enumerate(frames):
            faces = self.detect_faces(frame)
            if faces:
                out[t] = _largest(faces)
                found[t] = True
        return out, found

    def analyze_stream(self, frames, landmarks=None, bridge: int | None = None,
                       encode=None) -> StreamedTrack:
        """RGB frames, one at a time (any iterable), -> the video's one face track, reading each
        frame once and keeping its aligned crop only.

        The subject is the largest face of each frame analysed (with `max_num_faces` 1: the
        largest at each detection, followed in between); `max_faces` counts every face seen,
        analysed or skipped. A frame without a face takes the landmarks
        of the nearest frame with one (its own pixels are kept); `bridge` bounds the raw frames
        held to find the next one (None: no bound, exactly the nearest frame; with a bound, the
        older frames of a longer gap take the face before it, and frames before the first face
        beyond the bound are grey). `landmarks`: [T, 68, 2] pixels given per frame (a dataset's
        own, e.g. CK+) skip detection; rows of NaN count as frames without a face.
        Raises `NoFaceError` when no frame has a face.
        `encode(crop) -> bytes`: keep each crop encoded (`track.crops` is then a list), so that
        what is held grows by a few KB a frame only.
        """
        from vtcaps_tf.face.streaming import TrackCropper

        if landmarks is not None:
            landmarks = np.asarray(landmarks, np.float32)
            if landmarks.ndim != 3 or landmarks.shape[1:] != (NUM_LANDMARKS, 2):
                raise ValueError(f"landmarks must be [T, {NUM_LANDMARKS}, 2], got {landmarks.shape}")
        else:
            self.reset()  # each video starts without a tracked face
        sink = _Collector(encode)
        cropper = TrackCropper(self.crop, sink, self.crop_size, bridge, whole_video=True)
        t, max_faces, peak = 0, 0, 0
        for t, frame in enumerate(frames):
            frame = np.asarray(frame)
            if frame.ndim != 3 or frame.shape[-1] != 3:
                raise ValueError(f"expected RGB frames [H, W, 3], got {frame.shape}")
            if landmarks is not None:
                if t >= len(landmarks):
                    raise ValueError(f"landmarks must be [T, {NUM_LANDMARKS}, 2] for every frame, "
                                     f"got {len(landmarks)}")
                faces = [landmarks[t]] if np.all(np.isfinite(landmarks[t])) else []
                seen = len(faces)
            else:
                found = self.find(frame)
                faces, seen = [f.landmarks for f in found.faces], found.num_seen
            max_faces = max(max_faces, seen)
            if faces:
                cropper.found(t, frame, _largest(faces))
            else:
                cropper.missing(t, frame)
            peak = max(peak, cropper.frames_held + 1)
            t += 1
        if landmarks is not None and t != len(landmarks):
            raise ValueError(f"landmarks must be [{t}, {NUM_LANDMARKS}, 2], got {landmarks.shape}")
        if not cropper.finish():
            raise NoFaceError(f"no face in any of {t} frames", num_frames=t)
        crops = np.stack(sink.crops) if encode is None else sink.crops
        track = FaceTrack(crops, np.stack(sink.landmarks).astype(np.float32), np.array(sink.found, bool))
        return StreamedTrack(track, t, max_faces, peak)

    def analyze(self, frames: np.ndarray, landmarks: np.ndarray | None = None) -> FaceTrack:
        """RGB frames uint8 [T, H, W, 3] -> `FaceTrack`.

        `landmarks` [T, 68, 2] in pixels (a dataset's own, e.g. CK+) skips detection; rows of NaN
        count as frames without a face. A frame without a face takes the landmarks of the nearest
        frame with one (its own pixels are kept). Raises `NoFaceError` when no frame has a face.
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
            raise ValueError(f"expected RGB frames [T, H, W, 3] with T >= 1, got {frames.shape}")
        if landmarks is not None and np.shape(landmarks) != (len(frames), NUM_LANDMARKS, 2):
            raise ValueError(f"landmarks must be [{len(frames)}, {NUM_LANDMARKS}, 2], "
                             f"got {np.shape(landmarks)}")
        return self.analyze_stream(frames, landmarks, bridge=None).track

    def close(self):
        if self._finder is not None:
            self._finder.close()
            self._finder = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _largest(faces: list[np.ndarray]) -> np.ndarray:
    """The face with the largest landmark box."""
    from vtcaps_tf.face.tracking import box_area, landmark_box

    return max(faces, key=lambda lm: box_area(landmark_box(lm)))
