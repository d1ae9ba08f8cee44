"""AU attention stream: the shared layer test, and resampling against hand-worked / numpy values."""

import numpy as np
import pytest

from layer_test import run_layer_test
from vtcaps_tf.layers import AUAttention
from vtcaps_tf.layers.au_attention import area_resize_matrix


def test_layer_test():
    rng = np.random.default_rng(0)
    data = [rng.normal(size=(2, 4, 10, 10, 3)).astype("float32"),
            rng.uniform(size=(2, 4, 100, 100)).astype("float32")]
    run_layer_test(AUAttention, {}, data, (2, 4, 10, 10, 3), expect_trainable_weights=False)


def test_area_matrix_hand_worked():
    # 3 cells -> 2: each output covers 1.5 input cells.
    np.testing.assert_allclose(area_resize_matrix(3, 2), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]], atol=1e-7)
    # 2 -> 4 (upsampling): each input cell is repeated twice.
    np.testing.assert_allclose(area_resize_matrix(2, 4), [[1, 0], [1, 0], [0, 1], [0, 1]])


def test_integer_factor_is_block_mean_broadcast_over_channels():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, 2, 10, 10, 3)).astype("float32")
    au_map = rng.uniform(size=(2, 4, 100, 100)).astype("float32")
    got = np.array(AUAttention()([features, au_map]))
    # 4 frames -> 2 and 100x100 -> 10x10: means over 2 x 10 x 10 blocks.
    blocks = au_map.reshape(2, 2, 2, 10, 10, 10, 10).mean(axis=(2, 4, 6))
    np.testing.assert_allclose(got, features * blocks[..., None], rtol=1e-5, atol=1e-6)


def test_small_au_square_keeps_its_mass_when_downsampled():
    au_map = np.zeros((1, 1, 100, 100), np.float32)
    au_map[0, 0, 40:55, 60:75] = 1.0  # one 15x15 AU square
    features = np.ones((1, 1, 4, 4, 1), np.float32)
    out = np.array(AUAttention()([features, au_map]))[0, 0, :, :, 0]
    # 25x25-pixel cells: rows 40-54 fall in row-cell 1 (rows 40-49) and 2 (rows 50-54);
    # columns 60-74 all fall in column-cell 2 (columns 50-74).
    want = np.zeros((4, 4))
    want[1, 2] = 10 * 15 / 625
    want[2, 2] = 5 * 15 / 625
    np.testing.assert_allclose(out, want, atol=1e-6)
    assert np.isclose(out.mean(), au_map.mean())


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="features"):
        AUAttention()([np.zeros((1, 2, 4, 4), "float32"), np.zeros((1, 2, 100, 100), "float32")])
    with pytest.raises(ValueError, match="positive"):
        area_resize_matrix(0, 3)
