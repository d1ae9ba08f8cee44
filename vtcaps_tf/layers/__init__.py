"""Every VT-3DCapsNet building block as a registered, serialisable Keras 3 layer."""

from vtcaps_tf.layers.au_attention import AUAttention  # noqa: F401
from vtcaps_tf.layers.au_render import AUMapRender  # noqa: F401
from vtcaps_tf.layers.capsules import DigitCaps, PrimaryCaps, ReconstructionDecoder, squash  # noqa: F401
from vtcaps_tf.layers.fusion import FastNormalizedFusion, SoftmaxFusion  # noqa: F401
from vtcaps_tf.layers.nonlocal_block import NonLocalBlock  # noqa: F401
from vtcaps_tf.layers.resnet3d import BasicBlock2Plus1D, BottleneckBlock2Plus1D  # noqa: F401
from vtcaps_tf.layers.temporal_pyramid import TemporalPyramid  # noqa: F401
