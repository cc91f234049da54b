"""Torch-free inference: bundle loading, ONNX Runtime prediction, explanations, slides."""
