"""The inflated (2+1)D ResNet-18/34/50 backbone as a functional `keras.Model` with no head.

Inputs: `{"video": float [B,T,S,S,3]}` (already scaled; the task model does the pixel scaling),
plus `"au_map": [B,T,A,A]` when the AU attention stream is on. Output: a dict of every stage's
output, `stage1`..`stage4` (the non-local block, when on, is part of `stage4`), so that the
temporal pyramid can collect any of them.

Stem: spatial 1x7x7 conv -> BN -> ReLU -> temporal 3x1x1 conv -> BN -> ReLU (the (2+1)D split of
a 3x7x7 stem), then a 1x3x3 max-pool. The AU attention map is resized to the max-pool's output
and enters the first block of stage 1 as its shortcut stream.
"""

from __future__ import annotations

import keras

from vtcaps_tf.layers.au_attention import AUAttention
from vtcaps_tf.layers.nonlocal_block import NonLocalBlock
from vtcaps_tf.layers.resnet3d import (BasicBlock2Plus1D, BottleneckBlock2Plus1D, FactorisedConv3D, FusedBatchNorm,
                                       SpatialMaxPool3D)

STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}
BASE_FILTERS = (64, 128, 256, 512)


def stage_filters(width: float) -> tuple[int, ...]:
    """Block widths of stages 1-4 (before the bottleneck's 4x expansion) for a width multiplier."""
    return tuple(max(1, int(round(f * width))) for f in BASE_FILTERS)


def stage_channels(depth: int, width: float) -> tuple[int, ...]:
    """Channels of each stage's output."""
    expansion = 4 if depth == 50 else 1
    return tuple(f * expansion for f in stage_filters(width))


def build_backbone(config, frames: int, use_au_attention: bool | None = None,
                   use_nonlocal: bool | None = None, name: str = "backbone") -> keras.Model:
    """The backbone of `config` (a ModelConfig) for clips of `frames` frames.

    `use_au_attention` / `use_nonlocal` default to the config's switches; the TPN stream builds
    its own instance with `use_au_attention=False`.
    """
    use_au = config.use_au_attention if use_au_attention is None else use_au_attention
    use_nl = config.use_nonlocal if use_nonlocal is None else use_nonlocal
    if config.depth not in STAGE_BLOCKS:
        raise ValueError(f"depth must be one of {sorted(STAGE_BLOCKS)}, got {config.depth}")
    block_cls = BottleneckBlock2Plus1D if config.depth == 50 else BasicBlock2Plus1D
    size = config.image_size
    inputs = {"video": keras.Input((frames, size, size, 3), name="video")}
    if use_au:
        inputs["au_map"] = keras.Input((frames, config.au_size, config.au_size), name="au_map")

    stem_filters = max(1, int(round(64 * config.width)))
    st, ss = config.stem_strides
    # Conv3D / BatchNormalization maths, run as 2D convs and fused BN (see layers/resnet3d.py).
    x = FactorisedConv3D(stem_filters, (1, 7, 7), strides=(1, ss, ss), name="stem_spatial")(inputs["video"])
    x = FusedBatchNorm(momentum=0.9, epsilon=1e-5, name="stem_spatial_bn")(x)
    x = keras.layers.ReLU(name="stem_spatial_relu")(x)
    x = FactorisedConv3D(stem_filters, (3, 1, 1), strides=(st, 1, 1), name="stem_temporal")(x)
    x = FusedBatchNorm(momentum=0.9, epsilon=1e-5, name="stem_temporal_bn")(x)
    x = keras.layers.ReLU(name="stem_temporal_relu")(x)
    pt, ps = config.pool_strides
    # A 1x3x3 max-pool, as a 2D pool per frame. Pooled in float32, as before: TF's CPU pooling
    # kernels lack float16 (mixed precision still works there).
    x = SpatialMaxPool3D(3, strides=(pt, ps), dtype="float32", name="stem_pool")(x)

    outputs = {}
    for stage, (blocks, filters, strides) in enumerate(
            zip(STAGE_BLOCKS[config.depth], stage_filters(config.width), config.stage_strides), start=1):
        for b in range(blocks):
            block = block_cls(filters, strides=tuple(strides) if b == 0 else (1, 1),
                              name=f"stage{stage}_block{b + 1}")
            if stage == 1 and b == 0 and use_au:
                # The attention stream x * map runs beside the convolutions and is added to them.
                attended = AUAttention(name="au_attention")([x, inputs["au_map"]])
                x = block([x, attended])
            else:
                x = block(x)
        if stage == 4 and use_nl:
            x = NonLocalBlock(name="nonlocal")(x)
        outputs[f"stage{stage}"] = x
    return keras.Model(inputs, outputs, name=name)
