"""Capsule layers of 3D-CapsNet (paper section 3.1.3, docs/design.md section 6).

`PrimaryCaps` turns the pooled backbone feature map into 8D capsules, `DigitCaps` routes them by
agreement (Sabour et al. 2017) into one 16D capsule per class, and `ReconstructionDecoder` rebuilds
the clip's middle frame from the masked class capsules.
"""

from __future__ import annotations

import keras
from keras import ops

SQUASH_EPSILON = 1e-7  # inside the square root (paper Eq. 4): keeps the gradient finite at |s| = 0
HALF_DTYPES = ("float16", "bfloat16")


def _float32_under_half_policy(kwargs):
    """`kwargs` with dtype float32 when the layer's policy (its own or the global one) computes in
    half precision: routing sums ~1000 votes per capsule and exponentiates agreements, which
    float16 rounds or overflows. Inputs are cast to float32 on entry (Keras autocast)."""
    policy = keras.dtype_policies.get(kwargs.get("dtype") or keras.config.dtype_policy())
    if policy.compute_dtype in HALF_DTYPES:
        kwargs["dtype"] = "float32"
    return kwargs


def squash(x, axis=-1):
    """(|s|^2 / (1 + |s|^2)) * s / sqrt(|s|^2 + 1e-7) along `axis`; any rank.

    Half-precision inputs are squashed in float32 (|s|^2 overflows float16 early) and cast back.
    """
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    compute = "float32" if dtype in ("float16", "bfloat16") else dtype
    s = ops.cast(x, compute)
    squared_norm = ops.sum(ops.square(s), axis=axis, keepdims=True)
    scale = squared_norm / (1.0 + squared_norm) / ops.sqrt(squared_norm + SQUASH_EPSILON)
    return ops.cast(scale * s, dtype)


def capsule_length(x, axis=-1):
    """Length of each capsule vector, sqrt(|v|^2 + 1e-7) (finite gradient at 0)."""
    x = ops.convert_to_tensor(x)
    return ops.sqrt(ops.sum(ops.square(x), axis=axis) + SQUASH_EPSILON)


def capsule_mask(lengths, labels=None):
    """One-hot [B, C] mask for the decoder: of `labels` when given (training), else of the
    longest capsule (inference). `labels` are integer class ids, shape [B] or [B, 1]."""
    lengths = ops.convert_to_tensor(lengths)
    num_classes = lengths.shape[-1]
    if num_classes is None:
        raise ValueError("capsule_mask needs a static number of capsules (last axis of lengths)")
    if labels is None:
        index = ops.argmax(lengths, axis=-1)
    else:
        index = ops.reshape(ops.cast(labels, "int32"), (-1,))
    return ops.one_hot(index, num_classes, dtype=lengths.dtype)


@keras.saving.register_keras_serializable(package="vtcaps")
class PrimaryCaps(keras.layers.Layer):
    """[B, H, W, C] feature map -> [B, (H-k+1)*(W-k+1)*capsule_types, capsule_dim] squashed capsules.

    A `kernel_size` x `kernel_size` valid convolution to capsule_types * capsule_dim channels, each
    position's channels split into `capsule_types` capsules (paper: 512x7x7 -> 256x6x6 -> 1152 x 8D).
    The caller pools the time axis first. Runs in float32 under a half-precision (mixed) policy.
    """

    def __init__(self, capsule_types=32, capsule_dim=8, kernel_size=2, strides=1,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**_float32_under_half_policy(kwargs))
        for name, value in (("capsule_types", capsule_types), ("capsule_dim", capsule_dim),
                            ("kernel_size", kernel_size), ("strides", strides)):
            if int(value) < 1:
                raise ValueError(f"PrimaryCaps {name} must be a positive integer, got {value!r}")
        self.capsule_types = int(capsule_types)
        self.capsule_dim = int(capsule_dim)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.conv = keras.layers.Conv2D(
            self.capsule_types * self.capsule_dim, self.kernel_size, strides=self.strides,
            padding="valid", kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy,
            name="conv")

    def _grid(self, height, width):
        def out(size):
            return None if size is None else (size - self.kernel_size) // self.strides + 1
        return out(height), out(width)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError("PrimaryCaps expects a [batch, height, width, channels] feature map "
                             f"(pool the time axis first), got shape {tuple(input_shape)}")
        h, w = self._grid(input_shape[1], input_shape[2])
        if h is None or w is None:
            raise ValueError(f"PrimaryCaps needs static height and width, got {tuple(input_shape)}")
        if h < 1 or w < 1:
            raise ValueError(f"feature map {input_shape[1]}x{input_shape[2]} is smaller than the "
                             f"{self.kernel_size}x{self.kernel_size} PrimaryCaps kernel")
        self.conv.build(input_shape)

    def call(self, inputs):
        x = self.conv(inputs)
        h, w = self._grid(inputs.shape[1], inputs.shape[2])
        x = ops.reshape(x, (-1, h * w * self.capsule_types, self.capsule_dim))
        return squash(x)

    def compute_output_shape(self, input_shape):
        h, w = self._grid(input_shape[1], input_shape[2])
        return (input_shape[0], h * w * self.capsule_types, self.capsule_dim)

    def get_config(self):
        config = super().get_config()
        config.update(capsule_types=self.capsule_types, capsule_dim=self.capsule_dim,
                      kernel_size=self.kernel_size, strides=self.strides,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.saving.register_keras_serializable(package="vtcaps")
class DigitCaps(keras.layers.Layer):
    """Dynamic routing by agreement: [B, n_in, d_in] -> [B, num_capsules, capsule_dim].

    Votes u_hat[b,i,j] = W[i,j]^T u[b,i] by one einsum over a [n_in, num_capsules, d_in,
    capsule_dim] weight. Routing logits start at 0; each iteration takes coupling coefficients
    c = softmax over the output capsules, v = squash(sum_i c_ij u_hat_ij), and (between iterations
    only) adds the agreement <u_hat_ij, v_j> to the logits. Inner iterations see stop-gradiented
    votes, so gradients flow through the last iteration only (coefficients act as constants).
    Weights and routing are float32 under a half-precision (mixed) policy.
    """

    def __init__(self, num_capsules, capsule_dim=16, routing_iterations=3,
                 kernel_initializer=None, **kwargs):
        super().__init__(**_float32_under_half_policy(kwargs))
        if int(num_capsules) < 1 or int(capsule_dim) < 1:
            raise ValueError(f"DigitCaps needs num_capsules >= 1 and capsule_dim >= 1, got "
                             f"{num_capsules!r}, {capsule_dim!r}")
        if int(routing_iterations) < 1:
            raise ValueError(f"routing_iterations must be >= 1, got {routing_iterations!r}")
        self.num_capsules = int(num_capsules)
        self.capsule_dim = int(capsule_dim)
        self.routing_iterations = int(routing_iterations)
        # Small normal weights: with c = 1/num_capsules over ~1000 inputs the first squash sees
        # |s| of order one, so lengths start inside the margin loss's active range.
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.RandomNormal(stddev=0.05))

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError("DigitCaps expects capsules [batch, n_in, d_in] with static n_in and "
                             f"d_in, got shape {tuple(input_shape)}")
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_shape[1], self.num_capsules, input_shape[2], self.capsule_dim),
            initializer=self.kernel_initializer)

    def call(self, inputs):
        kernel = ops.cast(self.kernel, inputs.dtype)
        # Votes laid out [B, n_out, n_in, d_out]: both routing contractions then run over
        # contiguous input-capsule rows (about 2x faster than [B, n_in, n_out, d_out] on CPU).
        votes = ops.einsum("bid,ijde->bjie", inputs, kernel)
        inner_votes = ops.stop_gradient(votes)
        logits = ops.zeros_like(votes[..., 0])  # [B, n_out, n_in]
        for iteration in range(self.routing_iterations):
            last = iteration == self.routing_iterations - 1
            coupling = ops.softmax(logits, axis=1)  # over the output capsules
            v = squash(ops.einsum("bji,bjie->bje", coupling, votes if last else inner_votes))
            if not last:
                logits = logits + ops.einsum("bjie,bje->bji", inner_votes, v)
        return v

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_capsules, self.capsule_dim)

    def get_config(self):
        config = super().get_config()
        config.update(num_capsules=self.num_capsules, capsule_dim=self.capsule_dim,
                      routing_iterations=self.routing_iterations,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.saving.register_keras_serializable(package="vtcaps")
class ReconstructionDecoder(keras.layers.Layer):
    """call([digit_caps [B, C, D], mask [B, C]]) -> reconstruction [B, *target_shape] in [0, 1].

    Capsules outside the one-hot mask are zeroed, the rest flattened through FC hidden_units[0]
    -> hidden_units[1] (ReLU) -> prod(target_shape) (sigmoid) (paper Fig 2's three FC layers).
    """

    def __init__(self, target_shape, hidden_units=(512, 1024), **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        if not self.target_shape or min(self.target_shape) < 1:
            raise ValueError(f"target_shape must be positive sizes, e.g. (32, 32, 3); got {target_shape!r}")
        if min(self.hidden_units, default=1) < 1:
            raise ValueError(f"hidden_units must be positive, got {hidden_units!r}")
        self.hidden = [keras.layers.Dense(units, activation="relu", dtype=self.dtype_policy,
                                          name=f"fc{k + 1}")
                       for k, units in enumerate(self.hidden_units)]
        size = 1
        for d in self.target_shape:
            size *= d
        self.output_dense = keras.layers.Dense(size, activation="sigmoid", dtype=self.dtype_policy,
                                               name=f"fc{len(self.hidden_units) + 1}")

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError("ReconstructionDecoder is called on [digit_caps, mask]")
        caps_shape, mask_shape = input_shape
        if len(caps_shape) != 3 or caps_shape[1] is None or caps_shape[2] is None:
            raise ValueError(f"digit_caps must be [batch, capsules, dim] with static sizes, got "
                             f"{tuple(caps_shape)}")
        if tuple(mask_shape[1:]) != tuple(caps_shape[1:2]):
            raise ValueError(f"mask shape {tuple(mask_shape)} does not match digit_caps "
                             f"{tuple(caps_shape)}: expected [batch, {caps_shape[1]}]")
        width = caps_shape[1] * caps_shape[2]
        for dense in self.hidden:
            dense.build((caps_shape[0], width))
            width = dense.units
        self.output_dense.build((caps_shape[0], width))

    def call(self, inputs):
        digit_caps, mask = inputs
        masked = digit_caps * ops.expand_dims(ops.cast(mask, digit_caps.dtype), -1)
        x = ops.reshape(masked, (-1, digit_caps.shape[1] * digit_caps.shape[2]))
        for dense in self.hidden:
            x = dense(x)
        return ops.reshape(self.output_dense(x), (-1,) + self.target_shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],) + self.target_shape

    def get_config(self):
        config = super().get_config()
        config.update(target_shape=list(self.target_shape), hidden_units=list(self.hidden_units))
        return config
