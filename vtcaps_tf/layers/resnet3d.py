"""(2+1)D residual blocks of the inflated ResNet backbone (paper 3.1.1, docs/design.md section 5).

Every 3D convolution is factorised into a temporal conv (t x 1 x 1) and a spatial conv (1 x k x k),
each followed by BatchNorm + ReLU. Tensors are channels-last: [batch, time, height, width, channels].

A block takes either `x` or `[x, skip]`. With two inputs the shortcut branch reads `skip` instead
of `x`: the first block of stage 1 gets `skip = x * AU map` (see `AUAttention`), which gives the
paper's `out = F(x) + x * map` (projected by the shortcut conv when the channel count changes).
"""

from __future__ import annotations

import keras


def _pair(value, name):
    """An int or a (temporal, spatial) pair -> (temporal, spatial) ints."""
    if isinstance(value, int):
        return value, value
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a (temporal, spatial) pair, got {value!r}")
    return value


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
        return keras.layers.Conv3D(filters, kernel, strides=strides, padding="same", use_bias=False,
                                   kernel_initializer="he_normal", dtype=self.dtype_policy,
                                   name=name)

    def _bn(self, name, gamma_initializer="ones"):
        return keras.layers.BatchNormalization(momentum=self.bn_momentum, epsilon=self.bn_epsilon,
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
