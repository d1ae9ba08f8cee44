"""Not yet written."""
BasicBlock2Plus1D = None
BottleneckBlock2Plus1D = None
