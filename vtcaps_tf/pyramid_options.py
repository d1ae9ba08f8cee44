"""TPN-ERM's choices, named once: the information flows and the fusion kinds of
`vtcaps_tf.layers.temporal_pyramid.TemporalPyramid`, which `ModelConfig` (vtcaps_tf/models/presets.py)
and the `vtcaps` option parsers validate against. Plain tuples in a module of their own, free of
Keras, because the parsers load the preset table without importing TensorFlow."""

FLOWS = ("isolation", "top_down", "bottom_up", "cascade", "parallel", "adaptive")
FUSIONS = ("fast", "softmax")  # FastNormalizedFusion, SoftmaxFusion (vtcaps_tf/layers/fusion.py)
