"""EAC-Net AU centres and the 100x100 AU attention map (paper 3.1.2, Eq. 2; docs/design.md section 4)."""

from __future__ import annotations

import numpy as np

from vtcaps_tf.config.presets import AU_MAP_SIZE
from vtcaps_tf.face.landmarks import check_landmarks68

NUM_AU_CENTRES = 20
HALF_WIDTH = 7  # 15x15 square around each centre
SLOPE = 0.095  # w = 1 - 0.095 * manhattan distance

# (landmark index, dy in units of r) for centre A and centre B of each AU row; image y grows down.
_AU_TABLE = (
    ("AU1", (21, -1 / 2), (22, -1 / 2)),
    ("AU2", (18, -1 / 3), (25, -1 / 3)),
    ("AU4", (19, 1 / 3), (24, 1 / 3)),
    ("AU6", (41, 1.0), (46, 1.0)),
    ("AU7", (38, 0.0), (43, 0.0)),
    ("AU10", (49, 0.0), (53, 0.0)),
    ("AU12/14", (48, 0.0), (54, 0.0)),
    ("AU17", (51, 0.0), (57, 0.0)),
    ("AU23/24", (61, 0.0), (63, 0.0)),
    ("AU23 (chin)", (56, 1 / 2), (58, 1 / 2)),
)
AU_NAMES = tuple(name for name, _, _ in _AU_TABLE)


def au_centres(landmarks68) -> np.ndarray:
    """The 20 AU centres [20, 2] (x, y), two per AU row of the table, in the landmarks' units.

    r = |x39 - x42|, the distance between the inner eye corners along x.
    """
    lm = check_landmarks68(landmarks68)
    r = abs(float(lm[39, 0] - lm[42, 0]))
    out = np.empty((NUM_AU_CENTRES, 2), np.float32)
    for row, (_, a, b) in enumerate(_AU_TABLE):
        for col, (idx, dy) in enumerate((a, b)):
            out[2 * row + col] = (lm[idx, 0], lm[idx, 1] + dy * r)
    return out


def au_attention_map(landmarks68, size: int = AU_MAP_SIZE) -> np.ndarray:
    """The AU attention map [size, size] float32 in [0, 1].

    `landmarks68` are in the map's pixel coordinates (x right, y down), e.g. crop landmarks in
    [0, 1] times `size`. Each centre is rounded to the nearest pixel and clipped into the grid; the
    pixels of the 15x15 square around it get w = max(0, 1 - 0.095 * manhattan distance);
    overlapping squares take the maximum.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    centres = np.clip(np.rint(au_centres(landmarks68)), 0, size - 1).astype(np.int64)  # [20, 2]
    out = np.zeros((size, size), np.float32)
    k = HALF_WIDTH
    for cx, cy in centres:  # 20 small slices: much cheaper than a scatter over 20 x 225 pixels
        y0, y1 = max(cy - k, 0), min(cy + k + 1, size)
        x0, x1 = max(cx - k, 0), min(cx + k + 1, size)
        window = _KERNEL[y0 - cy + k:y1 - cy + k, x0 - cx + k:x1 - cx + k]
        np.maximum(out[y0:y1, x0:x1], window, out=out[y0:y1, x0:x1])
    return out


def _square_kernel() -> np.ndarray:
    """The 15x15 weights max(0, 1 - 0.095 * manhattan distance to the centre)."""
    offsets = np.abs(np.arange(-HALF_WIDTH, HALF_WIDTH + 1))
    return np.maximum(0.0, 1.0 - SLOPE * (offsets[:, None] + offsets[None, :])).astype(np.float32)


_KERNEL = _square_kernel()
