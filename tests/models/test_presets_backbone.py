"""The preset table and the backbone's stage shapes, against sizes worked out by hand."""

import dataclasses

import pytest

from vtcaps_tf.layers import BasicBlock2Plus1D, BottleneckBlock2Plus1D
from vtcaps_tf.models import PRESETS, ModelConfig, build_backbone, get_preset


def test_preset_table():
    assert set(PRESETS) == {"tiny", "small", "paper", "tiny3", "small3"}
    tiny, small, paper = PRESETS["tiny"], PRESETS["small"], PRESETS["paper"]
    assert (tiny.clip_frames, tiny.image_size, tiny.depth, tiny.width, tiny.tpn_channels) == (8, 32, 18, 0.125, 32)
    assert (small.clip_frames, small.image_size, small.depth) == (16, 112, 18)
    assert (paper.clip_frames, paper.long_frames, paper.image_size, paper.depth, paper.tpn_channels) == \
        (16, 32, 224, 50, 1024)
    # tiny: 32 -> stem /1 -> pool /2 -> /1 /1 /2 /2 = 4; small: 112 / 32 = 3.5 -> 4 ('same'); paper: 7.
    assert [PRESETS[n].feature_size() for n in ("tiny", "small", "paper")] == [4, 4, 7]
    # The three-level variants differ from their base in the pyramid's levels only.
    for base in ("tiny", "small"):
        three = PRESETS[f"{base}3"]
        assert three.tpn_levels == (2, 3, 4) and PRESETS[base].tpn_levels == (3, 4)
        assert dataclasses.replace(three, name=base, tpn_levels=(3, 4)) == PRESETS[base]


def test_matching_weight_and_the_old_name_beta():
    assert PRESETS["tiny"].matching_weight == 1.0
    old = dict(PRESETS["tiny"].to_dict(), beta=0.25)
    del old["matching_weight"]
    assert ModelConfig.from_dict(old).matching_weight == 0.25
    with pytest.raises(ValueError, match="beta"):
        ModelConfig.from_dict(dict(PRESETS["tiny"].to_dict(), beta=0.25))
    with pytest.raises(ValueError, match="matching_weight"):
        get_preset("tiny", matching_weight=-1.0)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_dict_round_trip(name):
    config = PRESETS[name]
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="PrimaryCaps"):
        get_preset("tiny", stem_strides=(1, 2), stage_strides=((1, 1), (2, 2), (2, 2), (2, 2)))
    with pytest.raises(ValueError, match="flow"):
        get_preset("tiny", flow="sideways")
    with pytest.raises(ValueError, match="tpn_levels"):
        get_preset("tiny", tpn_levels=(3, 5))
    with pytest.raises(ValueError, match="unknown ModelConfig"):
        ModelConfig.from_dict(dict(PRESETS["tiny"].to_dict(), colour="red"))
    for stride in (0, 3):  # tiny's window is 16 frames: 3 does not divide it
        with pytest.raises(ValueError, match="tpn_frame_stride"):
            get_preset("tiny", tpn_frame_stride=stride)


def test_tiny_backbone_stage_shapes():
    config = get_preset("tiny")
    model = build_backbone(config, config.clip_frames)
    shapes = {k: tuple(v.shape[1:]) for k, v in model.output.items()}
    # 8 frames, 32 px; width 1/8 -> 8, 16, 32, 64 channels; (t, s) strides (1,1) (1,1) (2,2) (2,2).
    assert shapes == {"stage1": (8, 16, 16, 8), "stage2": (8, 16, 16, 16),
                      "stage3": (4, 8, 8, 32), "stage4": (2, 4, 4, 64)}
    assert sorted(model.input) == ["au_map", "video"]
    tpn = build_backbone(config, config.long_frames, use_au_attention=False)
    assert list(tpn.input) == ["video"]
    assert tuple(tpn.output["stage3"].shape[1:]) == (8, 8, 8, 32)
    assert tuple(tpn.output["stage4"].shape[1:]) == (4, 4, 4, 64)


@pytest.mark.parametrize("depth, block_type, blocks, channels", [
    (18, BasicBlock2Plus1D, 8, 64), (34, BasicBlock2Plus1D, 16, 64), (50, BottleneckBlock2Plus1D, 16, 256)])
def test_depths(depth, block_type, blocks, channels):
    config = dataclasses.replace(get_preset("tiny"), depth=depth)
    model = build_backbone(config, 4, use_au_attention=False, use_nonlocal=False)
    assert sum(isinstance(layer, block_type) for layer in model.layers) == blocks
    assert model.output["stage4"].shape[-1] == channels  # 512 x 1/8, times 4 for the bottleneck
