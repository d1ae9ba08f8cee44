"""(2+1)D residual blocks: the shared layer test, and outputs against a numpy re-computation."""

import keras
import numpy as np
import pytest

from layer_test import run_layer_test
from vtcaps_tf.layers import BasicBlock2Plus1D, BottleneckBlock2Plus1D
from vtcaps_tf.layers.resnet3d import FactorisedConv3D, FusedBatchNorm, SpatialMaxPool3D


def _np_conv3d_same(x, kernel, strides):
    """Reference 'same' 3D convolution, channels last, written out with explicit offsets."""
    b, t, h, w, c = x.shape
    kt, kh, kw, _, f = kernel.shape
    out_dims = [-(-n // s) for n, s in zip((t, h, w), strides)]
    pads = []
    for n, k, s, o in zip((t, h, w), (kt, kh, kw), strides, out_dims):
        total = max((o - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    xp = np.pad(x, [(0, 0)] + pads + [(0, 0)])
    out = np.zeros([b] + out_dims + [f], np.float64)
    for i in range(kt):
        for j in range(kh):
            for k in range(kw):
                patch = xp[:, i:i + out_dims[0] * strides[0]:strides[0],
                           j:j + out_dims[1] * strides[1]:strides[1],
                           k:k + out_dims[2] * strides[2]:strides[2], :]
                out += patch @ kernel[i, j, k]
    return out


def _np_bn(x, bn):
    gamma, beta, mean, var = (np.array(v) for v in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    return gamma * (x - mean) / np.sqrt(var + bn.epsilon) + beta


def _randomise_bn(layer, rng):
    """Non-trivial BN statistics so that the inference-mode comparison checks them."""
    for sub in layer._flatten_layers(include_self=False):
        if isinstance(sub, keras.layers.BatchNormalization):
            n = sub.gamma.shape[0]
            sub.gamma.assign(rng.uniform(0.5, 1.5, n))
            sub.beta.assign(rng.normal(0, 0.1, n))
            sub.moving_mean.assign(rng.normal(0, 0.1, n))
            sub.moving_variance.assign(rng.uniform(0.5, 2.0, n))


def _np_unit(x, layer, conv_name, strides, relu=True):
    conv = getattr_by_name(layer, conv_name)
    bn = getattr_by_name(layer, conv_name + "_bn")
    y = _np_bn(_np_conv3d_same(x, np.array(conv.kernel), strides), bn)
    return np.maximum(y, 0) if relu else y


def getattr_by_name(layer, name):
    for sub in layer._flatten_layers(include_self=False):
        if sub.name == name:
            return sub
    raise KeyError(name)


@pytest.mark.parametrize("strides, channels_in, expected", [
    ((1, 1), 4, (2, 4, 6, 6, 4)),  # identity shortcut
    ((2, 2), 4, (2, 2, 3, 3, 4)),  # projection shortcut, time and space halved
])
def test_basic_block_layer_test(strides, channels_in, expected):
    x = np.random.default_rng(0).normal(size=(2, 4, 6, 6, channels_in)).astype("float32")
    run_layer_test(BasicBlock2Plus1D, {"filters": 4, "strides": strides}, x, expected)


def test_bottleneck_block_layer_test():
    x = np.random.default_rng(0).normal(size=(2, 4, 6, 6, 3)).astype("float32")
    run_layer_test(BottleneckBlock2Plus1D, {"filters": 2, "strides": (1, 2)}, x, (2, 4, 3, 3, 8))


def test_block_with_skip_stream_layer_test():
    rng = np.random.default_rng(1)
    data = [rng.normal(size=(2, 3, 4, 4, 4)).astype("float32"), rng.normal(size=(2, 3, 4, 4, 4)).astype("float32")]
    run_layer_test(BasicBlock2Plus1D, {"filters": 4}, data, (2, 3, 4, 4, 4))


def test_kernels_are_factorised_into_temporal_and_spatial():
    block = BasicBlock2Plus1D(5, temporal_kernel_size=3, spatial_kernel_size=3)
    block.build((None, 4, 6, 6, 2))
    shapes = sorted(tuple(w.shape) for w in block.weights if w.name == "kernel")
    # Two t x 1 x 1 convs and two 1 x k x k convs; no full t x k x k kernel anywhere.
    assert shapes == sorted([(3, 1, 1, 2, 5), (1, 3, 3, 5, 5), (3, 1, 1, 5, 5), (1, 3, 3, 5, 5),
                             (1, 1, 1, 2, 5)])


def test_basic_block_matches_numpy_reference():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 4, 5, 5, 3)).astype("float32")
    skip = rng.normal(size=x.shape).astype("float32")
    block = BasicBlock2Plus1D(4, strides=(2, 2))
    block([x, skip])
    _randomise_bn(block, rng)
    got = np.array(block([x, skip], training=False))

    y = _np_unit(x.astype(np.float64), block, "temporal_1", (2, 1, 1))
    y = _np_unit(y, block, "spatial_1", (1, 2, 2))
    y = _np_unit(y, block, "temporal_2", (1, 1, 1))
    y = _np_unit(y, block, "spatial_2", (1, 1, 1), relu=False)
    shortcut = _np_unit(skip.astype(np.float64), block, "shortcut", (2, 2, 2), relu=False)
    want = np.maximum(y + shortcut, 0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_bottleneck_block_matches_numpy_reference():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 3, 4, 4, 8)).astype("float32")
    block = BottleneckBlock2Plus1D(2)  # 8 -> 8 channels, stride 1: identity shortcut
    block(x)
    _randomise_bn(block, rng)
    got = np.array(block(x, training=False))
    y = _np_unit(x.astype(np.float64), block, "temporal_1", (1, 1, 1))
    y = _np_unit(y, block, "spatial_1", (1, 1, 1))
    y = _np_unit(y, block, "expand", (1, 1, 1), relu=False)
    np.testing.assert_allclose(got, np.maximum(y + x, 0), rtol=1e-4, atol=1e-4)
    assert block.shortcut_conv is None


def test_skip_stream_replaces_identity_input():
    """With the convolution branch silenced, the block outputs relu(skip): out = F(x) + x * map."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 2, 3, 3, 4)).astype("float32")
    attended = x * rng.uniform(0, 1, size=(1, 2, 3, 3, 1)).astype("float32")
    block = BasicBlock2Plus1D(4)
    block([x, attended])
    bn = getattr_by_name(block, "spatial_2_bn")
    bn.gamma.assign(np.zeros(4))
    bn.beta.assign(np.zeros(4))
    np.testing.assert_allclose(np.array(block([x, attended], training=False)), np.maximum(attended, 0),
                               atol=1e-6)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="filters"):
        BasicBlock2Plus1D(0)
    with pytest.raises(ValueError, match="B,T,H,W,C"):
        BasicBlock2Plus1D(4)(np.zeros((2, 4, 4, 3), "float32"))
    with pytest.raises(ValueError, match="identity shortcut"):
        BasicBlock2Plus1D(4, strides=2, use_projection=False)(np.zeros((1, 4, 4, 4, 4), "float32"))


# The CPU-fast layers against the Keras layers they stand for (same weights) -------------------------

def _grads(layer_fn, x, weights, cotangent):
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer_fn(x)
        loss = tf.reduce_sum(y * cotangent)
    return y.numpy(), [g.numpy() for g in tape.gradient(loss, [x] + weights)]


@pytest.mark.parametrize("kernel, strides", [
    ((3, 1, 1), (2, 1, 1)), ((3, 1, 1), (1, 1, 1)), ((1, 3, 3), (1, 2, 2)), ((1, 3, 3), (2, 1, 1)),
    ((1, 7, 7), (1, 2, 2)), ((1, 1, 1), (2, 2, 2)),
])
def test_factorised_conv_equals_conv3d(kernel, strides):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 5, 7, 7, 3)).astype("float32")
    ours = FactorisedConv3D(4, kernel, strides=strides)
    ref = keras.layers.Conv3D(4, kernel, strides=strides, padding="same", use_bias=False)
    ours.build(x.shape)
    ref.build(x.shape)
    ref.kernel.assign(np.asarray(ours.kernel))
    assert tuple(ours.kernel.shape) == tuple(ref.kernel.shape)  # Conv3D's kernel layout
    cot = rng.normal(size=ref.compute_output_shape(x.shape)).astype("float32")
    y, g = _grads(ours, x, [ours.kernel], cot)
    y_ref, g_ref = _grads(ref, x, [ref.kernel], cot)
    assert y.shape == y_ref.shape == tuple(ours.compute_output_shape(x.shape))
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g, g_ref):  # input and kernel gradients
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def test_factorised_conv_rejects_full_3d_kernel():
    with pytest.raises(ValueError, match=r"\(t,1,1\) or \(1,kh,kw\)"):
        FactorisedConv3D(4, (3, 3, 3))


@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_equals_keras_batch_norm(training):
    rng = np.random.default_rng(6)
    x = (rng.normal(size=(3, 4, 5, 5, 6)) * 2 + 1).astype("float32")
    ours = FusedBatchNorm(momentum=0.9, epsilon=1e-5)
    ref = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    ours.build(x.shape)
    ref.build(x.shape)
    start = {}
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        start[name] = rng.uniform(0.5, 1.5, 6).astype("float32")
        getattr(ours, name).assign(start[name])
        getattr(ref, name).assign(start[name])
    cot = rng.normal(size=x.shape).astype("float32")
    y, g = _grads(lambda t: ours(t, training=training), x, [ours.gamma, ours.beta], cot)
    y_ref, g_ref = _grads(lambda t: ref(t, training=training), x, [ref.gamma, ref.beta], cot)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
    # Moving statistics: Keras' update rule with the biased batch variance, recomputed in numpy.
    flat = x.reshape(-1, 6).astype(np.float64)
    want = {"moving_mean": start["moving_mean"], "moving_variance": start["moving_variance"]}
    if training:
        want = {"moving_mean": 0.9 * start["moving_mean"] + 0.1 * flat.mean(0),
                "moving_variance": 0.9 * start["moving_variance"] + 0.1 * flat.var(0)}
    for name, value in want.items():
        np.testing.assert_allclose(np.asarray(getattr(ours, name)), value, rtol=1e-5)


def test_spatial_max_pool_equals_max_pooling3d():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 5, 7, 7, 3)).astype("float32")
    ours = SpatialMaxPool3D(3, strides=(2, 2))
    ref = keras.layers.MaxPooling3D((1, 3, 3), strides=(2, 2, 2), padding="same")
    cot = rng.normal(size=ref.compute_output_shape(x.shape)).astype("float32")
    y, (g,) = _grads(ours, x, [], cot)
    y_ref, (g_ref,) = _grads(ref, x, [], cot)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_allclose(g, g_ref, rtol=1e-6, atol=1e-6)  # overlapping windows: summation order


@pytest.mark.parametrize("cls, kwargs, shape", [
    ("FactorisedConv3D", {"filters": 4, "kernel_size": (3, 1, 1), "strides": (2, 1, 1)}, (2, 2, 5, 5, 4)),
    ("FusedBatchNorm", {"momentum": 0.9, "epsilon": 1e-5}, (2, 4, 5, 5, 3)),
    ("SpatialMaxPool3D", {"pool_size": 3, "strides": (1, 2)}, (2, 4, 3, 3, 3)),
])
def test_fast_layers_layer_test(cls, kwargs, shape):
    import vtcaps_tf.layers.resnet3d as module

    x = np.random.default_rng(8).normal(size=(2, 4, 5, 5, 3)).astype("float32")
    run_layer_test(getattr(module, cls), kwargs, x, shape, run_training=cls != "SpatialMaxPool3D")
