"""Not yet written."""
TemporalPyramid = None
