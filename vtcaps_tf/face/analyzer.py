"""A face track for a whole video: landmarks, aligned crops and AU maps for every frame."""

from __future__ import annotations

import dataclasses

import numpy as np

from vtcaps_tf.face.align import DEFAULT_MARGIN, align_face
from vtcaps_tf.face.au import AU_MAP_SIZE, au_attention_map
from vtcaps_tf.face.landmarks import NUM_LANDMARKS, landmarks68


class NoFaceError(ValueError):
    """No frame of the video shows a face."""


@dataclasses.dataclass
class FaceTrack:
    crops: np.ndarray  # uint8 [T, S, S, 3], aligned face crops
    landmarks: np.ndarray  # float32 [T, 68, 2] in [0, 1] crop coordinates
    au_maps: np.ndarray  # float32 [T, 100, 100]
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


class FaceAnalyzer:
    """Detects the face (MediaPipe mesh -> 68 landmarks) in every frame, aligns a `crop_size`
    crop and draws the AU map. Open one per worker (`DoFn.setup()`), `close()` when done."""

    def __init__(self, crop_size: int, video: bool = True, margin: float = DEFAULT_MARGIN,
                 au_size: int = AU_MAP_SIZE):
        if crop_size < 8:
            raise ValueError(f"crop_size must be at least 8 pixels, got {crop_size}")
        from vtcaps_tf.face.mesh import FaceMesh

        self.crop_size = int(crop_size)
        self.video = video
        self.margin = float(margin)
        self.au_size = int(au_size)
        self._mesh = FaceMesh(video=video)

    def detect_landmarks(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frames [T, H, W, 3] -> (68 landmarks in pixels [T, 68, 2] (NaN where none), found [T])."""
        if self._mesh is None:
            raise RuntimeError("FaceAnalyzer is closed")
        self._mesh.reset()  # each video starts without a tracked face
        out = np.full((len(frames), NUM_LANDMARKS, 2), np.nan, np.float32)
        found = np.zeros(len(frames), bool)
        for t, frame in enumerate(frames):
            mesh = self._mesh.detect(frame)
            if mesh is not None:
                out[t] = landmarks68(mesh)
                found[t] = True
        return out, found

    def analyze(self, frames: np.ndarray, landmarks: np.ndarray | None = None) -> FaceTrack:
        """RGB frames uint8 [T, H, W, 3] -> `FaceTrack`.

        `landmarks` [T, 68, 2] in pixels (a dataset's own, e.g. CK+) skips detection; rows of NaN
        count as frames without a face. A frame without a face takes the landmarks of the nearest
        frame with one (its own pixels are kept). Raises `NoFaceError` when no frame has a face.
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
            raise ValueError(f"expected RGB frames [T, H, W, 3] with T >= 1, got {frames.shape}")
        if landmarks is None:
            lm_px, found = self.detect_landmarks(frames)
        else:
            lm_px = np.asarray(landmarks, np.float32)
            if lm_px.shape != (len(frames), NUM_LANDMARKS, 2):
                raise ValueError(f"landmarks must be [{len(frames)}, 68, 2], got {lm_px.shape}")
            found = np.all(np.isfinite(lm_px), axis=(1, 2))
        source = nearest_found(found)
        s = self.crop_size
        crops = np.empty((len(frames), s, s, 3), np.uint8)
        lm01 = np.empty((len(frames), NUM_LANDMARKS, 2), np.float32)
        au_maps = np.empty((len(frames), self.au_size, self.au_size), np.float32)
        for t, frame in enumerate(frames):
            aligned = align_face(frame, lm_px[source[t]], s, self.margin)
            crops[t] = aligned.crop
            lm01[t] = aligned.landmarks
            au_maps[t] = au_attention_map(aligned.landmarks * self.au_size, self.au_size)
        return FaceTrack(crops, lm01, au_maps, found)

    def close(self):
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
