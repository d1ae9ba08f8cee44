"""Backbone, task models and the preset table."""

from vtcaps_tf.models.presets import PRESETS, ModelConfig, get_preset  # noqa: F401
