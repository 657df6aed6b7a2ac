"""Writing FP16, BF16 and INT8 into the ONNX file (the file carries the precision); the list of precisions is
`bertbuild.kinds.Precision`."""
