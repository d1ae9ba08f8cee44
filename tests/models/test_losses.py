"""Losses against hand-worked cases and numpy re-computations (paper Eq. 5, 6, 10)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from vtcaps_tf.models import losses
from vtcaps_tf.models.losses import (FeatureMatchingLoss, MarginLoss,
                              ReconstructionLoss, feature_matching_loss, margin_loss,
                              reconstruction_loss, tpn_loss)

LENGTHS = np.array([[0.95, 0.3, 0.05], [0.2, 0.7, 0.6]], "float32")
LABELS = np.array([0, 2])
# Hand-worked, m+ = 0.9, m- = 0.1, lambda = 0.5:
#   sample 0 (class 0): class 0 present, 0.95 > 0.9 -> 0; class 1 absent: 0.5 * (0.3 - 0.1)^2 = 0.02;
#                       class 2 absent, 0.05 < 0.1 -> 0.                          total 0.02
#   sample 1 (class 2): class 2 present: (0.9 - 0.6)^2 = 0.09; class 0 absent: 0.5 * (0.2 - 0.1)^2
#                       = 0.005; class 1 absent: 0.5 * (0.7 - 0.1)^2 = 0.18.       total 0.275
MARGIN_HAND = [0.02, 0.275]


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_margin_loss_hand_worked():
    onehot = np.eye(3, dtype="float32")[LABELS]
    np.testing.assert_allclose(_np(margin_loss(onehot, LENGTHS)), MARGIN_HAND, rtol=1e-5)


def test_margin_loss_other_margins():
    # m+ = 0.8, m- = 0.3, lambda = 1: sample 0: 0 + 0 + 0 = 0 (0.3 - 0.3 = 0);
    # sample 1: (0.8 - 0.6)^2 = 0.04, + 0 (0.2 < 0.3) + (0.7 - 0.3)^2 = 0.16 -> 0.2
    onehot = np.eye(3, dtype="float32")[LABELS]
    got = _np(margin_loss(onehot, LENGTHS, m_plus=0.8, m_minus=0.3, lambda_=1.0))
    np.testing.assert_allclose(got, [0.0, 0.2], atol=1e-6)


def test_margin_loss_class_takes_integer_labels_and_round_trips():
    loss = MarginLoss()
    np.testing.assert_allclose(float(loss(LABELS, LENGTHS)), np.mean(MARGIN_HAND), rtol=1e-5)
    np.testing.assert_allclose(float(loss(np.eye(3)[LABELS], LENGTHS)), np.mean(MARGIN_HAND),
                               rtol=1e-5)
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(
        MarginLoss(m_plus=0.8, m_minus=0.3, lambda_=1.0)))
    assert isinstance(rebuilt, MarginLoss)
    np.testing.assert_allclose(float(rebuilt(LABELS, LENGTHS)), 0.1, rtol=1e-5)


def test_margin_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="margin_loss"):
        margin_loss(np.eye(4, dtype="float32")[:2], LENGTHS)


def test_reconstruction_loss_hand_worked_and_numpy():
    target = np.array([[[1.0, 0.0], [0.0, 1.0]]], "float32")
    recon = np.array([[[0.5, 0.0], [0.0, 0.0]]], "float32")
    # (0.5)^2 + 0 + 0 + 1^2 = 1.25
    np.testing.assert_allclose(_np(reconstruction_loss(target, recon)), [1.25], rtol=1e-6)
    rng = np.random.default_rng(0)
    t, r = rng.uniform(size=(3, 4, 5, 3)), rng.uniform(size=(3, 4, 5, 3))
    want = ((t - r) ** 2).reshape(3, -1).sum(axis=1)
    np.testing.assert_allclose(_np(reconstruction_loss(t.astype("float32"), r.astype("float32"))),
                               want, rtol=1e-5)
    np.testing.assert_allclose(float(ReconstructionLoss()(t, r)), want.mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="differ in shape"):
        reconstruction_loss(t, r[:, :3])


def _ce_np(labels, logits):
    logits = logits - logits.max(axis=1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_softmax[np.arange(len(labels)), labels]


def test_tpn_loss_hand_worked_and_numpy():
    # Equal logits over 2 classes: CE = ln 2; with two such aux heads: ln 2 * (1 + 0.5 + 0.5).
    zeros = np.zeros((1, 2), "float32")
    np.testing.assert_allclose(_np(tpn_loss(np.array([1]), zeros, [zeros, zeros], aux_weight=0.5)),
                               [2 * np.log(2.0)], rtol=1e-6)
    rng = np.random.default_rng(1)
    labels = np.array([0, 3, 1])
    logits, aux1, aux2 = (rng.normal(size=(3, 4)).astype("float32") for _ in range(3))
    want = _ce_np(labels, logits) + 0.5 * _ce_np(labels, aux1) + 0.5 * _ce_np(labels, aux2)
    np.testing.assert_allclose(_np(tpn_loss(labels, logits, [aux1, aux2], aux_weight=0.5)), want,
                               rtol=1e-5)
    np.testing.assert_allclose(_np(tpn_loss(labels, logits)), _ce_np(labels, logits), rtol=1e-5)
    want_w = _ce_np(labels, logits) + 0.2 * _ce_np(labels, aux1)
    np.testing.assert_allclose(_np(tpn_loss(labels, logits, [aux1], aux_weight=0.2)), want_w,
                               rtol=1e-5)
    with pytest.raises(ValueError, match="aux_weight"):  # the weight lives in ModelConfig, not here
        tpn_loss(labels, logits, [aux1])


def test_feature_matching_loss_value_and_gradient_stop():
    rng = np.random.default_rng(2)
    p = tf.constant(rng.normal(size=(2, 6)), tf.float32)
    t = tf.constant(rng.normal(size=(2, 6)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([p, t])
        loss = feature_matching_loss(p, t)
        total = tf.reduce_sum(loss)
    pn, tn = p.numpy(), t.numpy()
    cos = (pn * tn).sum(1) / np.linalg.norm(pn, axis=1) / np.linalg.norm(tn, axis=1)
    np.testing.assert_allclose(loss.numpy(), 1 - cos, rtol=1e-5)
    # d/dp (1 - p.t / (|p||t|)) = -(t/|t| - cos p/|p|) / |p|; nothing reaches the target.
    norm_p, norm_t = np.linalg.norm(pn, axis=1, keepdims=True), np.linalg.norm(tn, axis=1, keepdims=True)
    want = -(tn / norm_t - cos[:, None] * pn / norm_p) / norm_p
    np.testing.assert_allclose(tape.gradient(total, p).numpy(), want, rtol=1e-4, atol=1e-6)
    grad_t = tape.gradient(total, t)
    assert grad_t is None or np.all(grad_t.numpy() == 0)
    np.testing.assert_allclose(float(FeatureMatchingLoss()(t, p)), loss.numpy().mean(), rtol=1e-6)


def test_feature_matching_loss_is_bounded_for_huge_features():
    # Hand-worked: opposite directions give the bound 2, the same direction 0, orthogonal 1,
    # whatever the magnitudes (the old mean squared error here would be ~1e12).
    t = np.array([[1e6, 0.0, 0.0], [1e6, 0.0, 0.0], [0.0, 3e5, 0.0]], np.float32)
    p = np.array([[-2.0, 0.0, 0.0], [5e5, 0.0, 0.0], [7.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(_np(feature_matching_loss(p, t)), [2.0, 0.0, 1.0], atol=1e-6)
    big = np.random.default_rng(3).normal(0, 1e8, (16, 32)).astype("float32")
    got = _np(feature_matching_loss(big, -np.abs(big)))
    assert np.all(got >= 0) and np.all(got <= 2 + 1e-6)
    # A zero prediction counts as orthogonal (distance 1), not as NaN.
    np.testing.assert_allclose(_np(feature_matching_loss(np.zeros((1, 3)), t[:1])), [1.0], atol=1e-6)


def test_losses_are_float32_for_half_precision_inputs():
    onehot = np.eye(3, dtype="float16")[LABELS]
    got = margin_loss(onehot, LENGTHS.astype("float16"))
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_allclose(_np(got), MARGIN_HAND, rtol=2e-3)


def test_public_import():
    assert losses.margin_loss is margin_loss
