"""Evaluation: metrics with patient-level bootstrap CIs, plots, the human-readable report."""
