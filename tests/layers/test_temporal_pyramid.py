"""TemporalPyramid (TPN-ERM) and its pieces against numpy re-computations written here.

The reference `np_pyramid` below re-computes the whole layer in float64 from the paper's
section 3.2 and docs/design.md section 7 (spatial modulation convs, auxiliary heads, grouped temporal
conv, temporal max-pooling, the five TPN flows and the adaptive BiFPN-style graph, the head),
reading only the layer's weights, which the tests first set to random values.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from layer_test import run_layer_test
from vtcaps_tf.layers import FastNormalizedFusion, SoftmaxFusion, TemporalPyramid
from vtcaps_tf.layers.temporal_pyramid import (FLOWS, FUSION_LAYERS, FUSIONS, GroupedTemporalConv,
                                               TPNConvBlock, pool_time, resample_time)

CH = 8  # pyramid width in these tests
# Two- and three-level pyramids, bottom to top: [B, T, H, W, C].
LEVELS_2 = [(2, 4, 4, 4, 6), (2, 2, 2, 2, 10)]
LEVELS_3 = [(2, 6, 8, 8, 4), (2, 4, 4, 4, 6), (2, 2, 2, 2, 10)]


def _levels(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype("float32") for s in shapes]


# ----------------------------------------------------------------------------- numpy reference
def np_resample(x, length):
    """Nearest upsampling (frame j <- floor(j T / L)) or adaptive max-pooling over axis 1."""
    steps = x.shape[1]
    if steps == length:
        return x
    if steps < length:
        return x[:, np.floor(np.arange(length) * steps / length).astype(int)]
    return np.stack([x[:, math.floor(j * steps / length):math.ceil((j + 1) * steps / length)]
                     .max(axis=1) for j in range(length)], axis=1)


def np_pool_time(x, alpha):
    steps = x.shape[1]
    return np.stack([x[:, j:min(j + alpha, steps)].max(axis=1) for j in range(0, steps, alpha)],
                    axis=1)


def np_conv_hw(x, kernel, stride):
    """Conv3D with a (1, kh, kw) kernel, stride (1, s, s), TF 'same' padding, no bias."""
    _, kh, kw, _, cout = kernel.shape
    b, t, h, w, _ = x.shape
    oh, ow = -(-h // stride), -(-w // stride)
    ph, pw = max((oh - 1) * stride + kh - h, 0), max((ow - 1) * stride + kw - w, 0)
    xp = np.pad(x, [(0, 0), (0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)])
    out = np.zeros((b, t, oh, ow, cout))
    for dy in range(kh):
        for dx in range(kw):
            rows = slice(dy, dy + stride * (oh - 1) + 1, stride)
            cols = slice(dx, dx + stride * (ow - 1) + 1, stride)
            out += xp[:, :, rows, cols] @ kernel[0, dy, dx]
    return out


def np_temporal_conv(x, kernel, groups, bias=None):
    """Grouped conv over time; kernel [k, C/groups, O]; 'same' padding ((k-1)//2 before)."""
    k, cin_g, cout = kernel.shape
    cout_g, steps = cout // groups, x.shape[1]
    before = (k - 1) // 2
    xp = np.pad(x, [(0, 0), (before, k - 1 - before), (0, 0), (0, 0), (0, 0)])
    out = np.zeros(x.shape[:-1] + (cout,))
    for g in range(groups):
        xg = xp[..., g * cin_g:(g + 1) * cin_g]
        for tap in range(k):
            out[..., g * cout_g:(g + 1) * cout_g] += \
                xg[:, tap:tap + steps] @ kernel[tap, :, g * cout_g:(g + 1) * cout_g]
    return out if bias is None else out + bias


def np_block(block, x):
    """TPNConvBlock in inference mode: conv, batch norm with moving statistics, relu."""
    kernel = np.asarray(block.conv.kernel, np.float64)
    y = np_conv_hw(x, kernel, block.strides[1])
    bn = block.bn
    y = (y - np.asarray(bn.moving_mean)) / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon)
    return np.maximum(y * np.asarray(bn.gamma) + np.asarray(bn.beta), 0.0)


def np_dense(layer, x):
    return x @ np.asarray(layer.kernel, np.float64) + np.asarray(layer.bias, np.float64)


def np_coeffs(fusion):
    w = np.asarray(fusion.fusion_weights, np.float64)
    if isinstance(fusion, SoftmaxFusion):
        e = np.exp(w - w.max())
        return e / e.sum()
    r = np.maximum(w, 0.0)
    return r / (r.sum() + fusion.epsilon)


def np_fuse(fusion, inputs):
    return sum(c * x for c, x in zip(np_coeffs(fusion), inputs))


def np_pyramid(layer, levels, flow, alphas, spatial_steps):
    """The whole TemporalPyramid, inference mode, float64. `spatial_steps`: stride-2 convs per level
    (0 means the single 1x1x1 block), worked out by hand for each test case."""
    m = len(levels)
    blocks = list(layer.spatial_blocks)
    spatial = []
    for x, steps in zip(levels, spatial_steps):
        x = x.astype(np.float64)
        for _ in range(max(steps, 1)):
            x = np_block(blocks.pop(0), x)
        spatial.append(x)
    aux = [np_dense(head, s.mean(axis=(1, 2, 3))) for s, head in zip(spatial[:-1], layer.aux_heads)]
    feats = []
    for x, conv, alpha in zip(spatial, layer.temporal_convs, alphas):
        y = np_temporal_conv(x, np.asarray(conv.kernel, np.float64), conv.groups,
                             np.asarray(conv.bias, np.float64))
        feats.append(np_pool_time(y, alpha))
    length = [f.shape[1] for f in feats]

    def top_down(f):  # Eq. 13, applied from the top
        f = list(f)
        for i in range(m - 2, -1, -1):
            f[i] = f[i] + np_resample(f[i + 1], length[i])
        return f

    def bottom_up(f):  # Eq. 12, with TPN's (3x1x1) conv before the temporal down-sampling
        f = list(f)
        for i in range(1, m):
            k = np.asarray(layer.downsample_convs[i - 1].kernel, np.float64)[:, 0, 0]
            f[i] = f[i] + np_resample(np_temporal_conv(f[i - 1], k, 1), length[i])
        return f

    if flow == "isolation":  # Eq. 11
        out = feats
    elif flow == "top_down":
        out = top_down(feats)
    elif flow == "bottom_up":
        out = bottom_up(feats)
    elif flow == "cascade":
        out = bottom_up(top_down(feats))
    elif flow == "parallel":
        out = [a + b for a, b in zip(top_down(feats), bottom_up(feats))]
    else:  # docs/design.md section 7, written out level by level (0-based i here)
        td = {m - 1: feats[m - 1]}
        for i in range(m - 2, -1, -1):
            fused = np_fuse(layer.td_fusions[i], [feats[i], np_resample(td[i + 1], length[i])])
            td[i] = np_block(layer.td_convs[i], fused)
        out = [td[0]]
        for i in range(1, m - 1):
            out.append(np_block(layer.out_convs[i - 1], np_fuse(
                layer.out_fusions[i - 1], [feats[i], td[i], np_resample(out[i - 1], length[i])])))
        out.append(np_block(layer.out_convs[m - 2], np_fuse(
            layer.out_fusions[m - 2], [feats[m - 1], np_resample(out[m - 2], length[m - 1])])))
    reduce = np.max if layer.pool == "max" else np.mean
    feature = np.concatenate([reduce(o, axis=(1, 2, 3)) for o in out], axis=-1)
    return {"logits": np_dense(layer.head, feature), "aux_logits": aux, "feature": feature,
            "levels": out}


def _randomise(layer, seed):
    """Every weight to a random value (BN statistics too), one fusion weight per node negative."""
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        name, shape = w.path.rsplit("/", 1)[-1], tuple(w.shape)
        if name in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name == "fusion_weights":
            value = rng.uniform(0.2, 1.5, shape)
            value[rng.integers(shape[0])] = -0.7
        else:
            value = rng.normal(0.0, 0.4, shape)
        w.assign(value.astype("float32"))


# ----------------------------------------------------------------------------- helpers
def test_resample_time_matches_numpy():
    x = np.random.default_rng(1).normal(size=(2, 6, 3, 3, 4)).astype("float32")
    for length in (1, 2, 3, 4, 5, 6, 7, 9, 12):
        np.testing.assert_allclose(np.asarray(resample_time(x, length)), np_resample(x, length),
                                   rtol=0, atol=0, err_msg=f"length {length}")


def test_resample_time_hand_worked():
    x = np.array([1.0, 5.0, 2.0, 4.0, 3.0], "float32").reshape(1, 5, 1)
    # down 5 -> 2: windows [0, 3) and [2, 5): max 5 and 4
    np.testing.assert_array_equal(np.asarray(resample_time(x, 2)).ravel(), [5.0, 4.0])
    # up 2 -> 5 of (a, b): frames floor(j * 2 / 5) = 0, 0, 0, 1, 1
    y = np.array([7.0, 8.0], "float32").reshape(1, 2, 1)
    np.testing.assert_array_equal(np.asarray(resample_time(y, 5)).ravel(), [7, 7, 7, 8, 8])


def test_pool_time_is_ceil_mode_max_pooling():
    x = np.random.default_rng(2).normal(size=(2, 7, 2, 2, 3)).astype("float32")
    for alpha in (1, 2, 3, 4, 7, 8):
        got = np.asarray(pool_time(x, alpha))
        assert got.shape[1] == math.ceil(7 / alpha)
        np.testing.assert_array_equal(got, np_pool_time(x, alpha))


@pytest.mark.parametrize("groups,kernel_size", [(1, 3), (4, 3), (2, 1), (2, 2)])
def test_grouped_temporal_conv_matches_numpy(groups, kernel_size):
    x = np.random.default_rng(3).normal(size=(2, 5, 3, 3, 8)).astype("float32")
    layer = GroupedTemporalConv(12, groups=groups, kernel_size=kernel_size)
    layer.build(x.shape)
    layer.bias.assign(np.random.default_rng(4).normal(size=12).astype("float32"))
    want = np_temporal_conv(x.astype(np.float64), np.asarray(layer.kernel, np.float64), groups,
                            np.asarray(layer.bias, np.float64))
    np.testing.assert_allclose(np.asarray(layer(x)), want, rtol=1e-5, atol=1e-5)


def test_grouped_temporal_conv_equals_keras_grouped_conv3d():
    x = np.random.default_rng(5).normal(size=(2, 4, 3, 3, 8)).astype("float32")
    ours = GroupedTemporalConv(8, groups=4, use_bias=False)
    ours.build(x.shape)
    ref = keras.layers.Conv3D(8, (3, 1, 1), padding="same", groups=4, use_bias=False)
    ref.build(x.shape)
    ref.kernel.assign(np.asarray(ours.kernel).reshape(3, 1, 1, 2, 8))
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(ref(x)), rtol=1e-5, atol=1e-5)


def test_grouped_temporal_conv_layer_contract():
    run_layer_test(GroupedTemporalConv, {"filters": 8, "groups": 2, "kernel_size": 3},
                   np.random.default_rng(6).normal(size=(2, 4, 2, 2, 4)).astype("float32"),
                   expected_output_shape=(2, 4, 2, 2, 8))


def test_grouped_temporal_conv_rejects_bad_groups():
    with pytest.raises(ValueError, match="divisible"):
        GroupedTemporalConv(6, groups=4)
    with pytest.raises(ValueError, match="divisible"):
        GroupedTemporalConv(8, groups=4)(np.zeros((1, 2, 1, 1, 6), "float32"))


def test_conv_block_layer_contract():
    run_layer_test(TPNConvBlock, {"filters": 8, "kernel_size": (1, 3, 3), "strides": (1, 2, 2)},
                   np.random.default_rng(7).normal(size=(2, 2, 4, 4, 3)).astype("float32"),
                   expected_output_shape=(2, 2, 2, 2, 8))


@pytest.mark.parametrize("kernel_size, strides", [((1, 3, 3), (1, 2, 2)), ((1, 3, 3), (1, 1, 1)),
                                                  ((1, 1, 1), (1, 1, 1))])
def test_conv_block_equals_keras_conv3d_and_batch_norm_in_training(kernel_size, strides):
    """The block's factorised conv and fused batch norm keep Conv3D's and BatchNormalization's
    weights and compute what they compute: a training step's output and moving statistics."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 6, 6, 5)).astype("float32")
    block = TPNConvBlock(4, kernel_size, strides)
    block.build(x.shape)
    conv = keras.layers.Conv3D(4, kernel_size, strides=strides, padding="same", use_bias=False)
    bn = keras.layers.BatchNormalization()
    conv.build(x.shape)
    bn.build(conv.compute_output_shape(x.shape))
    assert [tuple(w.shape) for w in block.conv.weights] == [tuple(w.shape) for w in conv.weights]
    conv.set_weights(block.conv.get_weights())
    bn.set_weights([rng.uniform(0.5, 1.5, 4).astype("float32") for _ in range(4)])
    block.bn.set_weights(bn.get_weights())
    got = np.asarray(block(x, training=True))
    want = np.maximum(np.asarray(bn(conv(x), training=True)), 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    for a, b in zip(block.bn.get_weights(), bn.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- the layer
def _expected_shapes(levels, num_classes=5):
    b, m = levels[0][0], len(levels)
    return [(b, num_classes)] * (m - 1) + [(b, m * CH), (b, num_classes)]  # aux, feature, logits


# Every flow with both fusions at M = 2 and M = 3 (the fusion only matters to `adaptive`). Each
# run takes a few seconds (a fit step and a .keras round trip), so the two-level cases of every flow
# and the adaptive flow with both fusions run by default, the rest with the slow tests.
ALL_CASES = [(flow, fusion, levels) for flow in FLOWS for fusion in FUSIONS
             for levels in (LEVELS_2, LEVELS_3)]
FAST_CASES = [c for c in ALL_CASES if len(c[2]) == 2 and (c[1] == "fast" or c[0] == "adaptive")]
SLOW_CASES = [c for c in ALL_CASES if c not in FAST_CASES]


def _contract(flow, fusion, levels):
    kwargs = {"num_classes": 5, "channels": CH, "flow": flow, "fusion": fusion,
              "alphas": (1,) * (len(levels) - 1) + (2,), "dropout": 0.5, "temporal_groups": 4}
    run_layer_test(TemporalPyramid, kwargs, _levels(levels),
                   expected_output_shape=_expected_shapes(levels), expect_trainable_weights=True)


@pytest.mark.parametrize("flow,fusion,levels", FAST_CASES,
                         ids=[f"{f}-{u}-M{len(lv)}" for f, u, lv in FAST_CASES])
def test_layer_contract(flow, fusion, levels):
    _contract(flow, fusion, levels)


@pytest.mark.slow
@pytest.mark.parametrize("flow,fusion,levels", SLOW_CASES,
                         ids=[f"{f}-{u}-M{len(lv)}" for f, u, lv in SLOW_CASES])
def test_layer_contract_more_cases(flow, fusion, levels):
    _contract(flow, fusion, levels)


NUMPY_CASES = [(flow, fusion, levels, alphas, steps)
               for flow in FLOWS
               for fusion in (("fast", "softmax") if flow == "adaptive" else ("fast",))
               for levels, alphas, steps in ((LEVELS_2, (2, 1), (1, 0)),
                                             (LEVELS_3, (1, 1, 2), (2, 1, 0)))]


@pytest.mark.parametrize("flow,fusion,levels,alphas,steps", NUMPY_CASES,
                         ids=[f"{c[0]}-{c[1]}-M{len(c[2])}" for c in NUMPY_CASES])
def test_outputs_match_numpy_reference(flow, fusion, levels, alphas, steps):
    # LEVELS_3 with alphas (1, 1, 2): lengths 6, 4, 1, so the flows resample 6<->4 (uneven
    # windows), 4<->1 and 6<->1; LEVELS_2 with (2, 1): lengths 2 and 2.
    data = _levels(levels, seed=11)
    layer = TemporalPyramid(5, CH, flow=flow, fusion=fusion, alphas=alphas, temporal_groups=4)
    layer(data)
    _randomise(layer, seed=12)
    got = layer(data, training=False)
    want = np_pyramid(layer, data, flow, alphas, steps)
    for key in ("logits", "feature"):
        np.testing.assert_allclose(np.asarray(got[key]), want[key], rtol=1e-4, atol=1e-4,
                                   err_msg=key)
    assert len(got["aux_logits"]) == len(levels) - 1
    for a, b in zip(got["aux_logits"], want["aux_logits"]):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-4, atol=1e-4)
    fused = layer.aggregate(data, training=False)
    for a, b in zip(fused, want["levels"]):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-4, atol=1e-4)
    # The flows differ, so the reference is not trivially reproducing isolation.
    assert np.abs(want["feature"]).max() > 0.1


def test_mean_pooled_motion_feature_matches_numpy_reference():
    data = _levels(LEVELS_3, seed=11)
    layers = {pool: TemporalPyramid(5, CH, alphas=(1, 1, 2), temporal_groups=4, pool=pool)
              for pool in ("max", "mean")}
    for layer in layers.values():
        layer(data)
        _randomise(layer, seed=12)  # same seed: the two layers hold the same weights
    got = {pool: layer(data, training=False) for pool, layer in layers.items()}
    fused = [np.asarray(x) for x in layers["mean"].aggregate(data, training=False)]
    want = np.concatenate([x.mean(axis=(1, 2, 3)) for x in fused], axis=-1)
    np.testing.assert_allclose(np.asarray(got["mean"]["feature"]), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got["mean"]["feature"]),
                               np_pyramid(layers["mean"], data, "adaptive", (1, 1, 2), (2, 1, 0))["feature"],
                               rtol=1e-4, atol=1e-4)
    # Only the pooling differs: the fused levels agree, the features do not.
    for a, b in zip(fused, layers["max"].aggregate(data, training=False)):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(got["max"]["feature"]) - want).max() > 0.1
    assert TemporalPyramid.from_config(layers["mean"].get_config()).pool == "mean"
    with pytest.raises(ValueError, match="pool"):
        TemporalPyramid(5, CH, pool="median")


def _input_counts(layer):
    return {name: int(node.fusion_weights.shape[0]) for name, node in layer.fusion_nodes.items()}


@pytest.mark.parametrize("fusion,cls", [("fast", FastNormalizedFusion), ("softmax", SoftmaxFusion)])
def test_adaptive_graph_nodes(fusion, cls):
    layer3 = TemporalPyramid(5, CH, fusion=fusion, temporal_groups=4)
    layer3(_levels(LEVELS_3))
    # docs/design.md section 7 with M = 3: P2_td (2 inputs), P1_td (2), P1_out = P1_td (no node),
    # P2_out (3: the cross-node P2_in, P2_td, down(P1_out)), P3_out (2).
    assert _input_counts(layer3) == {"P1_td": 2, "P2_td": 2, "P2_out": 3, "P3_out": 2}
    assert all(isinstance(node, cls) for node in layer3.fusion_nodes.values())
    layer2 = TemporalPyramid(5, CH, fusion=fusion, temporal_groups=4)
    layer2(_levels(LEVELS_2))
    assert _input_counts(layer2) == {"P1_td": 2, "P2_out": 2}
    # Each node owns its weights: one `fusion_weights` variable per node, no sharing.
    variables = [w for w in layer3.trainable_weights if w.path.endswith("fusion_weights")]
    assert len(variables) == 4 and len({id(v) for v in variables}) == 4


def test_non_adaptive_flows_have_no_fusion_nodes():
    for flow in FLOWS[:-1]:
        layer = TemporalPyramid(5, CH, flow=flow, temporal_groups=4)
        layer(_levels(LEVELS_2))
        assert layer.fusion_nodes == {}
        assert not any(w.path.endswith("fusion_weights") for w in layer.weights)


def _depends(layer, data, level_out, level_in):
    """Does level `level_out` of the motion feature depend on input level `level_in`?"""
    xs = [tf.constant(x) for x in data]
    with tf.GradientTape() as tape:
        tape.watch(xs)
        feature = layer(xs, training=False)["feature"][:, level_out * CH:(level_out + 1) * CH]
        total = tf.reduce_sum(feature)
    grad = tape.gradient(total, xs[level_in])
    return grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0.0


@pytest.mark.parametrize("p2_out_weights,want", [
    ([1.0, -1.0, -1.0], (False, True, False)),  # only the cross-node input P2_in
    ([-1.0, 1.0, -1.0], (False, True, True)),  # only P2_td: levels 2 and 3
    ([-1.0, -1.0, 1.0], (True, True, True)),  # only down(P1_out): everything through P1_td
])
def test_adaptive_cross_node_connection(p2_out_weights, want):
    data = _levels(LEVELS_3, seed=13)
    layer = TemporalPyramid(5, CH, temporal_groups=4)
    layer(data)
    layer.fusion_nodes["P2_out"].fusion_weights.assign(p2_out_weights)
    assert tuple(_depends(layer, data, 1, i) for i in range(3)) == want


def test_isolation_and_top_down_dependencies():
    data = _levels(LEVELS_3, seed=14)
    iso = TemporalPyramid(5, CH, flow="isolation", temporal_groups=4)
    iso(data)
    td = TemporalPyramid(5, CH, flow="top_down", temporal_groups=4)
    td(data)
    for out in range(3):
        assert [_depends(iso, data, out, i) for i in range(3)] == [i == out for i in range(3)]
        assert [_depends(td, data, out, i) for i in range(3)] == [i >= out for i in range(3)]


@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("lengths,alphas", [((4, 2), None), ((4, 2), (1, 2)), ((4, 2), (2, 1)),
                                            ((4, 2), (4, 2)), ((5, 2), (2, 1)), ((4, 4), (1, 3))])
def test_shapes_with_different_lengths(flow, lengths, alphas):
    shapes = [(2, lengths[0], 4, 4, 6), (2, lengths[1], 2, 2, 10)]
    layer = TemporalPyramid(3, CH, flow=flow, alphas=alphas, temporal_groups=4)
    out = layer(_levels(shapes))
    assert tuple(out["logits"].shape) == (2, 3)
    assert [tuple(a.shape) for a in out["aux_logits"]] == [(2, 3)]
    assert tuple(out["feature"].shape) == (2, 2 * CH)
    a = alphas or (1, 1)
    want = [(2, math.ceil(t / al), 2, 2, CH) for t, al in zip(lengths, a)]
    assert [tuple(x.shape) for x in layer.modulate(_levels(shapes))] == want
    assert [tuple(x.shape) for x in layer.aggregate(_levels(shapes))] == want


def test_three_levels_different_lengths_and_alphas():
    shapes = [(1, 8, 8, 8, 4), (1, 4, 4, 4, 6), (1, 2, 2, 2, 10)]
    for flow in FLOWS:
        layer = TemporalPyramid(3, CH, flow=flow, alphas=(4, 1, 2), temporal_groups=4)
        out = layer(_levels(shapes))
        assert tuple(out["feature"].shape) == (1, 3 * CH)
        assert [tuple(x.shape) for x in layer.aggregate(_levels(shapes))] == \
            [(1, 2, 2, 2, CH), (1, 4, 2, 2, CH), (1, 1, 2, 2, CH)]


def test_spatial_modulation_depth():
    layer = TemporalPyramid(3, CH, temporal_groups=4)
    layer(_levels([(1, 2, 8, 8, 4), (1, 2, 4, 4, 6), (1, 2, 4, 4, 6), (1, 2, 2, 2, 10)]))
    kinds = [(b.kernel_size, b.strides) for b in layer.spatial_blocks]
    stride2 = ((1, 3, 3), (1, 2, 2))
    one = ((1, 1, 1), (1, 1, 1))
    # 8 -> 4 -> 2: two stride-2 blocks; 4 -> 2: one each; the top: one 1x1x1 block.
    assert kinds == [stride2, stride2, stride2, stride2, one]
    odd = TemporalPyramid(3, CH, temporal_groups=4)
    odd(_levels([(1, 2, 7, 7, 4), (1, 2, 2, 2, 10)]))  # 7 -> 4 -> 2 ('same' padding)
    assert len(odd.spatial_blocks) == 3


def test_fit_trains_fusion_weights_and_every_head():
    data = _levels(LEVELS_2, seed=15)
    ins = [keras.Input(s[1:]) for s in LEVELS_2]
    layer = TemporalPyramid(4, CH, temporal_groups=4, dropout=0.0)
    out = layer(ins)
    model = keras.Model(ins, [out["logits"], out["aux_logits"][0]])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * 2)
    before = {n: np.asarray(f.fusion_weights).copy() for n, f in layer.fusion_nodes.items()}
    aux_before = np.asarray(layer.aux_heads[0].kernel).copy()
    model.fit(data, [np.array([0, 3]), np.array([0, 3])], epochs=2, batch_size=2, verbose=0)
    for name, node in layer.fusion_nodes.items():
        assert not np.allclose(np.asarray(node.fusion_weights), before[name]), name
    assert not np.allclose(np.asarray(layer.aux_heads[0].kernel), aux_before)


def test_every_fusion_name_has_a_layer_and_the_preset_table_shares_the_names():
    # The names are defined once (vtcaps_tf/config/pyramid_options.py); the layer maps each to a class.
    from vtcaps_tf.config import presets

    assert set(FUSION_LAYERS) == set(FUSIONS)
    assert presets.FLOWS is FLOWS and presets.FUSIONS is FUSIONS


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="flow must be"):
        TemporalPyramid(3, CH, flow="sideways")
    with pytest.raises(ValueError, match="fusion must be"):
        TemporalPyramid(3, CH, fusion="mean")
    with pytest.raises(ValueError, match="alphas must be positive"):
        TemporalPyramid(3, CH, alphas=(1, 0))
    with pytest.raises(ValueError, match="dropout"):
        TemporalPyramid(3, CH, dropout=1.0)
    with pytest.raises(ValueError, match="at least 2 levels"):
        TemporalPyramid(3, CH)(_levels(LEVELS_2[:1]))
    with pytest.raises(ValueError, match="list of levels"):
        TemporalPyramid(3, CH)(_levels(LEVELS_2)[0])
    with pytest.raises(ValueError, match="alphas has 3 entries for 2 levels"):
        TemporalPyramid(3, CH, alphas=(1, 1, 1))(_levels(LEVELS_2))
    with pytest.raises(ValueError, match="bottom .* to"):
        TemporalPyramid(3, CH)(_levels([(1, 2, 2, 2, 4), (1, 2, 4, 4, 4)]))
    with pytest.raises(ValueError, match="halving cannot"):
        TemporalPyramid(3, CH)(_levels([(1, 2, 6, 6, 4), (1, 2, 4, 4, 4)]))
    with pytest.raises(ValueError, match=r"\[B, T, H, W, C\]"):
        TemporalPyramid(3, CH)([np.zeros((1, 4, 4, 4), "float32")] * 2)
    with pytest.raises(ValueError, match="static T"):
        TemporalPyramid(3, CH)([keras.Input((None, 4, 4, 4)), keras.Input((2, 2, 2, 4))])
    layer = TemporalPyramid(3, CH, temporal_groups=4)
    layer(_levels(LEVELS_2))
    with pytest.raises(ValueError, match="built for 2 levels"):
        layer(_levels(LEVELS_3))


def test_three_level_preset_runs_the_adaptive_graph_like_numpy():
    # The `tiny3` preset collects stages 2, 3, 4 (16x16, 8x8, 4x4 maps, 16 frames each): the
    # adaptive flow has P2_out's three inputs and the cross-node links of paper Fig 6 / Eq. 17.
    from vtcaps_tf.models import build_model

    keras.utils.set_random_seed(3)
    model = build_model("tiny3", num_classes=3)
    assert model.config.tpn_levels == (2, 3, 4) and model.pyramid.num_levels == 3
    assert _input_counts(model.pyramid) == {"P1_td": 2, "P2_td": 2, "P2_out": 3, "P3_out": 2}
    _randomise(model.pyramid, seed=4)
    rng = np.random.default_rng(5)
    inputs = {}
    for name, spec in model.input_specs(batch_size=2).items():  # whatever the model's inputs are
        shape = tuple(spec.shape)
        inputs[name] = (rng.integers(0, 256, shape).astype("uint8") if spec.dtype == tf.uint8
                        else rng.uniform(0, 1, shape).astype(spec.dtype.as_numpy_dtype))
    got = model(inputs, training=False)
    video = inputs["long_frames"].astype("float32") / 127.5 - 1.0
    stages = model.tpn_backbone({"video": video}, training=False)
    levels = [np.asarray(stages[f"stage{i}"]) for i in (2, 3, 4)]
    assert [lv.shape[2] for lv in levels] == [16, 8, 4]
    # Stride-2 convs per level to reach 4x4: 16 -> 8 -> 4 (two), 8 -> 4 (one), top (none).
    want = np_pyramid(model.pyramid, levels, "adaptive", (1, 1, 1), (2, 1, 0))
    np.testing.assert_allclose(np.asarray(got["motion_feature"]), want["feature"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.asarray(got["tpn_logits"]), want["logits"], rtol=1e-3, atol=1e-3)
    assert np.abs(want["feature"]).max() > 0.1
