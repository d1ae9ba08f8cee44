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


def _near_rounding_boundaries(n, seed):
    """(y [n, 20], r [n, 1]) float32 whose y + dy * r falls within a few float32 steps of a
    half-integer, where float32 arithmetic could round the AU centres' y to another pixel."""
    from vtcaps_tf.layers.au_render import _table

    _, dy = _table()
    rng = np.random.default_rng(seed)
    r = rng.uniform(0, 60, (n, 1)).astype(np.float32)
    column = rng.integers(0, 20, n)
    y = (rng.integers(0, 100, n) + 0.5 - dy[column] * r[:, 0]).astype(np.float32)
    steps = rng.integers(-3, 4, n)
    for s in range(3):
        y = np.where(steps > s, np.nextafter(y, np.float32(np.inf)), y)
        y = np.where(steps < -s, np.nextafter(y, np.float32(-np.inf)), y)
    return np.repeat(y[:, None], 20, axis=1), r, dy


def _tflite_run(fn, *args):
    """Convert a tf.function of fixed input shapes to TFLite builtins; (its ops, its outputs)."""
    import tensorflow as tf

    from vtcaps_tf.export.tflite_runtime import interpreter_class, op_names

    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    content = converter.convert()
    interpreter = interpreter_class()(model_content=content)
    interpreter.allocate_tensors()
    for detail, value in zip(sorted(interpreter.get_input_details(), key=lambda d: d["name"]), args):
        interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    return op_names(content), interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_centre_offsets_equal_the_float64_evaluation_near_rounding_boundaries():
    """The float32 two-term arithmetic of `offset_rounded_once` against numpy's float64
    evaluation rounded once, eagerly, in a TensorFlow graph (whose optimizer rewrites additions)
    and in TFLite."""
    import tensorflow as tf

    from vtcaps_tf.layers.au_render import offset_rounded_once

    y, r, dy = _near_rounding_boundaries(4000, seed=0)
    want = (y.astype(np.float64) + dy * r.astype(np.float64)).astype(np.float32)
    naive = y + dy.astype(np.float32) * r
    assert (naive != want).sum() > 50  # plain float32 arithmetic rounds some of them otherwise

    np.testing.assert_array_equal(offset_rounded_once(tf.constant(y), dy, tf.constant(r)).numpy(), want)
    graph = tf.function(lambda a, b: offset_rounded_once(a, dy, b),
                        input_signature=[tf.TensorSpec(y.shape), tf.TensorSpec(r.shape)])
    np.testing.assert_array_equal(graph(y, r).numpy(), want)
    # Input names sort as the arguments: a (y), b (r).
    ops, got = _tflite_run(graph, y, r)
    assert all(op.isupper() for op in ops), ops
    np.testing.assert_array_equal(got, want)


def test_graph_and_tflite_maps_match_numpy_exactly():
    import tensorflow as tf

    size = 48
    lm = face_like_landmarks(24, seed=3).reshape(2, 12, 68, 2)
    layer = AUMapRender(size)
    graph = tf.function(layer, input_signature=[tf.TensorSpec(lm.shape, tf.float32)])
    want = _reference(lm, size)
    np.testing.assert_array_equal(graph(lm).numpy(), want)
    ops, got = _tflite_run(graph, lm)
    assert all(op.isupper() for op in ops), ops  # TFLite builtins: no FlexXxx, no custom op
    np.testing.assert_array_equal(got, want)
