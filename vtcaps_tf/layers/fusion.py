"""Not yet written."""
FastNormalizedFusion = None
SoftmaxFusion = None
