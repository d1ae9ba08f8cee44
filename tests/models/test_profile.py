"""`vtcaps profile`: FLOP counting on hand-worked graphs, and the command's output."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from vtcaps_tf.cli.profile import main as profile_command
from vtcaps_tf.models.profile import PAPER_TABLE3, count_flops, format_table


def test_count_flops_dense():
    dense = keras.layers.Dense(5)
    dense.build((1, 10))
    # MatMul [1,10]x[10,5]: 50 multiply-adds = 100 FLOPs; bias add: 5.
    assert count_flops(dense, [tf.TensorSpec((1, 10), tf.float32)]) == 105


def test_count_flops_temporal_conv():
    conv = keras.layers.Conv3D(4, (3, 1, 1), use_bias=False)
    conv.build((1, 5, 2, 2, 3))
    # Output 1x3x2x2x4 = 48 values, each 3 taps x 3 channels = 9 multiply-adds -> 864 FLOPs.
    assert count_flops(conv, [tf.TensorSpec((1, 5, 2, 2, 3), tf.float32)]) == 864


def test_format_table_shows_the_paper():
    result = {"preset": "x", "depth": 18, "width": 1.0, "clip_frames": 8, "long_frames": 16,
              "image_size": 32, "capsnet3d": {"params_m": 1.5, "gflops": 2.25}}
    text = format_table(result)
    assert "6.40" in text and "445.38" in text and "2.25" in text


@pytest.mark.slow
def test_cli_json_for_tiny(capsys):
    from vtcaps_tf.models import build_model

    assert profile_command(["--preset", "tiny", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["paper_table3"] == PAPER_TABLE3
    assert result["vt3dcapsnet"]["params"] == build_model("tiny").count_params()
    assert result["capsnet3d"]["params"] == build_model("tiny", use_tpn=False).count_params()
    assert 0 < result["capsnet3d"]["flops"] < result["vt3dcapsnet"]["flops"]
    np.testing.assert_allclose(result["capsnet3d"]["gflops"], result["capsnet3d"]["flops"] / 1e9, atol=1e-3)
