"""Following faces from frame to frame by the overlap of their boxes.

A detection joins the open track whose last box it overlaps most (intersection over union at
least `min_iou`, each track and detection used once per frame, best pairs first); a detection that
joins none opens a new track. A track not seen for more than `max_lost` frames is closed, so a face
that comes back after longer than that is a new track.
"""

from __future__ import annotations

import dataclasses

import numpy as np

DEFAULT_MIN_IOU = 0.3


def landmark_box(landmarks: np.ndarray) -> np.ndarray:
    """68 landmarks [68, 2] in pixels -> their bounding box [x0, y0, x1, y1] (float64)."""
    lm = np.asarray(landmarks, np.float64)
    return np.concatenate([lm.min(axis=0), lm.max(axis=0)])


def box_area(box: np.ndarray) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes (0 when they do not touch)."""
    inter = box_area(np.array([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])]))
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


@dataclasses.dataclass
class OpenTrack:
    track_id: int
    first_frame: int
    last_seen: int
    box: np.ndarray  # the last detected box


class FaceTracker:
    """Assigns every frame's face boxes to tracks numbered 0, 1, ... in order of appearance."""

    def __init__(self, max_lost: int, min_iou: float = DEFAULT_MIN_IOU):
        if max_lost < 0:
            raise ValueError(f"max_lost must be >= 0 frames, got {max_lost}")
        if not 0.0 < min_iou <= 1.0:
            raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
        self.max_lost = int(max_lost)
        self.min_iou = float(min_iou)
        self.open: dict[int, OpenTrack] = {}
        self._next_id = 0

    def update(self, frame: int, boxes: list[np.ndarray]) -> tuple[list[int], list[int]]:
        """The boxes of frame `frame` -> (the track id of each box, the ids closed at this frame:
        tracks last seen more than `max_lost` frames before it)."""
        closed = [i for i, tr in self.open.items() if frame - tr.last_seen > self.max_lost]
        for i in closed:
            del self.open[i]
        pairs = sorted(((box_iou(tr.box, b), i, k) for i, tr in self.open.items()
                        for k, b in enumerate(boxes)), key=lambda p: (-p[0], p[1], p[2]))
        ids: list[int | None] = [None] * len(boxes)
        taken = set()
        for iou, i, k in pairs:
            if iou < self.min_iou:
                break
            if i in taken or ids[k] is not None:
                continue
            ids[k] = i
            taken.add(i)
        # New faces numbered from left to right, so that the numbering does not depend on the
        # detector's order.
        for k in sorted((k for k in range(len(boxes)) if ids[k] is None), key=lambda k: boxes[k][0]):
            ids[k] = self._next_id
            self.open[self._next_id] = OpenTrack(self._next_id, frame, frame, boxes[k])
            self._next_id += 1
        for k, i in enumerate(ids):
            self.open[i].last_seen = frame
            self.open[i].box = np.asarray(boxes[k], np.float64)
        return ids, closed

    def close_all(self) -> list[int]:
        closed = sorted(self.open)
        self.open.clear()
        return closed
