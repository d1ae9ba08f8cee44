"""(2+1)D residual blocks of the inflated ResNet backbone (paper 3.1.1, docs/design.md section 5).

Every 3D convolution is factorised into a temporal conv (t x 1 x 1) and a spatial conv (1 x k x k),
each followed by BatchNorm + ReLU. Tensors are channels-last: [batch, time, height, width, channels].

A block takes either `x` or `[x, skip]`. With two inputs the shortcut branch reads `skip` instead
of `x`: the first block of stage 1 gets `skip = x * AU map` (see `AUAttention`), which gives the
paper's `out = F(x) + x * map` (projected by the shortcut conv when the channel count changes).

Speed on CPU: TF's Conv3D backprop kernels are slow for these factorised kernels, and Keras'
BatchNormalization runs as many small ops. So each conv is a `FactorisedConv3D` (a Conv3D kernel,
computed as one 2D conv over merged axes) and each BN a `FusedBatchNorm` (Keras' maths in TF's
fused kernel). Both compute what Conv3D / BatchNormalization compute, with the same weights.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


def _pair(value, name):
    """An int or a (temporal, spatial) pair -> (temporal, spatial) ints."""
    if isinstance(value, int):
        return value, value
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a (temporal, spatial) pair, got {value!r}")
    return value


def _triple(value, name):
    if isinstance(value, int):
        return value, value, value
    value = tuple(int(v) for v in value)
    if len(value) != 3:
        raise ValueError(f"{name} must be an int or a (t, h, w) triple, got {value!r}")
    return value


@keras.saving.register_keras_serializable(package="vtcaps")
class FactorisedConv3D(keras.layers.Layer):
    """A bias-free, 'same'-padded Conv3D whose kernel is temporal (t x 1 x 1) or spatial
    (1 x kh x kw), computed as one 2D convolution: the spatial kernel over [B*T, H, W, C], the
    temporal one over [B, T, H*W, C] with a (t x 1) kernel. The kernel variable keeps Conv3D's
    [t, kh, kw, C_in, filters] layout and initialiser fans.

    A stride along an axis whose kernel size is 1 is a subsampling (with 'same' padding a size-1
    kernel pads nothing), so it is applied by slicing before the 2D conv.
    """

    def __init__(self, filters, kernel_size, strides=1, kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        if int(filters) <= 0:
            raise ValueError(f"filters must be positive, got {filters}")
        self.filters = int(filters)
        self.kernel_size = _triple(kernel_size, "kernel_size")
        self.strides = _triple(strides, "strides")
        kt, kh, kw = self.kernel_size
        if kt != 1 and (kh, kw) != (1, 1):
            raise ValueError(f"FactorisedConv3D takes a (t,1,1) or (1,kh,kw) kernel, got {self.kernel_size}")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        if len(input_shape) != 5 or input_shape[-1] is None:
            raise ValueError(f"FactorisedConv3D expects [B,T,H,W,C] inputs with known C, got {input_shape}")
        self.kernel = self.add_weight(name="kernel", shape=self.kernel_size + (input_shape[-1], self.filters),
                                      initializer=self.kernel_initializer)

    def call(self, x):
        kt, kh, kw = self.kernel_size
        st, sh, sw = self.strides
        _, t, h, w, c = x.shape
        if (kh, kw) == (1, 1):
            if (sh, sw) != (1, 1):
                x = x[:, :, ::sh, ::sw]
                h, w = x.shape[2], x.shape[3]
            y = ops.conv(ops.reshape(x, (-1, t, h * w, c)), ops.reshape(self.kernel, (kt, 1, c, self.filters)),
                         strides=(st, 1), padding="same")
            return ops.reshape(y, (-1, y.shape[1], h, w, self.filters))
        if st != 1:
            x = x[:, ::st]
            t = x.shape[1]
        y = ops.conv(ops.reshape(x, (-1, h, w, c)), self.kernel[0], strides=(sh, sw), padding="same")
        return ops.reshape(y, (-1, t, y.shape[1], y.shape[2], self.filters))

    def compute_output_shape(self, input_shape):
        b, *dims, _ = input_shape
        out = [None if n is None else -(-n // s) for n, s in zip(dims, self.strides)]
        return (b, *out, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "kernel_size": list(self.kernel_size),
                       "strides": list(self.strides),
                       "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)})
        return config


@keras.saving.register_keras_serializable(package="vtcaps")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` (same weights, same maths: biased batch variance, Keras'
    momentum update) run as TF's single FusedBatchNormV3 op and its single gradient op, in place of
    the dozen elementwise ops Keras emits. Channels-last only; anything else (masks, renorm,
    synchronised BN, another axis) falls back to the Keras implementation.
    """

    def _can_fuse(self, inputs, mask):
        axis = self.axis[0] if isinstance(self.axis, (list, tuple)) else self.axis
        return (mask is None and not self.renorm and not self.synchronized and self.scale
                and self.center and axis in (-1, len(inputs.shape) - 1)
                and keras.backend.backend() == "tensorflow")

    def call(self, inputs, training=None, mask=None):
        if not self._can_fuse(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, "float32")  # as Keras: BN statistics in float32 under mixed precision
        channels = x.shape[-1]
        x4 = tf.reshape(x, (-1, 1, 1, channels))
        gamma, beta = tf.cast(self.gamma, "float32"), tf.cast(self.beta, "float32")
        moving_mean = tf.cast(self.moving_mean, "float32")
        moving_variance = tf.cast(self.moving_variance, "float32")
        if training and self.trainable:
            y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x4, scale=gamma, offset=beta, mean=tf.zeros_like(gamma), variance=tf.zeros_like(gamma),
                epsilon=self.epsilon, is_training=True, data_format="NHWC")
            # The op returns the Bessel-corrected variance; Keras' moving average uses the biased one.
            n = tf.cast(tf.shape(x4)[0], "float32")
            variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x4, scale=gamma, offset=beta, mean=moving_mean, variance=moving_variance,
                epsilon=self.epsilon, is_training=False, data_format="NHWC")
        rest = tuple(inputs.shape[1:])
        shape = (-1,) + rest if None not in rest else tf.shape(inputs)
        return tf.cast(tf.reshape(y, shape), self.compute_dtype)


@keras.saving.register_keras_serializable(package="vtcaps")
class SpatialMaxPool3D(keras.layers.Layer):
    """MaxPooling3D with a (1, k, k) window, 'same' padding, as a 2D max-pool over [B*T, H, W, C]
    (TF's MaxPool3D gradient is slow on CPU). A temporal stride with a size-1 window subsamples."""

    def __init__(self, pool_size=3, strides=(1, 2), **kwargs):
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)
        self.strides = _pair(strides, "strides")

    def call(self, x):
        st, ss = self.strides
        if st != 1:
            x = x[:, ::st]
        _, t, h, w, c = x.shape
        y = ops.max_pool(ops.reshape(x, (-1, h, w, c)), self.pool_size, strides=ss, padding="same")
        return ops.reshape(y, (-1, t, y.shape[1], y.shape[2], c))

    def compute_output_shape(self, input_shape):
        b, t, h, w, c = input_shape
        st, ss = self.strides
        down = lambda n, s: None if n is None else -(-n // s)  # noqa: E731
        return (b, down(t, st), down(h, ss), down(w, ss), c)

    def get_config(self):
        config = super().get_config()
        config.update({"pool_size": self.pool_size, "strides": list(self.strides)})
        return config


def _build_chain(layers, shape):
    """Build `layers` one after another from `shape`; returns the final output shape."""
    for layer in layers:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return shape


def _is_shape_pair(shape):
    return isinstance(shape, (list, tuple)) and len(shape) > 0 and isinstance(shape[0], (list, tuple))


def _split_inputs(inputs):
    if isinstance(inputs, (list, tuple)):
        if len(inputs) != 2:
            raise ValueError(f"a residual block takes x or [x, skip], got {len(inputs)} tensors")
        return inputs[0], inputs[1]
    return inputs, None


class _Residual2Plus1D(keras.layers.Layer):
    """Shared plumbing of the two block types: shortcut choice, build, config."""

    expansion = 1

    def __init__(self, filters, strides=1, temporal_kernel_size=3, spatial_kernel_size=3,
                 use_projection=None, bn_momentum=0.9, bn_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        if int(filters) <= 0:
            raise ValueError(f"filters must be positive, got {filters}")
        self.filters = int(filters)
        self.strides = _pair(strides, "strides")
        self.temporal_kernel_size = int(temporal_kernel_size)
        self.spatial_kernel_size = int(spatial_kernel_size)
        self.use_projection = use_projection
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.out_channels = self.filters * self.expansion
        self.main_layers = self._main_layers()
        self.shortcut_conv = None
        self.shortcut_bn = None

    # Helpers for subclasses ----------------------------------------------------------------
    def _conv(self, filters, kernel, strides, name):
        return FactorisedConv3D(filters, kernel, strides=strides, kernel_initializer="he_normal",
                                dtype=self.dtype_policy, name=name)

    def _bn(self, name, gamma_initializer="ones"):
        return FusedBatchNorm(momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                                               gamma_initializer=gamma_initializer,
                                               dtype=self.dtype_policy, name=name)

    def _relu(self, name):
        return keras.layers.ReLU(dtype=self.dtype_policy, name=name)

    def _temporal(self, filters, stride, idx):
        """t x 1 x 1 conv + BN + ReLU."""
        return [self._conv(filters, (self.temporal_kernel_size, 1, 1), (stride, 1, 1), f"temporal_{idx}"),
                self._bn(f"temporal_{idx}_bn"), self._relu(f"temporal_{idx}_relu")]

    def _spatial(self, filters, stride, idx, relu=True):
        """1 x k x k conv + BN (+ ReLU)."""
        k = self.spatial_kernel_size
        out = [self._conv(filters, (1, k, k), (1, stride, stride), f"spatial_{idx}"),
               self._bn(f"spatial_{idx}_bn")]
        return out + [self._relu(f"spatial_{idx}_relu")] if relu else out

    def _main_layers(self):
        raise NotImplementedError

    # Keras API -----------------------------------------------------------------------------
    def build(self, input_shape):
        if _is_shape_pair(input_shape):
            x_shape, skip_shape = tuple(input_shape[0]), tuple(input_shape[1])
        else:
            x_shape, skip_shape = tuple(input_shape), tuple(input_shape)
        if len(x_shape) != 5:
            raise ValueError(f"{type(self).__name__} expects [B,T,H,W,C] inputs, got shape {x_shape}")
        _build_chain(self.main_layers, x_shape)
        project = self.use_projection
        if project is None:
            project = self.strides != (1, 1) or skip_shape[-1] != self.out_channels
        if project:
            st, ss = self.strides
            self.shortcut_conv = self._conv(self.out_channels, 1, (st, ss, ss), "shortcut")
            self.shortcut_bn = self._bn("shortcut_bn")
            _build_chain([self.shortcut_conv, self.shortcut_bn], skip_shape)
        elif skip_shape[-1] != self.out_channels or self.strides != (1, 1):
            raise ValueError(f"an identity shortcut needs stride 1 and {self.out_channels} input "
                             f"channels, got strides {self.strides} and {skip_shape[-1]} channels; "
                             "use use_projection=True")

    def call(self, inputs, training=None):
        x, skip = _split_inputs(inputs)
        skip = x if skip is None else skip
        y = x
        for layer in self.main_layers:
            y = layer(y, training=training) if isinstance(layer, keras.layers.BatchNormalization) else layer(y)
        if self.shortcut_conv is not None:
            skip = self.shortcut_bn(self.shortcut_conv(skip), training=training)
        return keras.ops.relu(y + skip)

    def compute_output_shape(self, input_shape):
        x_shape = input_shape[0] if _is_shape_pair(input_shape) else input_shape
        b, t, h, w, _ = x_shape
        st, ss = self.strides

        def down(n, s):
            return None if n is None else -(-n // s)  # "same" padding: ceil(n / s)

        return (b, down(t, st), down(h, ss), down(w, ss), self.out_channels)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "strides": list(self.strides),
            "temporal_kernel_size": self.temporal_kernel_size,
            "spatial_kernel_size": self.spatial_kernel_size,
            "use_projection": self.use_projection,
            "bn_momentum": self.bn_momentum,
            "bn_epsilon": self.bn_epsilon,
        })
        return config


@keras.saving.register_keras_serializable(package="vtcaps")
class BasicBlock2Plus1D(_Residual2Plus1D):
    """ResNet-18/34 block: two (2+1)D units, `relu(F(x) + shortcut(skip))`.

    Each unit is temporal (t x 1 x 1) -> BN -> ReLU -> spatial (1 x k x k) -> BN (-> ReLU except
    before the addition). `strides` = (temporal, spatial) of the first unit and of the shortcut.
    """

    expansion = 1

    def _main_layers(self):
        st, ss = self.strides
        return (self._temporal(self.filters, st, 1) + self._spatial(self.filters, ss, 1)
                + self._temporal(self.filters, 1, 2) + self._spatial(self.filters, 1, 2, relu=False))


@keras.saving.register_keras_serializable(package="vtcaps")
class BottleneckBlock2Plus1D(_Residual2Plus1D):
    """ResNet-50 block: temporal (t x 1 x 1, `filters`) -> spatial (1 x k x k, `filters`) ->
    1 x 1 x 1 conv to 4 * `filters`, each with BN (ReLU on the first two), then
    `relu(F(x) + shortcut(skip))`. The temporal stride sits on the temporal conv, the spatial one
    on the spatial conv.
    """

    expansion = 4

    def _main_layers(self):
        st, ss = self.strides
        return (self._temporal(self.filters, st, 1) + self._spatial(self.filters, ss, 1)
                + [self._conv(self.out_channels, 1, 1, "expand"), self._bn("expand_bn")])
