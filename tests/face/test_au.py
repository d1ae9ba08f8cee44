"""AU centres and attention maps against the EAC-Net table (docs/design.md section 4) and hand-worked values."""

import numpy as np
import pytest

from vtcaps_tf.face import au_attention_map, au_centres


def _indexed_landmarks():
    """Landmark i at (i, 2 i + 10): every centre can be read off the table by hand."""
    i = np.arange(68, dtype=np.float32)
    return np.stack([i, 2 * i + 10], axis=1)


def test_au_centres_follow_the_table():
    lm = _indexed_landmarks()
    r = 3.0  # |x39 - x42| = |39 - 42|
    y = lambda k: 2 * k + 10  # noqa: E731
    expected = [
        (21, y(21) - r / 2), (22, y(22) - r / 2),  # AU1
        (18, y(18) - r / 3), (25, y(25) - r / 3),  # AU2
        (19, y(19) + r / 3), (24, y(24) + r / 3),  # AU4
        (41, y(41) + r), (46, y(46) + r),  # AU6
        (38, y(38)), (43, y(43)),  # AU7
        (49, y(49)), (53, y(53)),  # AU10
        (48, y(48)), (54, y(54)),  # AU12/14
        (51, y(51)), (57, y(57)),  # AU17
        (61, y(61)), (63, y(63)),  # AU23/24
        (56, y(56) + r / 2), (58, y(58) + r / 2),  # AU23 chin
    ]
    np.testing.assert_allclose(au_centres(lm), np.array(expected, np.float32), atol=1e-5)


def test_single_centre_map_hand_worked():
    # Every landmark at (30, 60) and r = 0: all twenty centres coincide at x=30, y=60.
    lm = np.tile(np.float32([[30.0, 60.0]]), (68, 1))
    m = au_attention_map(lm, size=100)
    assert m.shape == (100, 100) and m.dtype == np.float32
    assert m[60, 30] == pytest.approx(1.0)  # map[y, x]
    assert m[60, 31] == pytest.approx(0.905)  # d = 1
    assert m[61, 31] == pytest.approx(0.81)  # d = 2
    assert m[60, 37] == pytest.approx(0.335)  # d = 7, edge of the square
    assert m[53, 30] == pytest.approx(0.335)
    assert m[65, 35] == pytest.approx(0.05)  # d = 10
    assert m[66, 35] == 0.0  # d = 11: 1 - 1.045 < 0
    assert m[60, 38] == 0.0  # outside the 15x15 square
    assert m[67, 37] == 0.0  # corner of the square, d = 14
    # Weight of the whole map, by hand: 4d pixels at distance d <= 7; beyond, the square cuts the
    # diamond: 28 pixels at d = 8, 24 at d = 9, 20 at d = 10 (w <= 0 from d = 11 on).
    # 1 + (4*28 - 0.38*140) + 28*0.24 + 24*0.145 + 20*0.05 = 1 + 58.8 + 6.72 + 3.48 + 1 = 71.0
    assert m.sum() == pytest.approx(71.0, rel=1e-5)


def _brute_force_map(lm, size):
    """Pixel-by-pixel reference: max over centres of max(0, 1 - 0.095 d) inside 15x15 squares."""
    centres = np.clip(np.rint(au_centres(lm)), 0, size - 1)
    out = np.zeros((size, size))
    for y in range(size):
        for x in range(size):
            for cx, cy in centres:
                if abs(x - cx) <= 7 and abs(y - cy) <= 7:
                    out[y, x] = max(out[y, x], 1 - 0.095 * (abs(x - cx) + abs(y - cy)))
    return out


def test_overlapping_squares_take_the_maximum():
    rng = np.random.default_rng(0)
    lm = rng.uniform(20, 40, size=(68, 2)).astype(np.float32)  # crowded: many overlaps
    np.testing.assert_allclose(au_attention_map(lm, size=60), _brute_force_map(lm, 60), atol=1e-6)


def test_centres_outside_the_grid_are_clipped():
    lm = np.tile(np.float32([[-25.0, 140.0]]), (68, 1))
    m = au_attention_map(lm, size=100)
    assert m[99, 0] == pytest.approx(1.0)
    assert m[92, 7] == pytest.approx(1 - 0.095 * 14 if 1 - 0.095 * 14 > 0 else 0.0)
    assert m[99, 7] == pytest.approx(0.335)


def test_bad_landmarks_raise_clear_errors():
    with pytest.raises(ValueError, match="68 landmarks"):
        au_attention_map(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        au_attention_map(np.full((68, 2), np.nan))
