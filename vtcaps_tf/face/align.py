"""Aligned face crop: eyes level, the landmark box filling a fixed square with a margin, one warp."""

from __future__ import annotations

import dataclasses

import numpy as np

from vtcaps_tf.face.landmarks import check_landmarks68, eye_centres

DEFAULT_MARGIN = 0.2  # of the face size, on every side


@dataclasses.dataclass
class AlignedFace:
    crop: np.ndarray  # uint8 [S, S, 3]
    landmarks: np.ndarray  # float32 [68, 2], crop pixels / S, i.e. in [0, 1] for a face inside
    matrix: np.ndarray  # float64 [2, 3], image pixels -> crop pixels


def alignment_matrix(landmarks68, crop_size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The affine [2, 3] that levels the eyes and maps the landmark box, plus the margin, onto
    a `crop_size` square (image pixels -> crop pixels)."""
    if crop_size < 1:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    lm = check_landmarks68(landmarks68).astype(np.float64)
    left, right = eye_centres(lm)
    angle = np.arctan2(right[1] - left[1], right[0] - left[0])
    c, s = np.cos(-angle), np.sin(-angle)
    rot = np.array([[c, -s], [s, c]])  # rotates the eye line onto the x axis
    rotated = lm @ rot.T
    lo, hi = rotated.min(axis=0), rotated.max(axis=0)
    extent = max(float(np.max(hi - lo)), 1e-6) * (1.0 + 2.0 * margin)
    scale = crop_size / extent
    centre = 0.5 * (lo + hi)
    linear = scale * rot
    shift = np.array([crop_size / 2.0, crop_size / 2.0]) - scale * centre
    return np.concatenate([linear, shift[:, None]], axis=1)


def align_face(image: np.ndarray, landmarks68, crop_size: int,
               margin: float = DEFAULT_MARGIN) -> AlignedFace:
    """RGB image [H, W, 3] and its 68 landmarks in pixels -> the aligned `crop_size` crop and the
    landmarks carried through the same affine, divided by `crop_size`."""
    import cv2  # heavy: imported on use

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    matrix = alignment_matrix(landmarks68, crop_size, margin)
    crop = cv2.warpAffine(np.ascontiguousarray(image, dtype=np.uint8), matrix, (crop_size, crop_size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    lm = np.asarray(landmarks68, np.float64)
    lm_crop = lm @ matrix[:, :2].T + matrix[:, 2]
    return AlignedFace(crop, (lm_crop / crop_size).astype(np.float32), matrix)
