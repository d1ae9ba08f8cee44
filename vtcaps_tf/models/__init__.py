"""Backbone, task models and the preset table."""

from vtcaps_tf.models.backbone import build_backbone  # noqa: F401
from vtcaps_tf.config.presets import PRESETS, ModelConfig, get_preset  # noqa: F401
from vtcaps_tf.models.vt3dcapsnet import CapsNet3D, VT3DCapsNet, build_model, load_trained_model  # noqa: F401
