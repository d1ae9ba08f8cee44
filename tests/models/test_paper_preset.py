"""The paper preset (ResNet-50 (2+1)D, 16 frames at 224x224, TPN on 32 frames) on CPU."""

import time

import numpy as np
import pytest
import tensorflow as tf

from helpers import random_inputs
from vtcaps_tf.models import build_model, get_preset
from vtcaps_tf.models.backbone import stage_channels


def test_paper_feature_sizes_follow_the_paper():
    config = get_preset("paper")
    # 224 -> stem /2 -> pool /2 -> stages /1 /2 /2 /2 = 7: the paper's 512 x 7 x 7 PrimaryCaps input.
    assert config.feature_size() == 7
    assert stage_channels(config.depth, config.width) == (256, 512, 1024, 2048)
    assert config.primary_channels == 512 and config.tpn_channels == 1024


@pytest.mark.slow
def test_paper_preset_forward_and_backward_on_one_clip():
    model = build_model("paper")
    shapes = {k: tuple(v.shape) for k, v in model.backbone.output.items()}
    assert shapes["stage4"] == (None, 2, 7, 7, 2048)
    assert model.primary_caps.compute_output_shape((None, 7, 7, 512)) == (None, 1152, 8)
    x = {k: tf.constant(v) for k, v in random_inputs(model.config, 1).items()}
    start = time.perf_counter()
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = model.compute_loss(x, tf.constant([3]), out, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    seconds = time.perf_counter() - start
    print(f"paper preset: {model.count_params()} parameters, forward+backward {seconds:.1f} s")
    assert out["probabilities"].shape == (1, 7) and out["tpn_probabilities"].shape == (1, 7)
    assert np.isfinite(float(loss))
    missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
