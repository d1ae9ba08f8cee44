"""AUMapRender: the AU map drawn inside the model equals the numpy reference
`vtcaps_tf.face.au.au_attention_map(landmarks * size, size)` exactly, frame by frame."""

import functools

import numpy as np
import pytest

from layer_test import run_layer_test
from vtcaps_tf.face.au import au_attention_map
from vtcaps_tf.layers import AUMapRender


@functools.lru_cache(maxsize=1)
def _real_face01() -> np.ndarray:
    """A real face's 68 landmarks in [0, 1] of its aligned crop (MediaPipe on the sample photo)."""
    from tests.face.fixtures import face_image
    from vtcaps_tf.face import FaceMesh, align_face, landmarks68

    with FaceMesh(video=False) as mesh:
        lm = landmarks68(mesh.detect(face_image(160)))
    return align_face(face_image(160), lm, 112).landmarks.astype(np.float32)


def face_like_landmarks(n: int, seed: int = 0) -> np.ndarray:
    """[n, 68, 2]: the real face moved, scaled and tilted at random, often pushed against or past
    the crop's borders (AU centres then clip into the map's edge rows and columns)."""
    rng = np.random.default_rng(seed)
    base = _real_face01()
    centre = base.mean(axis=0)
    out = []
    for _ in range(n):
        a = rng.uniform(-0.3, 0.3)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        scale = rng.uniform(0.4, 1.3)
        shift = rng.uniform(-0.55, 0.55, 2)
        out.append((base - centre) @ rot.T * scale + centre + shift)
    return np.stack(out).astype(np.float32)


def _reference(lm, size):
    return np.stack([au_attention_map(x * size, size) for x in lm.reshape(-1, 68, 2)]).reshape(
        lm.shape[:-2] + (size, size))


def test_layer_test():
    rng = np.random.default_rng(0)
    run_layer_test(AUMapRender, {"size": 20}, rng.uniform(size=(2, 3, 68, 2)).astype("float32"),
                   (2, 3, 20, 20), expect_trainable_weights=False)


@pytest.mark.parametrize("size", [100, 48, 13])
def test_random_landmarks_match_numpy_exactly(size):
    rng = np.random.default_rng(size)
    lm = rng.uniform(-0.1, 1.1, (3, 5, 68, 2)).astype(np.float32)  # some centres off the map
    np.testing.assert_array_equal(np.asarray(AUMapRender(size)(lm)), _reference(lm, size))


@pytest.mark.parametrize("size", [100, 48])
def test_face_like_landmarks_match_numpy_exactly(size):
    lm = face_like_landmarks(60, seed=size).reshape(6, 10, 68, 2)
    got = np.asarray(AUMapRender(size)(lm))
    want = _reference(lm, size)
    np.testing.assert_array_equal(got, want)
    # The set really reaches the borders: some maps touch an edge row or column.
    edges = want[..., 0, :].max(-1) + want[..., -1, :].max(-1) + want[..., :, 0].max(-1) + want[..., :, -1].max(-1)
    assert (edges > 0).sum() >= 5
    assert want.max() == 1.0  # centre pixels


def test_centres_exactly_on_half_pixels_round_half_to_even():
    # Every landmark at x = 10.5 / size: np.rint takes 10 (even); a half-up rounding would take 11.
    size = 32
    lm = np.full((1, 1, 68, 2), 10.5 / size, np.float32)
    np.testing.assert_array_equal(np.asarray(AUMapRender(size)(lm)), _reference(lm, size))


def test_the_map_is_float32_under_mixed_precision():
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = AUMapRender(16)
        lm = np.random.default_rng(1).uniform(size=(1, 2, 68, 2)).astype(np.float32)
        out = layer(lm)
    finally:
        keras.config.set_dtype_policy(previous)
    assert str(out.dtype) in ("float32", "<dtype: 'float32'>")
    np.testing.assert_array_equal(np.asarray(out), _reference(lm, 16))


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="68, 2"):
        AUMapRender(10)(np.zeros((1, 2, 5, 2), "float32"))
    with pytest.raises(ValueError, match="positive"):
        AUMapRender(0)
