"""Not yet written."""
AUAttention = None
