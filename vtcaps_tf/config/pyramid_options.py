"""TPN-ERM's choices, named once: the information flows, the fusion kinds and the head pooling of
`vtcaps_tf.layers.temporal_pyramid.TemporalPyramid`, which `ModelConfig` (vtcaps_tf/config/presets.py)
and the `vtcaps` option parsers validate against. Plain tuples in a module of their own, free of
Keras, because the parsers load the preset table without importing TensorFlow."""

FLOWS = ("isolation", "top_down", "bottom_up", "cascade", "parallel", "adaptive")
FUSIONS = ("fast", "softmax")  # FastNormalizedFusion, SoftmaxFusion (vtcaps_tf/layers/fusion.py)
# How each fused level becomes a vector of the motion feature: the paper's max-pool over (T, H, W),
# or the mean over them (docs/design.md section 7, "TPN-ERM head pooling").
POOLS = ("max", "mean")
