"""Data: the Kaggle layout, synthetic data, packing, patient splits, the training DataModule."""
