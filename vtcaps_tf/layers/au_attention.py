"""The AU-perceived attention stream (paper 3.1.2, Fig 3/4; docs/design.md section 4).

The 100x100 AU attention map of every frame is resized to the feature map after the stem's
max-pool (space and time), broadcast over channels and multiplied with the features. The first
residual block of stage 1 adds this stream to its convolution branch: `out = F(x) + x * map`.
"""

from __future__ import annotations

import keras
import numpy as np


def area_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of area (box) resampling: output cell j averages the input over
    [j * n_in / n_out, (j + 1) * n_in / n_out), each input cell weighted by its overlap.

    Unlike bilinear sampling, downsampling a map with small 15x15 AU squares this way keeps their
    mass, however large the factor. Rows sum to 1.
    """
    if n_in <= 0 or n_out <= 0:
        raise ValueError(f"sizes must be positive, got {n_in} -> {n_out}")
    scale = n_in / n_out
    starts = np.arange(n_out)[:, None] * scale
    ends = starts + scale
    cells = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(ends, cells + 1) - np.maximum(starts, cells), 0.0, None)
    return (overlap / scale).astype(np.float32)


@keras.saving.register_keras_serializable(package="vtcaps")
class AUAttention(keras.layers.Layer):
    """`[features [B,T,H,W,C], au_map [B,N,A,A]] -> features * resize(au_map) [B,T,H,W,C]`.

    The map is area-resampled from (N, A, A) to (T, H, W) (static sizes, resampling by three small
    matrix products, so it runs under XLA and on any device) and broadcast over the channels.
    """

    def build(self, input_shape):
        if not (isinstance(input_shape, (list, tuple)) and len(input_shape) == 2):
            raise ValueError("AUAttention takes [features, au_map]")
        feat_shape, map_shape = input_shape
        if len(feat_shape) != 5 or len(map_shape) != 4:
            raise ValueError(f"AUAttention expects features [B,T,H,W,C] and au_map [B,N,A,A], "
                             f"got {tuple(feat_shape)} and {tuple(map_shape)}")
        if any(d is None for d in tuple(feat_shape[1:4]) + tuple(map_shape[1:])):
            raise ValueError("AUAttention needs static time and spatial sizes, got "
                             f"{tuple(feat_shape)} and {tuple(map_shape)}")

    def resize_map(self, au_map, size):
        """au_map [B,N,A,A] -> [B,T,H,W] by area resampling to `size` = (T, H, W)."""
        n, a_h, a_w = au_map.shape[1:]
        t, h, w = size
        dtype = au_map.dtype
        m = au_map
        if (a_w, a_h) != (w, h):
            m = keras.ops.einsum("bnyx,wx->bnyw", m, keras.ops.convert_to_tensor(
                area_resize_matrix(a_w, w), dtype=dtype))
            m = keras.ops.einsum("bnyw,hy->bnhw", m, keras.ops.convert_to_tensor(
                area_resize_matrix(a_h, h), dtype=dtype))
        if n != t:
            m = keras.ops.einsum("bnhw,tn->bthw", m, keras.ops.convert_to_tensor(
                area_resize_matrix(n, t), dtype=dtype))
        return m

    def call(self, inputs):
        features, au_map = inputs
        au_map = keras.ops.cast(au_map, features.dtype)
        attention = self.resize_map(au_map, tuple(features.shape[1:4]))
        return features * keras.ops.expand_dims(attention, -1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])
