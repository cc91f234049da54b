"""Evaluation: metrics with patient-level bootstrap CIs, plots and reports. It judges exported
bundles and out-of-fold predictions only, so it never imports torch or the training side."""
