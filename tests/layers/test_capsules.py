"""Capsule layers against numpy references written here from the paper (Eq. 3-4) and Sabour et al.

Every expected number below is computed by numpy code in this file, never by the layers.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from layer_test import run_layer_test
from vtcaps_tf.layers.capsules import (DigitCaps, PrimaryCaps, ReconstructionDecoder,
                                       capsule_length, capsule_mask, squash)

EPS = 1e-7


def squash_np(s, axis=-1):
    """docs/design.md section 6: (|s|^2 / (1 + |s|^2)) * s / sqrt(|s|^2 + 1e-7)."""
    sq = np.sum(s.astype(np.float64) ** 2, axis=axis, keepdims=True)
    return sq / (1.0 + sq) * s / np.sqrt(sq + EPS)


def routing_np(u, w, iterations, frozen_coupling=None):
    """Routing by agreement (Sabour et al. 2017, Procedure 1; paper Eq. 4), one capsule pair at a
    time. u: [B, n_in, d_in]; w: [n_in, n_out, d_in, d_out]. Returns (v [B, n_out, d_out], c).

    With `frozen_coupling` given, the routing is skipped and v = squash(sum_i c_ij u_hat_ij) with
    those coefficients: the function whose gradient the layer must report.
    """
    batch, n_in, _ = u.shape
    n_out, d_out = w.shape[1], w.shape[3]
    u_hat = np.zeros((batch, n_in, n_out, d_out))
    for b in range(batch):
        for i in range(n_in):
            for j in range(n_out):
                u_hat[b, i, j] = w[i, j].T @ u[b, i]  # u_hat_{j|i} = W_ij u_i
    if frozen_coupling is not None:
        s = np.einsum("bij,bije->bje", frozen_coupling, u_hat)
        return squash_np(s), frozen_coupling
    logits = np.zeros((batch, n_in, n_out))  # x_ij = 0: equal priors
    for r in range(iterations):
        c = np.exp(logits) / np.sum(np.exp(logits), axis=2, keepdims=True)  # softmax over j
        s = np.zeros((batch, n_out, d_out))
        for b in range(batch):
            for j in range(n_out):
                for i in range(n_in):
                    s[b, j] += c[b, i, j] * u_hat[b, i, j]
        v = squash_np(s)
        if r < iterations - 1:
            for b in range(batch):
                for i in range(n_in):
                    for j in range(n_out):
                        logits[b, i, j] += u_hat[b, i, j] @ v[b, j]
    return v, c


# ---------------------------------------------------------------- squash, lengths, masks

@pytest.mark.parametrize("shape,axis", [((5,), -1), ((3, 8), -1), ((2, 4, 16), -1),
                                        ((2, 3, 4, 5, 6), -1), ((2, 6, 3), 1)])
def test_squash_matches_numpy_on_any_rank(shape, axis):
    rng = np.random.default_rng(0)
    s = rng.normal(scale=2.0, size=shape).astype("float32")
    got = keras.ops.convert_to_numpy(squash(s, axis=axis))
    np.testing.assert_allclose(got, squash_np(s, axis), rtol=1e-5, atol=1e-7)


def test_squash_hand_worked_and_zero_vector():
    # s = (3, 4): |s|^2 = 25 -> 25/26 * (3, 4) / sqrt(25 + 1e-7) = (0.576923..., 0.769230...)
    got = keras.ops.convert_to_numpy(squash(np.array([[3.0, 4.0], [0.0, 0.0]], "float32")))
    np.testing.assert_allclose(got[0], [25 / 26 * 3 / 5, 25 / 26 * 4 / 5], rtol=1e-6)
    np.testing.assert_array_equal(got[1], [0.0, 0.0])
    x = tf.zeros((1, 4))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(squash(x))
    assert np.all(np.isfinite(tape.gradient(y, x).numpy()))


def test_squash_keeps_half_precision_dtype():
    s = np.array([[30.0, 40.0]], "float16")
    got = squash(tf.constant(s))
    assert got.dtype == tf.float16
    np.testing.assert_allclose(np.array(got, "float32"), squash_np(s.astype("float64")), rtol=1e-3)


def test_capsule_length_and_mask():
    v = np.array([[[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]]], "float32")
    lengths = keras.ops.convert_to_numpy(capsule_length(v))
    np.testing.assert_allclose(lengths, [[5.0, 1.0, 10.0]], rtol=1e-6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(capsule_mask(lengths)), [[0, 0, 1]])
    lengths2 = np.array([[0.1, 0.9, 0.2], [0.5, 0.4, 0.3]], "float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(capsule_mask(lengths2, [2, 1])),
                                  [[0, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(capsule_mask(lengths2)),
                                  [[0, 1, 0], [1, 0, 0]])


# ---------------------------------------------------------------- PrimaryCaps

def test_primary_caps_layer_test():
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 6)).astype("float32")
    run_layer_test(PrimaryCaps, dict(capsule_types=4, capsule_dim=8, kernel_size=2, strides=1),
                   x, expected_output_shape=(2, 3 * 3 * 4, 8))


def test_primary_caps_paper_shape():
    # 512 x 7 x 7 -> 256 x 6 x 6 -> 1152 capsules of 8D (paper section 3.1.3).
    layer = PrimaryCaps()
    assert layer.compute_output_shape((None, 7, 7, 512)) == (None, 1152, 8)
    out = layer(keras.Input((7, 7, 512)))
    assert tuple(out.shape) == (None, 1152, 8)


def test_primary_caps_matches_numpy_conv_and_grouping():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 4, 5)).astype("float32")
    layer = PrimaryCaps(capsule_types=3, capsule_dim=4, kernel_size=2)
    layer.build(x.shape)
    kernel, bias = [np.array(w) for w in layer.conv.weights]  # [2, 2, 5, 12], [12]
    bias = rng.normal(size=bias.shape).astype("float32")
    layer.conv.bias.assign(bias)
    got = keras.ops.convert_to_numpy(layer(x))
    # valid 2x2 correlation, then channels (type, dim) at each position, positions row-major.
    conv = np.zeros((2, 2, 3, 12))
    for y in range(2):
        for xx in range(3):
            patch = x[:, y:y + 2, xx:xx + 2, :]  # [B, 2, 2, 5]
            conv[:, y, xx] = np.einsum("bhwc,hwco->bo", patch, kernel) + bias
    caps = conv.reshape(2, 2 * 3 * 3, 4)
    np.testing.assert_allclose(got, squash_np(caps), rtol=1e-4, atol=1e-6)
    assert np.all(np.linalg.norm(got, axis=-1) < 1.0)


def test_primary_caps_rejects_bad_input():
    with pytest.raises(ValueError, match="pool the time axis"):
        PrimaryCaps()(np.zeros((1, 2, 7, 7, 8), "float32"))
    with pytest.raises(ValueError, match="smaller than"):
        PrimaryCaps(kernel_size=3)(np.zeros((1, 2, 2, 8), "float32"))
    with pytest.raises(ValueError, match="positive"):
        PrimaryCaps(capsule_types=0)


# ---------------------------------------------------------------- DigitCaps

def test_digit_caps_layer_test():
    x = squash_np(np.random.default_rng(3).normal(size=(2, 12, 8))).astype("float32")
    run_layer_test(DigitCaps, dict(num_capsules=3, capsule_dim=16, routing_iterations=3),
                   x, expected_output_shape=(2, 3, 16))


def _fixed_routing_problem(batch, n_in, d_in, n_out, d_out, seed):
    rng = np.random.default_rng(seed)
    u = squash_np(rng.normal(size=(batch, n_in, d_in)))
    w = rng.normal(scale=0.5, size=(n_in, n_out, d_in, d_out))
    return u, w


def test_digit_caps_three_iterations_match_numpy_routing():
    u, w = _fixed_routing_problem(batch=3, n_in=10, d_in=8, n_out=4, d_out=16, seed=4)
    layer = DigitCaps(num_capsules=4, capsule_dim=16, routing_iterations=3)
    layer.build((None, 10, 8))
    layer.kernel.assign(w.astype("float32"))
    got = keras.ops.convert_to_numpy(layer(u.astype("float32")))
    want, coupling = routing_np(u, w, iterations=3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The routing did something: coefficients left 1/n_out, and one iteration gives another answer.
    assert np.abs(coupling - 0.25).max() > 0.05
    one_pass, _ = routing_np(u, w, iterations=1)
    assert np.abs(one_pass - want).max() > 1e-2


def test_digit_caps_paper_sizes_match_numpy_routing():
    # 1152 x 8D -> 7 x 16D, 3 iterations (paper Fig 2).
    u, w = _fixed_routing_problem(batch=2, n_in=1152, d_in=8, n_out=7, d_out=16, seed=5)
    w *= 0.1
    layer = DigitCaps(num_capsules=7)
    layer.build((None, 1152, 8))
    layer.kernel.assign(w.astype("float32"))
    got = keras.ops.convert_to_numpy(layer(u.astype("float32")))
    want, _ = routing_np(u, w, iterations=3)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _frozen_routing_loss(u, w, coupling, weights):
    v, _ = routing_np(u, w, iterations=0, frozen_coupling=coupling)
    return float(np.sum(v * weights))


def test_digit_caps_gradient_flows_through_last_iteration_only():
    # Inner iterations see stop-gradiented votes, so the coupling coefficients act as constants:
    # the gradient must be that of v = squash(sum_i c_ij W_ij u_i) with c frozen at its final value.
    u, w = _fixed_routing_problem(batch=2, n_in=5, d_in=3, n_out=3, d_out=4, seed=6)
    weights = np.random.default_rng(7).normal(size=(2, 3, 4))
    layer = DigitCaps(num_capsules=3, capsule_dim=4, routing_iterations=3, dtype="float64")
    layer.build((None, 5, 3))
    layer.kernel.assign(w)
    x = tf.constant(u)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) * weights)
    grad_w = tape.gradient(loss, layer.kernel).numpy()
    grad_u = tape.gradient(loss, x).numpy()

    _, coupling = routing_np(u, w, iterations=3)
    h = 1e-6

    def finite_diff(array, fn):
        grad = np.zeros_like(array)
        for idx in np.ndindex(array.shape):
            plus, minus = array.copy(), array.copy()
            plus[idx] += h
            minus[idx] -= h
            grad[idx] = (fn(plus) - fn(minus)) / (2 * h)
        return grad

    want_w = finite_diff(w, lambda ww: _frozen_routing_loss(u, ww, coupling, weights))
    want_u = finite_diff(u, lambda uu: _frozen_routing_loss(uu, w, coupling, weights))
    np.testing.assert_allclose(grad_w, want_w, atol=1e-7)
    np.testing.assert_allclose(grad_u, want_u, atol=1e-7)
    # Differentiating through the whole routing would give a different gradient: the check bites.
    full_w = finite_diff(w, lambda ww: float(np.sum(routing_np(u, ww, 3)[0] * weights)))
    assert np.abs(full_w - want_w).max() > 1e-3


def test_digit_caps_is_vectorised():
    # The traced graph has no loops and the same ops whatever the number of input capsules.
    def graph_ops(n_in):
        layer = DigitCaps(num_capsules=7, capsule_dim=16)
        layer.build((None, n_in, 8))
        fn = tf.function(lambda x: layer(x))
        graph = fn.get_concrete_function(tf.TensorSpec((None, n_in, 8), tf.float32)).graph
        return sorted(op.type for op in graph.get_operations())

    small, large = graph_ops(8), graph_ops(1152)
    assert small == large
    assert not {"While", "StatelessWhile", "TensorListReserve"} & set(small)
    assert small.count("Einsum") == 1 + 3 + 2  # votes, 3 weighted sums, 2 agreements


def test_digit_caps_rejects_bad_input():
    with pytest.raises(ValueError, match="batch, n_in, d_in"):
        DigitCaps(7)(np.zeros((1, 6, 6, 8), "float32"))
    with pytest.raises(ValueError, match="routing_iterations"):
        DigitCaps(7, routing_iterations=0)


# ---------------------------------------------------------------- ReconstructionDecoder

def test_reconstruction_decoder_layer_test():
    rng = np.random.default_rng(8)
    caps = rng.normal(size=(2, 3, 16)).astype("float32")
    mask = np.eye(3, dtype="float32")[[0, 2]]
    out = run_layer_test(ReconstructionDecoder, dict(target_shape=(4, 4, 3), hidden_units=(8, 16)),
                         [caps, mask], expected_output_shape=(2, 4, 4, 3))
    out = keras.ops.convert_to_numpy(out)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_reconstruction_decoder_masks_and_matches_numpy():
    rng = np.random.default_rng(9)
    caps = rng.normal(size=(2, 3, 4)).astype("float32")
    mask = np.eye(3, dtype="float32")[[1, 0]]
    layer = ReconstructionDecoder(target_shape=(2, 3, 1), hidden_units=(5, 7))
    got = keras.ops.convert_to_numpy(layer([caps, mask]))
    (k1, b1), (k2, b2), (k3, b3) = [[np.array(w) for w in d.weights]
                                    for d in layer.hidden + [layer.output_dense]]
    x = (caps * mask[:, :, None]).reshape(2, 12)
    h = np.maximum(x @ k1 + b1, 0)
    h = np.maximum(h @ k2 + b2, 0)
    want = (1 / (1 + np.exp(-(h @ k3 + b3)))).reshape(2, 2, 3, 1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Capsules outside the mask do not matter.
    other = caps.copy()
    other[0, [0, 2]] = rng.normal(size=(2, 4))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer([other, mask])), got)


def test_reconstruction_decoder_rejects_mismatched_mask():
    layer = ReconstructionDecoder(target_shape=(4, 4, 3))
    with pytest.raises(ValueError, match="mask shape"):
        layer([np.zeros((2, 3, 16), "float32"), np.zeros((2, 4), "float32")])


def test_capsules_route_in_float32_under_mixed_precision():
    rng = np.random.default_rng(7)
    # Inputs as a mixed-precision backbone hands them over: float16 values.
    x = rng.normal(0, 1, (2, 4, 4, 16)).astype("float16")

    def run():
        primary = PrimaryCaps(4, 8, name="primary")
        digit = DigitCaps(3, 16, routing_iterations=3, name="digit")
        u = primary(x)
        return primary, digit, u, digit(u)

    keras.utils.set_random_seed(0)
    _, _, u32, v32 = run()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        primary, digit, u16, v16 = run()
    finally:
        keras.config.set_dtype_policy(previous)
    for layer in (primary, primary.conv, digit):
        assert layer.compute_dtype == "float32" and layer.variable_dtype == "float32", layer.name
    assert all(w.dtype == "float32" for w in primary.weights + digit.weights)
    for t in (u16, v16):
        assert keras.backend.standardize_dtype(t.dtype) == "float32"
    # Same initial weights (same seed), same float16-valued input: the runs agree to float32 rounding.
    np.testing.assert_allclose(np.asarray(u16), np.asarray(u32), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(v16), np.asarray(v32), rtol=1e-5, atol=1e-6)


def test_capsules_keep_an_explicit_float32_or_float64_dtype():
    assert DigitCaps(3, 4, dtype="float64").compute_dtype == "float64"
    assert PrimaryCaps(2, 4, dtype="mixed_bfloat16").compute_dtype == "float32"
