"""Not yet written."""
DigitCaps = None
PrimaryCaps = None
ReconstructionDecoder = None
squash = None
