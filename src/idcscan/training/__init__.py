"""Training (needs torch): the network, offline weights, the Lightning module and its schedule,
calibration, export to a bundle, fold ensembles and the cross-validation that trains folds."""
