"""MediaPipe's 468 face-mesh points -> the 68 iBUG landmarks (docs/design.md section 4).

The table is the public mapping of PeizhiYan/Mediapipe_2_Dlib_Landmarks: dlib index -> mesh index,
a pair meaning the mean of the two mesh points.
"""

from __future__ import annotations

import numpy as np

NUM_LANDMARKS = 68

# dlib (0-based iBUG) index -> mesh index or pair of mesh indices (averaged).
MESH_TO_68: tuple = (
    # jaw 0-16
    127, 234, 93, (132, 58), (58, 172), 136, 150, 176, 152, 400, 379, 365, (397, 288), 361, 323,
    454, 356,
    # brows 17-26
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose 27-35
    (168, 6), (197, 195), 5, 4, 75, 97, 2, 326, 305,
    # eyes 36-47
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    # outer lip 48-59
    61, 39, 37, 0, 267, 269, 291, 321, 314, 17, 84, 91,
    # inner lip 60-67
    78, 82, 13, 312, 308, 317, 14, 87,
)
assert len(MESH_TO_68) == NUM_LANDMARKS


def _index_pairs() -> np.ndarray:
    """[68, 2] mesh indices; a single index is repeated so that the mean of the pair is the point."""
    return np.array([e if isinstance(e, tuple) else (e, e) for e in MESH_TO_68], dtype=np.int64)


def landmarks68(mesh_points) -> np.ndarray:
    """Mesh points [468, 2] (or [468, 3]; any units) -> the 68 iBUG landmarks [68, 2] float32."""
    pts = np.asarray(mesh_points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[0] < 468 or pts.shape[1] < 2:
        raise ValueError(f"expected face-mesh points [468, 2], got shape {pts.shape}")
    pairs = _index_pairs()
    return (0.5 * (pts[pairs[:, 0], :2] + pts[pairs[:, 1], :2])).astype(np.float32)


def check_landmarks68(landmarks) -> np.ndarray:
    """The 68 landmarks as float32 [68, 2], or a clear error."""
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected 68 landmarks [68, 2], got shape {lm.shape}")
    if not np.all(np.isfinite(lm)):
        raise ValueError("landmarks contain NaN or infinity")
    return lm


def eye_centres(landmarks) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the two eyes (image-left 36-41, image-right 42-47)."""
    lm = check_landmarks68(landmarks)
    return lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
