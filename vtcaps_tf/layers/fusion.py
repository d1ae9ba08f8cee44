"""Learned weighted sums of same-shape tensors: the fusion nodes of the adaptive TPN flow.

Both layers hold one scalar weight per input in a variable named `fusion_weights` (created in
`build` from the number of inputs, initialised to 1, so a fresh node averages its inputs).

- `FastNormalizedFusion`: O = sum_i relu(w_i) I_i / (sum_j relu(w_j) + epsilon)
  (EfficientDet's fast normalised fusion; the paper's Eq. 15 misprints it, docs/design.md section 7).
- `SoftmaxFusion`: O = sum_i softmax(w)_i I_i (paper Eq. 14).
"""

from __future__ import annotations

import keras
from keras import ops


def _check_input_shapes(layer_name, input_shape):
    """A list of at least two shapes that agree wherever both are known."""
    if not isinstance(input_shape, (list, tuple)) or not input_shape or \
            not isinstance(input_shape[0], (list, tuple)):
        raise ValueError(f"{layer_name} is called on a list of tensors, got one input of shape "
                         f"{input_shape}")
    shapes = [tuple(s) for s in input_shape]
    if len(shapes) < 2:
        raise ValueError(f"{layer_name} needs at least 2 inputs to fuse, got {len(shapes)}")
    ref = shapes[0]
    for i, shape in enumerate(shapes[1:], start=1):
        same = len(shape) == len(ref) and all(
            a is None or b is None or a == b for a, b in zip(shape, ref))
        if not same:
            raise ValueError(f"{layer_name} inputs must all have the same shape; input 0 is {ref}, "
                             f"input {i} is {shape}")
    return shapes


class _WeightedFusion(keras.layers.Layer):
    """Shared machinery: the weight variable, shape checks and the weighted sum."""

    def build(self, input_shape):
        shapes = _check_input_shapes(type(self).__name__, input_shape)
        self.num_inputs = len(shapes)
        self.fusion_weights = self.add_weight(
            name="fusion_weights", shape=(self.num_inputs,), initializer="ones", trainable=True)

    def normalized_weights(self):
        """The coefficients [k] the inputs are multiplied by, in float32."""
        raise NotImplementedError

    def call(self, inputs):
        if len(inputs) != self.num_inputs:
            raise ValueError(f"{type(self).__name__} was built for {self.num_inputs} inputs, "
                             f"called with {len(inputs)}")
        coeffs = ops.cast(self.normalized_weights(), inputs[0].dtype)
        out = coeffs[0] * inputs[0]
        for i in range(1, self.num_inputs):
            out = out + coeffs[i] * inputs[i]
        return out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


@keras.saving.register_keras_serializable(package="vtcaps")
class FastNormalizedFusion(_WeightedFusion):
    """O = sum_i relu(w_i) I_i / (sum_j relu(w_j) + epsilon), one learned w_i per input.

    Call on a list of k same-shape tensors; returns one tensor of that shape. The relu keeps every
    weight non-negative; epsilon keeps the division finite when all of them are zero.
    """

    def __init__(self, epsilon=1e-4, **kwargs):
        super().__init__(**kwargs)
        if not epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        self.epsilon = float(epsilon)

    def normalized_weights(self):
        w = ops.relu(ops.cast(self.fusion_weights, "float32"))
        return w / (ops.sum(w) + self.epsilon)

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config


@keras.saving.register_keras_serializable(package="vtcaps")
class SoftmaxFusion(_WeightedFusion):
    """O = sum_i softmax(w)_i I_i, one learned w_i per input (paper Eq. 14)."""

    def normalized_weights(self):
        return ops.softmax(ops.cast(self.fusion_weights, "float32"), axis=0)
