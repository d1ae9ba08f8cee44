"""Non-local block: identity at initialisation, and the embedded Gaussian against numpy."""

import numpy as np
import pytest

from layer_test import run_layer_test
from vtcaps_tf.layers import NonLocalBlock


def _np_nonlocal(x, layer, sub_sample):
    """Wang et al. 2018, Eq. 1-3 (embedded Gaussian), written directly in numpy."""
    def conv1(v, conv):
        return v @ np.array(conv.kernel)[0, 0, 0] + np.array(conv.bias)

    def pool(v):  # 1x2x2 max-pool, 'same' padding
        b, t, h, w, c = v.shape
        hp, wp = -(-h // 2) * 2, -(-w // 2) * 2
        padded = np.full((b, t, hp, wp, c), -np.inf)
        padded[:, :, :h, :w] = v
        return padded.reshape(b, t, hp // 2, 2, wp // 2, 2, c).max(axis=(3, 5))

    b, c = x.shape[0], x.shape[-1]
    theta, phi, g = conv1(x, layer.theta), conv1(x, layer.phi), conv1(x, layer.g)
    if sub_sample:
        phi, g = pool(phi), pool(g)
    inter = theta.shape[-1]
    theta, phi, g = (v.reshape(b, -1, inter) for v in (theta, phi, g))
    logits = theta @ phi.transpose(0, 2, 1)
    f = np.exp(logits - logits.max(-1, keepdims=True))
    f /= f.sum(-1, keepdims=True)
    y = (f @ g).reshape(x.shape[:-1] + (inter,))
    bn = layer.out_bn
    wy = conv1(y, layer.out_conv)
    z = (np.array(bn.gamma) * (wy - np.array(bn.moving_mean))
         / np.sqrt(np.array(bn.moving_variance) + bn.epsilon) + np.array(bn.beta))
    return x + z


def test_layer_test():
    x = np.random.default_rng(0).normal(size=(2, 2, 4, 4, 6)).astype("float32")
    run_layer_test(NonLocalBlock, {"inter_channels": 3, "sub_sample": True}, x, (2, 2, 4, 4, 6))


@pytest.mark.parametrize("training", [False, True])
def test_identity_at_initialisation(training):
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 5, 4)).astype("float32")
    out = np.array(NonLocalBlock()(x, training=training))
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("sub_sample", [False, True])
def test_matches_numpy_after_weight_change(sub_sample):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 2, 3, 5, 4)).astype("float32")
    layer = NonLocalBlock(inter_channels=2, sub_sample=sub_sample)
    layer(x)
    layer.out_bn.gamma.assign(rng.uniform(0.5, 1.5, 4))
    layer.out_bn.moving_mean.assign(rng.normal(0, 0.1, 4))
    for conv in (layer.theta, layer.phi, layer.g, layer.out_conv):
        conv.bias.assign(rng.normal(0, 0.1, conv.bias.shape))
    got = np.array(layer(x, training=False))
    assert np.abs(got - x).max() > 1e-2  # no longer the identity
    np.testing.assert_allclose(got, _np_nonlocal(x.astype(np.float64), layer, sub_sample), rtol=1e-4, atol=1e-5)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="B,T,H,W,C"):
        NonLocalBlock()(np.zeros((1, 4, 4, 3), "float32"))
    with pytest.raises(ValueError, match="inter_channels"):
        NonLocalBlock(inter_channels=0)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7, 4), (1, 2, 4, 4, 3)])
def test_pool_equals_keras_max_pooling_3d(shape):
    """The block's 1x2x2 'same' max-pool (a 2D pool over [B*T, H, W, C]) against the Keras 3D
    pool it stands for."""
    import keras

    x = np.random.default_rng(3).normal(size=shape).astype("float32")
    layer = NonLocalBlock(inter_channels=2)
    layer(x)
    want = keras.layers.MaxPooling3D((1, 2, 2), strides=(1, 2, 2), padding="same")(x)
    np.testing.assert_array_equal(np.asarray(layer.pool(x)), np.asarray(want))
