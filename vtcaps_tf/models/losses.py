"""Margin, reconstruction, TPN cross-entropy and feature-matching losses (paper Eq. 5, 6, 10).

Each function returns one value per sample, shape [B], computed in float32 whatever the inputs'
precision; the model weights and sums them (docs/design.md section 7) with the weights of its
`ModelConfig` (recon_weight, aux_weight, matching_weight: vtcaps_tf/config/presets.py). The registered `keras.losses.Loss`
classes wrap the functions for use with `compile(loss=...)`.
"""

from __future__ import annotations

import keras
from keras import ops

MATCHING_EPSILON = 1e-12  # inside the norms of feature_matching_loss: a zero vector stays finite


def _float32(x):
    return ops.cast(ops.convert_to_tensor(x), "float32")


def _per_sample(x, reduce):
    """Reduce every axis but the batch axis."""
    if len(x.shape) < 2:
        return x
    return reduce(ops.reshape(x, (ops.shape(x)[0], -1)), axis=-1)


def _one_hot_like(labels, num_classes):
    """Integer labels [B] / [B, 1] -> one-hot [B, C]; one-hot [B, C] passes through."""
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 2 and labels.shape[-1] == num_classes and num_classes != 1:
        return _float32(labels)
    return ops.one_hot(ops.reshape(ops.cast(labels, "int32"), (-1,)), num_classes, dtype="float32")


def margin_loss(labels_onehot, lengths, m_plus=0.9, m_minus=0.1, lambda_=0.5):
    """L_c = T max(0, m+ - |v|)^2 + lambda (1 - T) max(0, |v| - m-)^2, summed over classes -> [B]."""
    t = _float32(labels_onehot)
    v = _float32(lengths)
    if tuple(t.shape[1:]) != tuple(v.shape[1:]):
        raise ValueError(f"margin_loss: labels {tuple(t.shape)} and lengths {tuple(v.shape)} "
                         "must both be [batch, classes]")
    present = t * ops.square(ops.relu(m_plus - v))
    absent = lambda_ * (1.0 - t) * ops.square(ops.relu(v - m_minus))
    return ops.sum(present + absent, axis=-1)


def reconstruction_loss(target, reconstruction):
    """Sum of squared pixel errors per sample -> [B] (paper Eq. 6's L_r, weighted by the model)."""
    target, reconstruction = _float32(target), _float32(reconstruction)
    if tuple(target.shape[1:]) != tuple(reconstruction.shape[1:]):
        raise ValueError(f"reconstruction_loss: target {tuple(target.shape)} and reconstruction "
                         f"{tuple(reconstruction.shape)} differ in shape")
    return _per_sample(ops.square(reconstruction - target), ops.sum)


def _sparse_ce(labels, logits):
    logits = _float32(logits)
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    return ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def tpn_loss(labels, logits, aux_logits=(), aux_weight=None):
    """CE(labels, logits) + sum_i aux_weight * CE(labels, aux_logits[i]) -> [B] (paper Eq. 10).

    `labels` are integer class ids [B]; `logits` [B, C]; `aux_logits` a sequence of [B, C]
    (the auxiliary heads on the non-top pyramid levels; may be empty). `aux_weight` (lambda_i)
    is required with aux heads; the model's is `ModelConfig.aux_weight`.
    """
    if len(aux_logits) and aux_weight is None:
        raise ValueError("tpn_loss: aux_logits given without aux_weight (ModelConfig.aux_weight)")
    if isinstance(aux_logits, dict):
        aux_logits = [aux_logits[k] for k in sorted(aux_logits)]
    loss = _sparse_ce(labels, logits)
    for aux in aux_logits:
        loss = loss + aux_weight * _sparse_ce(labels, aux)
    return loss


def feature_matching_loss(prediction, target):
    """Cosine distance per sample, 1 - cos(prediction, target) -> [B], in [0, 2].

    Equal to half the squared distance between the two vectors scaled to unit length
    (|p/|p| - t/|t||^2 / 2), so the term is bounded whatever the magnitude of the TPN feature (a
    max-pooled activation, unbounded) and cannot dwarf the margin loss, which is at most ~1 per
    class. A zero vector counts as orthogonal to everything (distance 1). No gradient reaches
    `target` (the TPN motion feature).
    """
    prediction = _float32(prediction)
    target = ops.stop_gradient(_float32(target))
    if tuple(prediction.shape[1:]) != tuple(target.shape[1:]):
        raise ValueError(f"feature_matching_loss: prediction {tuple(prediction.shape)} and target "
                         f"{tuple(target.shape)} differ in shape")
    p = ops.reshape(prediction, (ops.shape(prediction)[0], -1))
    t = ops.reshape(target, (ops.shape(target)[0], -1))
    p = p / ops.sqrt(ops.sum(ops.square(p), axis=-1, keepdims=True) + MATCHING_EPSILON)
    t = t / ops.sqrt(ops.sum(ops.square(t), axis=-1, keepdims=True) + MATCHING_EPSILON)
    return 1.0 - ops.sum(p * t, axis=-1)


@keras.saving.register_keras_serializable(package="vtcaps")
class MarginLoss(keras.losses.Loss):
    """`margin_loss` as a Keras loss: y_true integer labels [B] (or one-hot), y_pred lengths [B, C]."""

    def __init__(self, m_plus=0.9, m_minus=0.1, lambda_=0.5, name="margin_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.m_plus, self.m_minus, self.lambda_ = float(m_plus), float(m_minus), float(lambda_)

    def call(self, y_true, y_pred):
        onehot = _one_hot_like(y_true, y_pred.shape[-1])
        return margin_loss(onehot, y_pred, self.m_plus, self.m_minus, self.lambda_)

    def get_config(self):
        config = super().get_config()
        config.update(m_plus=self.m_plus, m_minus=self.m_minus, lambda_=self.lambda_)
        return config


@keras.saving.register_keras_serializable(package="vtcaps")
class ReconstructionLoss(keras.losses.Loss):
    """`reconstruction_loss` as a Keras loss (y_true the target image, y_pred the reconstruction)."""

    def __init__(self, name="reconstruction_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return reconstruction_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package="vtcaps")
class FeatureMatchingLoss(keras.losses.Loss):
    """`feature_matching_loss` as a Keras loss (y_true the target feature, gradient-stopped)."""

    def __init__(self, name="feature_matching_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return feature_matching_loss(y_pred, y_true)
