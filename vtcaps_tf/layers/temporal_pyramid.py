"""TPN-ERM: the temporal pyramid over backbone stages (paper section 3.2, Eq. 7-17, Fig 6).

`TemporalPyramid` takes M >= 2 backbone stage outputs, bottom to top, each [B, T_i, H_i, W_i, C_i],
and returns `{"logits", "aux_logits", "feature"}`:

1. spatial semantic modulation: stacked (1x3x3, stride 1x2x2) conv+BN+ReLU blocks bring every
   level to the top level's spatial size and to `channels` channels (the top level, and any level
   already at that size, gets a 1x1x1 conv+BN+ReLU); an auxiliary classifier (global average pool,
   dropout, dense) reads each non-top level here, as in TPN, so the modulation gets its own loss
   (paper Eq. 10);
2. temporal rate modulation: a grouped (3x1x1) conv, then max-pooling over time by alpha_i;
3. information flow between levels: `isolation`, `top_down`, `bottom_up`, `cascade`, `parallel`
   (TPN / mmaction2) or `adaptive` (the paper's weighted BiFPN-style graph, docs/design.md section 7);
4. every level max-pooled (the paper) or averaged (`pool="mean"`) over (T, H, W) to a vector,
   concatenated bottom to top into the "high-level motion feature" [B, M*channels]; dropout;
   dense -> logits.

Levels may differ in length: wherever two levels meet, the source is resampled in time to the
target's length (nearest-neighbour upsampling, max-pool downsampling; `resample_time`).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from vtcaps_tf.layers.fusion import FastNormalizedFusion, SoftmaxFusion
from vtcaps_tf.layers.resnet3d import FactorisedConv3D, FusedBatchNorm
from vtcaps_tf.config.pyramid_options import FLOWS, FUSIONS, POOLS

FUSION_LAYERS = {"fast": FastNormalizedFusion, "softmax": SoftmaxFusion}  # one per name of FUSIONS


def resample_time(x, length):
    """[B, T, ...] -> [B, length, ...] along axis 1 (T must be static).

    T < length: nearest-neighbour upsampling, frame j takes source frame floor(j * T / length)
    (PyTorch's `nearest`, the upsampling TPN uses). T > length: max-pooling; output frame j is the
    maximum over source frames [floor(j * T / length), ceil((j + 1) * T / length)) (adaptive max
    pooling, which is plain max-pooling by T / length when that is an integer).
    """
    steps = x.shape[1]
    if steps is None:
        raise ValueError("resample_time needs a static time axis (axis 1); got shape "
                         f"{tuple(x.shape)}")
    if length < 1:
        raise ValueError(f"cannot resample to {length} frames")
    if steps == length:
        return x
    if steps < length:
        if length % steps == 0:
            return ops.repeat(x, length // steps, axis=1)
        return ops.take(x, [(j * steps) // length for j in range(length)], axis=1)
    if steps % length == 0:
        rest = tuple(x.shape[2:])
        if any(d is None for d in rest):
            raise ValueError(f"resample_time needs static non-batch axes; got {tuple(x.shape)}")
        grouped = ops.reshape(x, (-1, length, steps // length) + rest)
        return ops.max(grouped, axis=2)
    windows = [(j * steps // length, -((-(j + 1) * steps) // length)) for j in range(length)]
    return ops.concatenate([ops.max(x[:, a:b], axis=1, keepdims=True) for a, b in windows], axis=1)


def pool_time(x, alpha):
    """Max-pool [B, T, ...] over time by `alpha`, windows [j*alpha, min((j+1)*alpha, T)).

    The ceil-mode pooling of TPN's temporal rate modulation: ceil(T / alpha) frames, a short last
    window when alpha does not divide T (TF's 'same' pooling would centre the padding instead).
    """
    steps = x.shape[1]
    if alpha == 1:
        return x
    if steps is None:
        raise ValueError(f"pool_time needs a static time axis; got shape {tuple(x.shape)}")
    short = -steps % alpha
    if short:  # repeating the last frame leaves its window's maximum unchanged
        x = ops.concatenate([x, ops.repeat(x[:, -1:], short, axis=1)], axis=1)
    return resample_time(x, (steps + short) // alpha)


def _static_level_shape(i, shape):
    shape = tuple(shape)
    if len(shape) != 5:
        raise ValueError(f"TemporalPyramid level {i} must be [B, T, H, W, C], got shape {shape}")
    if any(d is None for d in shape[1:]):
        raise ValueError(f"TemporalPyramid level {i} needs static T, H, W, C; got shape {shape}")
    return shape


def _spatial_steps(i, hw, top_hw):
    """How many stride-2 ('same' padding) convs bring (h, w) to the top level's (h, w)."""
    steps, (h, w) = 0, hw
    while (h, w) != tuple(top_hw):
        if h < top_hw[0] or w < top_hw[1]:
            break
        h, w, steps = -(-h // 2), -(-w // 2), steps + 1
    if (h, w) != tuple(top_hw):
        raise ValueError(
            f"TemporalPyramid level {i} has spatial size {tuple(hw)}, which stride-2 halving "
            f"cannot bring to the top level's {tuple(top_hw)}; levels must be ordered bottom "
            "(largest) to top (smallest)")
    return steps


@keras.saving.register_keras_serializable(package="vtcaps")
class TPNConvBlock(keras.layers.Layer):
    """Conv3D (no bias, 'same' padding) + BatchNorm + ReLU: the pyramid's conv unit. Its kernels
    are spatial (1 x kh x kw) or temporal (t x 1 x 1), so it runs as the backbone's
    `FactorisedConv3D` and `FusedBatchNorm` (the same weights and arithmetic, faster on CPU)."""

    def __init__(self, filters, kernel_size=(1, 3, 3), strides=(1, 1, 1), **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = tuple(kernel_size) if isinstance(kernel_size, (list, tuple)) \
            else (int(kernel_size),) * 3
        self.strides = tuple(strides) if isinstance(strides, (list, tuple)) else (int(strides),) * 3
        self.conv = FactorisedConv3D(self.filters, self.kernel_size, strides=self.strides,
                                     kernel_initializer="glorot_uniform",  # Conv3D's default
                                     name="conv", dtype=self.dtype_policy)
        self.bn = FusedBatchNorm(name="bn", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build(self.conv.compute_output_shape(input_shape))

    def call(self, x, training=None):
        return ops.relu(self.bn(self.conv(x), training=training))

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "kernel_size": self.kernel_size,
                       "strides": self.strides})
        return config


@keras.saving.register_keras_serializable(package="vtcaps")
class GroupedTemporalConv(keras.layers.Layer):
    """A grouped (k x 1 x 1) convolution over time, 'same' padding, on [B, T, H, W, C].

    The same arithmetic as `Conv3D(filters, (k, 1, 1), groups=groups)` (same kernel layout:
    [k, C/groups, filters], output channels grouped contiguously), written as one einsum per tap:
    Keras runs grouped convolutions through XLA, which TF Serving's CPU build does not enable by
    default and which is slower on CPU; plain einsums export and run everywhere.
    """

    def __init__(self, filters, groups=1, kernel_size=3, use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.groups = int(groups)
        self.kernel_size = int(kernel_size)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        if self.kernel_size < 1 or self.groups < 1 or self.filters < 1:
            raise ValueError("filters, groups and kernel_size must be positive")
        if self.filters % self.groups:
            raise ValueError(
                f"filters ({self.filters}) must be divisible by groups ({self.groups})")

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(f"GroupedTemporalConv input channels ({channels}) must be known and "
                             f"divisible by groups ({self.groups})")
        self.kernel = self.add_weight(
            name="kernel", shape=(self.kernel_size, channels // self.groups, self.filters),
            initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") \
            if self.use_bias else None

    def call(self, x):
        steps, k, g = x.shape[1], self.kernel_size, self.groups
        cin_g, cout_g = x.shape[-1] // g, self.filters // g
        # TF 'same' padding: (k - 1) // 2 frames before, the rest after.
        before = (k - 1) // 2
        padded = ops.pad(x, [(0, 0), (before, k - 1 - before), (0, 0), (0, 0), (0, 0)])
        spatial = (-1,) + tuple(x.shape[1:4])
        kernel = ops.reshape(ops.cast(self.kernel, x.dtype), (k, cin_g, g, cout_g))
        out = None
        for tap in range(k):
            window = ops.reshape(padded[:, tap:tap + steps], spatial + (g, cin_g))
            term = ops.einsum("bthwgi,igo->bthwgo", window, kernel[tap])
            out = term if out is None else out + term
        out = ops.reshape(out, spatial + (self.filters,))
        if self.bias is not None:
            out = out + ops.cast(self.bias, x.dtype)
        return out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "groups": self.groups,
                       "kernel_size": self.kernel_size, "use_bias": self.use_bias,
                       "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)})
        return config


@keras.saving.register_keras_serializable(package="vtcaps")
class TemporalPyramid(keras.layers.Layer):
    """TPN-ERM over M >= 2 backbone levels; see the module docstring for the pipeline.

    Args:
        num_classes: classes of the TPN head and of every auxiliary head.
        channels: width of every pyramid level (`tpn_channels`; 1024 in the paper).
        flow: one of `FLOWS`.
        fusion: `"fast"` (FastNormalizedFusion) or `"softmax"` (SoftmaxFusion), used by the
            `adaptive` flow's nodes.
        alphas: temporal rate per level (max-pool stride over time after the temporal conv);
            None means 1 for every level.
        dropout: rate before the TPN head's and the auxiliary heads' dense layers.
        temporal_groups: groups of the temporal-modulation conv, as in TPN (32); the layer uses
            gcd(channels, temporal_groups), so any `channels` works.
        pool: `"max"` (the paper) or `"mean"`: how each fused level is reduced over (T, H, W) to
            its part of the motion feature.

    `call(levels, training=None)` returns `{"logits": [B, num_classes], "aux_logits": (M-1
    tensors [B, num_classes], bottom to top, a tuple), "feature": [B, M*channels]}`.
    `modulate(levels)` returns the M modulated levels, `aggregate(levels)` the M fused levels
    before pooling; `fusion_nodes` maps the adaptive flow's node names to their fusion layers;
    after build, `level_lengths` holds each level's ceil(T_i / alpha_i).
    """

    def __init__(self, num_classes, channels, flow="adaptive", fusion="fast", alphas=None,
                 dropout=0.5, temporal_groups=32, pool="max", **kwargs):
        super().__init__(**kwargs)
        if flow not in FLOWS:
            raise ValueError(f"flow must be one of {FLOWS}, got {flow!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if int(num_classes) < 1 or int(channels) < 1 or int(temporal_groups) < 1:
            raise ValueError("num_classes, channels and temporal_groups must be positive")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if alphas is not None:
            alphas = tuple(int(a) for a in alphas)
            if any(a < 1 for a in alphas):
                raise ValueError(f"alphas must be positive integers, got {alphas}")
        self.num_classes = int(num_classes)
        self.channels = int(channels)
        self.flow = flow
        self.fusion = fusion
        self.alphas = alphas
        self.dropout = float(dropout)
        self.temporal_groups = int(temporal_groups)
        self.pool = pool

    # ------------------------------------------------------------------ build
    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or not input_shape or \
                not isinstance(input_shape[0], (list, tuple)):
            raise ValueError("TemporalPyramid is called on a list of levels [B, T, H, W, C], "
                             f"bottom to top; got one input of shape {input_shape}")
        shapes = [_static_level_shape(i, s) for i, s in enumerate(input_shape)]
        m = len(shapes)
        if m < 2:
            raise ValueError(f"TemporalPyramid needs at least 2 levels, got {m}")
        alphas = self.alphas or (1,) * m
        if len(alphas) != m:
            raise ValueError(f"alphas has {len(alphas)} entries for {m} levels")
        self.num_levels = m
        top_hw = shapes[-1][2:4]
        ch, dt = self.channels, self.dtype_policy

        # 1. Spatial semantic modulation (flat list; `_spatial_counts` blocks per level).
        self.spatial_blocks, counts = [], []
        for i, shape in enumerate(shapes):
            steps = 0 if i == m - 1 else _spatial_steps(i, shape[2:4], top_hw)
            level_blocks = [TPNConvBlock(ch, (1, 3, 3), (1, 2, 2), name=f"spatial_{i}_{s}",
                                         dtype=dt) for s in range(steps)] or \
                [TPNConvBlock(ch, (1, 1, 1), name=f"spatial_{i}_0", dtype=dt)]
            cur = (None,) + shape[1:]
            for block in level_blocks:
                block.build(cur)
                cur = block.compute_output_shape(cur)
            self.spatial_blocks.extend(level_blocks)
            counts.append(len(level_blocks))
        self._spatial_counts = tuple(counts)
        h, w = top_hw

        # Auxiliary heads, one per non-top level.
        self.aux_dropouts = [keras.layers.Dropout(self.dropout, name=f"aux_dropout_{i}", dtype=dt)
                             for i in range(m - 1)]
        self.aux_heads = [keras.layers.Dense(self.num_classes, name=f"aux_head_{i}", dtype=dt)
                          for i in range(m - 1)]
        for head in self.aux_heads:
            head.build((None, ch))

        # 2. Temporal rate modulation.
        groups = math.gcd(ch, self.temporal_groups)
        self.temporal_convs = [GroupedTemporalConv(ch, groups=groups, kernel_size=3,
                                                   name=f"temporal_{i}", dtype=dt)
                               for i in range(m)]
        for i, conv in enumerate(self.temporal_convs):
            conv.build((None, shapes[i][1], h, w, ch))
        self._alphas = tuple(alphas)
        self.level_lengths = tuple(-(-s[1] // a) for s, a in zip(shapes, alphas))
        level_shape = [(None, t, h, w, ch) for t in self.level_lengths]

        # 3. Flow-specific layers.
        self.downsample_convs = []  # bottom-up path of the TPN flows: (3x1x1) conv, then pool
        if self.flow in ("bottom_up", "cascade", "parallel"):
            self.downsample_convs = [keras.layers.Conv3D(ch, (3, 1, 1), padding="same",
                                                         use_bias=False, name=f"downsample_{i}",
                                                         dtype=dt)
                                     for i in range(m - 1)]
            for i, conv in enumerate(self.downsample_convs):
                conv.build(level_shape[i])
        self.td_fusions, self.td_convs, self.out_fusions, self.out_convs = [], [], [], []
        if self.flow == "adaptive":
            fusion_cls = FUSION_LAYERS[self.fusion]
            for i in range(m - 1):  # P_{i+1}^td, levels 1 .. M-1 (1-based)
                self.td_fusions.append(fusion_cls(name=f"p{i + 1}_td_fusion", dtype=dt))
                self.td_convs.append(TPNConvBlock(ch, (1, 3, 3), name=f"p{i + 1}_td_conv",
                                                  dtype=dt))
                self.td_fusions[-1].build([level_shape[i]] * 2)
                self.td_convs[-1].build(level_shape[i])
            for i in range(1, m):  # P_{i+1}^out, levels 2 .. M (1-based)
                inputs = 3 if i < m - 1 else 2
                self.out_fusions.append(fusion_cls(name=f"p{i + 1}_out_fusion", dtype=dt))
                self.out_convs.append(TPNConvBlock(ch, (1, 3, 3), name=f"p{i + 1}_out_conv",
                                                   dtype=dt))
                self.out_fusions[-1].build([level_shape[i]] * inputs)
                self.out_convs[-1].build(level_shape[i])

        # 4. The TPN head.
        self.head_dropout = keras.layers.Dropout(self.dropout, name="head_dropout", dtype=dt)
        self.head = keras.layers.Dense(self.num_classes, name="head", dtype=dt)
        self.head.build((None, m * ch))

    # ------------------------------------------------------------------ pieces
    @property
    def fusion_nodes(self):
        """Adaptive flow only: {"P1_td": layer, ..., "P2_out": layer, ...} (1-based levels)."""
        nodes = {f"P{i + 1}_td": f for i, f in enumerate(getattr(self, "td_fusions", []))}
        nodes.update({f"P{i + 2}_out": f for i, f in enumerate(getattr(self, "out_fusions", []))})
        return nodes

    def _spatial_modulation(self, levels, training):
        out, start = [], 0
        for x, count in zip(levels, self._spatial_counts):
            for block in self.spatial_blocks[start:start + count]:
                x = block(x, training=training)
            out.append(x)
            start += count
        return out

    def _temporal_modulation(self, levels):
        return [pool_time(conv(x), alpha)
                for x, conv, alpha in zip(levels, self.temporal_convs, self._alphas)]

    def _top_down(self, feats):
        out = list(feats)
        for i in range(len(out) - 2, -1, -1):
            out[i] = out[i] + resample_time(out[i + 1], out[i].shape[1])
        return out

    def _bottom_up(self, feats):
        out = list(feats)
        for i in range(1, len(out)):
            down = self.downsample_convs[i - 1](out[i - 1])
            out[i] = out[i] + resample_time(down, out[i].shape[1])
        return out

    def _adaptive(self, feats, training):
        m = len(feats)

        def at(x, i):
            return resample_time(x, feats[i].shape[1])

        td = [None] * m
        td[m - 1] = feats[m - 1]
        for i in range(m - 2, -1, -1):
            fused = self.td_fusions[i]([feats[i], at(td[i + 1], i)])
            td[i] = self.td_convs[i](fused, training=training)
        out = [None] * m
        out[0] = td[0]
        for i in range(1, m):
            inputs = [feats[i], td[i], at(out[i - 1], i)] if i < m - 1 else \
                [feats[i], at(out[i - 1], i)]
            out[i] = self.out_convs[i - 1](self.out_fusions[i - 1](inputs), training=training)
        return out

    def _flow(self, feats, training):
        if self.flow == "isolation":
            return list(feats)
        if self.flow == "top_down":
            return self._top_down(feats)
        if self.flow == "bottom_up":
            return self._bottom_up(feats)
        if self.flow == "cascade":
            return self._bottom_up(self._top_down(feats))
        if self.flow == "parallel":  # both flows from the same features, summed level by level
            return [a + b for a, b in zip(self._top_down(feats), self._bottom_up(feats))]
        return self._adaptive(feats, training)

    def _check_levels(self, levels):
        if not isinstance(levels, (list, tuple)):
            raise ValueError("TemporalPyramid is called on a list of levels, bottom to top")
        if len(levels) != self.num_levels:
            raise ValueError(f"TemporalPyramid was built for {self.num_levels} levels, called with "
                             f"{len(levels)}")

    # ------------------------------------------------------------------ call
    def modulate(self, levels, training=None):
        """Spatial then temporal modulation: the M features F_i the flow combines (paper 3.2.2),
        each [B, ceil(T_i / alpha_i), H_top, W_top, channels]."""
        self._check_levels(levels)
        return self._temporal_modulation(self._spatial_modulation(levels, training))

    def aggregate(self, levels, training=None):
        """The M levels after modulation and flow (the F_i' of paper Eq. 11-13, or P_i^out)."""
        return self._flow(self.modulate(levels, training), training)

    def call(self, levels, training=None):
        self._check_levels(levels)
        spatial = self._spatial_modulation(levels, training)
        # A tuple, not a list: Keras 3's compile/fit mishandles lists nested inside dict outputs.
        aux_logits = tuple(
            head(drop(ops.mean(x, axis=(1, 2, 3)), training=training))
            for x, drop, head in zip(spatial[:-1], self.aux_dropouts, self.aux_heads))
        fused = self._flow(self._temporal_modulation(spatial), training)
        reduce = ops.max if self.pool == "max" else ops.mean
        feature = ops.concatenate([reduce(x, axis=(1, 2, 3)) for x in fused], axis=-1)
        logits = self.head(self.head_dropout(feature, training=training))
        return {"logits": logits, "aux_logits": aux_logits, "feature": feature}

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "channels": self.channels,
                       "flow": self.flow, "fusion": self.fusion, "alphas": self.alphas,
                       "dropout": self.dropout, "temporal_groups": self.temporal_groups,
                       "pool": self.pool})
        return config
