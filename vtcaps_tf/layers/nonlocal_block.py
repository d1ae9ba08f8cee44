"""Not yet written."""
NonLocalBlock = None
