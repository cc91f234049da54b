"""Torch-free inference: bundle loading, the predictor and its engine, explanations, slides."""
