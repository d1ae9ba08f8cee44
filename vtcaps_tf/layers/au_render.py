"""The EAC-Net AU attention map drawn inside the model from each frame's 68 landmarks.

`AUMapRender(size)`: landmarks [B, N, 68, 2] (x, y in [0, 1] of the face crop) -> AU maps
[B, N, size, size] in [0, 1], equal to `vtcaps_tf.face.au.au_attention_map(landmarks * size,
size)` frame by frame: the 20 AU centres of the EAC-Net table (`face.au`), each rounded to the
nearest pixel (half to even, like np.rint) and clipped into the grid, a 15x15 square of
max(0, 1 - 0.095 * manhattan distance) around each, overlapping squares taking the maximum.

Every op is float32 (and one int32 table index): the graph converts to TFLite builtins alone
(`vtcaps_tf.export.tflite`), with no Select TF op for float64 or uint8 arithmetic.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from vtcaps_tf.face import au as au_lib
from vtcaps_tf.face.landmarks import NUM_LANDMARKS

# Dekker's splitting constant for float32 (2^12 + 1): a * SPLIT splits a 24-bit significand into
# two halves of 12 bits, whose products with another 12-bit half are exact in float32.
_SPLIT = np.float32(4097.0)


def _table():
    """(landmark index [20], dy in units of r [20]) of the AU centres, in `au_centres`' order."""
    idx, dy = [], []
    for _, a, b in au_lib._AU_TABLE:
        for i, d in (a, b):
            idx.append(i)
            dy.append(d)
    return np.array(idx, np.int32), np.array(dy, np.float64)


def _split_np(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 a -> (high, low) float32 halves of 12 significant bits, a == high + low exactly."""
    a = np.asarray(a, np.float32)
    c = _SPLIT * a
    high = c - (c - a)
    return high, a - high


def _split(a):
    """`_split_np` on a tensor (the same float32 operations, in the same order)."""
    c = a * _SPLIT
    high = c - (c - a)
    return high, a - high


def offset_rounded_once(y, dy: np.ndarray, r):
    """float32(y + dy * r) as numpy evaluates it in the reference (dy float64, y and r float32
    promoted to float64, one rounding to float32 at the end), in float32 arithmetic alone.

    dy is carried as a float32 pair (high + low), the products dy_high * r exactly as a float32
    pair (Dekker's product), and the sum with y exactly as a pair (Knuth's two-sum); the pair is
    rounded once to float32. It differs from the float64 evaluation by less than 2^-45 of the
    operands' size: the float32 results differ only for values that close to a float32 rounding
    boundary.

    Each step is a subtraction, in the order these error-free sums need: TensorFlow's graph
    optimizer gathers trees of additions into one AddN, summed in another order, and factors
    common terms out of sums of products; it leaves subtractions alone."""
    dy_high = dy.astype(np.float32)
    dy_low = (dy - dy_high.astype(np.float64)).astype(np.float32)
    dh_high, dh_low = _split_np(dy_high)
    r_high, r_low = _split(r)
    # dy_high * r == p + p_err exactly (Dekker), each partial sum exact.
    p = r * dy_high
    p_err = (((r_high * dh_high - p) - r_low * -dh_high) - r_high * -dh_low) - r_low * -dh_low
    # y + p == s - neg_s_err exactly (Knuth).
    s = y + p
    p_virtual = s - y
    neg_s_err = ((s - p_virtual) - y) - (p - p_virtual)
    return s - ((neg_s_err - p_err) - r * dy_low)


@keras.saving.register_keras_serializable(package="vtcaps")
class AUMapRender(keras.layers.Layer):
    """`landmarks [B,N,68,2] in [0,1] -> AU attention maps [B,N,size,size]` (float32 always)."""

    def __init__(self, size: int = au_lib.AU_MAP_SIZE, **kwargs):
        # The map's values are exact (the numpy reference's) whatever the mixed-precision policy.
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if int(size) < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.size = int(size)
        self._idx, self._dy = _table()
        # Weight by Manhattan distance 0..2k inside a square, and 0 at `far` = 2k + 1 (outside it),
        # computed as the reference computes them (float64, then float32), so that the maps agree
        # bit for bit.
        d = np.arange(2 * au_lib.HALF_WIDTH + 1)
        weights = np.maximum(0.0, 1.0 - au_lib.SLOPE * d)
        self._by_distance = np.append(weights, 0.0).astype(np.float32)

    def build(self, input_shape):
        if len(input_shape) < 2 or tuple(input_shape[-2:]) != (NUM_LANDMARKS, 2):
            raise ValueError(f"AUMapRender takes landmarks [..., {NUM_LANDMARKS}, 2], "
                             f"got {tuple(input_shape)}")

    def call(self, landmarks):
        size, k = self.size, au_lib.HALF_WIDTH
        lm = ops.cast(landmarks, "float32") * float(size)  # the map's pixel units
        x, y = lm[..., 0], lm[..., 1]
        r = ops.abs(x[..., 39] - x[..., 42])  # inner eye corners' distance along x
        idx = ops.convert_to_tensor(self._idx)
        cx = ops.take(x, idx, axis=-1)  # [..., 20]
        cy = offset_rounded_once(ops.take(y, idx, axis=-1), self._dy, r[..., None])
        # Whole pixels in float32 (exact): the centres, the grid and their offsets.
        cx = ops.clip(ops.round(cx), 0.0, float(size - 1))
        cy = ops.clip(ops.round(cy), 0.0, float(size - 1))
        grid = ops.arange(size, dtype="float32")
        # Per centre, each pixel's offsets along x and y; an offset outside the square becomes
        # `far`, so any pixel outside it gets a distance >= far, whose weight is 0.
        far = float(2 * k + 1)

        def offsets(centre):  # [..., 20] -> [..., 20, size]
            d = ops.abs(grid - centre[..., None])
            return ops.where(d <= k, d, far)

        ax, ay = offsets(cx), offsets(cy)
        # The weight falls with the distance, so the maximum over the centres' weights is the
        # weight of the smallest distance: a running minimum (no [..., 20, size, size] tensor),
        # then one table lookup.
        nearest = None
        for c in range(len(self._idx)):
            dist = ay[..., c, :, None] + ax[..., c, None, :]  # [..., size(y), size(x)], <= 2 * far
            nearest = dist if nearest is None else ops.minimum(nearest, dist)
        weights = ops.convert_to_tensor(self._by_distance)  # [far + 1]
        return ops.take(weights, ops.cast(ops.minimum(nearest, far), "int32"))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-2]) + (self.size, self.size)

    def get_config(self):
        return {**super().get_config(), "size": self.size}
