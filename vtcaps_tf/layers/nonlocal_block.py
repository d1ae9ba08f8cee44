"""The non-local block, embedded Gaussian version (Wang et al. 2018, "Non-local Neural Networks").

    y_i = sum_j softmax_j(theta(x_i) . phi(x_j)) g(x_j),     z = BN(W y) + x

over all positions i, j of the [T, H, W] volume. theta, phi, g and W are 1x1x1 convolutions; phi
and g may be max-pooled 1x2x2 (the paper's "subsampling" trick, 4x fewer keys). The output BN's
gamma starts at zero, so a freshly built block is exactly the identity and can be dropped into a
pretrained network without disturbing it.
"""

from __future__ import annotations

import keras

from vtcaps_tf.layers.resnet3d import SpatialMaxPool3D


@keras.saving.register_keras_serializable(package="vtcaps")
class NonLocalBlock(keras.layers.Layer):
    """`[B,T,H,W,C] -> [B,T,H,W,C]`; `inter_channels` defaults to C // 2."""

    def __init__(self, inter_channels=None, sub_sample=True, bn_momentum=0.9, bn_epsilon=1e-5,
                 **kwargs):
        super().__init__(**kwargs)
        if inter_channels is not None and int(inter_channels) <= 0:
            raise ValueError(f"inter_channels must be positive, got {inter_channels}")
        self.inter_channels = None if inter_channels is None else int(inter_channels)
        self.sub_sample = bool(sub_sample)
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon

    def _conv(self, filters, name):
        return keras.layers.Conv3D(filters, 1, dtype=self.dtype_policy, name=name)

    def build(self, input_shape):
        if len(input_shape) != 5 or any(d is None for d in input_shape[1:]):
            raise ValueError(f"NonLocalBlock expects [B,T,H,W,C] with static T, H, W, C, "
                             f"got {tuple(input_shape)}")
        channels = int(input_shape[-1])
        inter = self.inter_channels or max(1, channels // 2)
        self.theta = self._conv(inter, "theta")
        self.phi = self._conv(inter, "phi")
        self.g = self._conv(inter, "g")
        self.out_conv = self._conv(channels, "out")
        self.out_bn = keras.layers.BatchNormalization(
            momentum=self.bn_momentum, epsilon=self.bn_epsilon, gamma_initializer="zeros",
            dtype=self.dtype_policy, name="out_bn")
        # The 1x2x2 max-pool as a 2D pool over [B*T, H, W, C']: TFLite has no MaxPool3D builtin,
        # and TF's CPU MaxPool3D has no float16 kernel.
        self.pool = SpatialMaxPool3D(2, strides=(1, 2), dtype=self.dtype_policy, name="pool")
        for conv in (self.theta, self.phi, self.g):
            conv.build(input_shape)
        inter_shape = tuple(input_shape[:-1]) + (inter,)
        self.out_conv.build(inter_shape)
        self.out_bn.build(tuple(input_shape))

    def call(self, inputs, training=None):
        batch = keras.ops.shape(inputs)[0]
        theta = self.theta(inputs)
        phi, g = self.phi(inputs), self.g(inputs)
        if self.sub_sample:
            phi, g = self.pool(phi), self.pool(g)
        inter = theta.shape[-1]
        theta = keras.ops.reshape(theta, (batch, -1, inter))  # [B, THW, C']
        phi = keras.ops.reshape(phi, (batch, -1, inter))  # [B, keys, C']
        g = keras.ops.reshape(g, (batch, -1, inter))
        # Softmax in float32 even under mixed precision: the logits are unscaled dot products.
        logits = keras.ops.einsum("bic,bjc->bij", theta, phi)
        attention = keras.ops.cast(keras.ops.softmax(keras.ops.cast(logits, "float32"), axis=-1),
                                   g.dtype)
        y = keras.ops.einsum("bij,bjc->bic", attention, g)
        y = keras.ops.reshape(y, (-1,) + tuple(inputs.shape[1:-1]) + (inter,))
        return inputs + self.out_bn(self.out_conv(y), training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "inter_channels": self.inter_channels,
            "sub_sample": self.sub_sample,
            "bn_momentum": self.bn_momentum,
            "bn_epsilon": self.bn_epsilon,
        })
        return config
