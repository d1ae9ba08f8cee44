"""FastNormalizedFusion and SoftmaxFusion against numpy re-computations of their equations."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from layer_test import run_layer_test
from vtcaps_tf.layers import FastNormalizedFusion, SoftmaxFusion

SHAPE = (2, 3, 4, 4, 5)  # [B, T, H, W, C]: a pyramid level in miniature


def _inputs(k, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=SHAPE).astype("float32") for _ in range(k)]


def _np_fast(weights, inputs, eps=1e-4):
    """Paper Eq. 15 as EfficientDet writes it, in float64."""
    r = np.maximum(np.asarray(weights, np.float64), 0.0)
    coeffs = r / (r.sum() + eps)
    return sum(c * x.astype(np.float64) for c, x in zip(coeffs, inputs))


def _np_softmax(weights, inputs):
    """Paper Eq. 14 in float64."""
    w = np.asarray(weights, np.float64)
    p = np.exp(w - w.max())
    p /= p.sum()
    return sum(c * x.astype(np.float64) for c, x in zip(p, inputs))


def _built(layer_cls, inputs, weights, **kwargs):
    layer = layer_cls(**kwargs)
    layer(inputs)
    layer.fusion_weights.assign(np.asarray(weights, "float32"))
    return layer


@pytest.mark.parametrize("layer_cls", [FastNormalizedFusion, SoftmaxFusion])
@pytest.mark.parametrize("k", [2, 3])
def test_layer_contract(layer_cls, k):
    run_layer_test(layer_cls, {}, _inputs(k), expected_output_shape=SHAPE,
                   expect_trainable_weights=True)


def test_layer_contract_with_epsilon():
    run_layer_test(FastNormalizedFusion, {"epsilon": 1e-3}, _inputs(2), expected_output_shape=SHAPE)


@pytest.mark.parametrize("layer_cls", [FastNormalizedFusion, SoftmaxFusion])
def test_weights_variable(layer_cls):
    layer = layer_cls()
    layer(_inputs(3))
    assert len(layer.trainable_weights) == 1
    w = layer.fusion_weights
    assert w.path.endswith("fusion_weights")
    assert tuple(w.shape) == (3,)
    np.testing.assert_array_equal(np.asarray(w), np.ones(3, "float32"))


def test_fresh_fast_fusion_is_near_mean():
    # weights 1, 1, 1: O = (I1 + I2 + I3) / (3 + 1e-4)
    inputs = _inputs(3, seed=1)
    out = FastNormalizedFusion()(inputs)
    np.testing.assert_allclose(np.asarray(out), sum(inputs) / 3.0001, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weights", [[2.0, 0.5, -1.5], [0.3, -0.2], [-1.0, -2.0, 0.0]])
def test_fast_fusion_matches_numpy(weights):
    inputs = _inputs(len(weights), seed=2)
    layer = _built(FastNormalizedFusion, inputs, weights)
    np.testing.assert_allclose(np.asarray(layer(inputs)), _np_fast(weights, inputs),
                               rtol=1e-5, atol=1e-6)


def test_fast_fusion_hand_worked():
    # w = (3, -1, 1): relu -> (3, 0, 1); coefficients 3/4.0001, 0, 1/4.0001.
    inputs = [np.full((1, 2), v, "float32") for v in (1.0, 100.0, 5.0)]
    layer = _built(FastNormalizedFusion, inputs, [3.0, -1.0, 1.0])
    np.testing.assert_allclose(np.asarray(layer(inputs)), np.full((1, 2), 8.0 / 4.0001), rtol=1e-6)


def test_fast_fusion_all_weights_negative_gives_zero():
    inputs = _inputs(2, seed=3)
    layer = _built(FastNormalizedFusion, inputs, [-1.0, -0.5])
    np.testing.assert_array_equal(np.asarray(layer(inputs)), np.zeros(SHAPE, "float32"))


@pytest.mark.parametrize("weights", [[2.0, 0.5, -1.5], [0.0, 0.0], [5.0, -3.0]])
def test_softmax_fusion_matches_numpy(weights):
    inputs = _inputs(len(weights), seed=4)
    layer = _built(SoftmaxFusion, inputs, weights)
    np.testing.assert_allclose(np.asarray(layer(inputs)), _np_softmax(weights, inputs),
                               rtol=1e-5, atol=1e-6)


def _loss_and_grad(layer, inputs, probe):
    """L = sum(O * G) and dL/dw through the layer."""
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(inputs) * probe)
    return float(loss), np.asarray(tape.gradient(loss, layer.fusion_weights))


def test_fast_fusion_gradient_reaches_weights():
    weights = np.array([2.0, 0.5, -1.5])
    inputs = _inputs(3, seed=5)
    probe = np.random.default_rng(6).normal(size=SHAPE).astype("float32")
    layer = _built(FastNormalizedFusion, inputs, weights)
    _, grad = _loss_and_grad(layer, inputs, probe)
    # dL/dw_j = relu'(w_j) (g_j / (S + eps) - sum_i r_i g_i / (S + eps)^2), g_i = <G, I_i>.
    g = np.array([np.sum(probe.astype(np.float64) * x) for x in inputs])
    r = np.maximum(weights, 0.0)
    denom = r.sum() + 1e-4
    want = (weights > 0) * (g / denom - np.dot(r, g) / denom ** 2)
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-5)
    assert grad[2] == 0.0  # the relu blocks the negative weight
    assert np.all(np.abs(grad[:2]) > 1e-3)


def test_softmax_fusion_gradient_reaches_weights():
    weights = np.array([2.0, 0.5, -1.5])
    inputs = _inputs(3, seed=7)
    probe = np.random.default_rng(8).normal(size=SHAPE).astype("float32")
    layer = _built(SoftmaxFusion, inputs, weights)
    _, grad = _loss_and_grad(layer, inputs, probe)
    # dL/dw_j = p_j (g_j - sum_i p_i g_i).
    g = np.array([np.sum(probe.astype(np.float64) * x) for x in inputs])
    p = np.exp(weights) / np.exp(weights).sum()
    want = p * (g - np.dot(p, g))
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-5)
    assert np.all(np.abs(grad) > 1e-3)


def test_fit_moves_fusion_weights_toward_the_useful_input():
    # Target = input 0: training must raise w_0 relative to w_1.
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(64, 4)).astype("float32"), rng.normal(size=(64, 4)).astype("float32")
    ins = [keras.Input((4,)), keras.Input((4,))]
    layer = FastNormalizedFusion()
    model = keras.Model(ins, layer(ins))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    model.fit([a, b], a, epochs=20, batch_size=64, verbose=0)
    w = np.asarray(layer.fusion_weights)
    assert w[0] > w[1]


@pytest.mark.parametrize("layer_cls", [FastNormalizedFusion, SoftmaxFusion])
def test_bad_inputs_raise_clear_errors(layer_cls):
    with pytest.raises(ValueError, match="list of tensors"):
        layer_cls()(np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match="at least 2"):
        layer_cls()([np.zeros((2, 3), "float32")])
    with pytest.raises(ValueError, match="same shape"):
        layer_cls()([np.zeros((2, 3), "float32"), np.zeros((2, 4), "float32")])
    layer = layer_cls()
    layer([np.zeros((2, 3), "float32")] * 2)
    with pytest.raises(ValueError, match="built for 2 inputs"):
        layer([np.zeros((2, 3), "float32")] * 3)


def test_epsilon_must_be_positive():
    with pytest.raises(ValueError, match="epsilon"):
        FastNormalizedFusion(epsilon=0.0)


def test_mixed_precision_keeps_float32_weights():
    inputs = [np.ones((2, 3), "float16"), np.zeros((2, 3), "float16")]
    layer = FastNormalizedFusion(dtype="mixed_float16")
    out = layer(inputs)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert keras.backend.standardize_dtype(layer.fusion_weights.dtype) == "float32"
    np.testing.assert_allclose(np.asarray(out, np.float32), np.full((2, 3), 1 / 2.0001), rtol=1e-3)
