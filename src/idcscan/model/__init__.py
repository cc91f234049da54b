"""Training-side model code (needs torch): network, weights, Lightning module, export."""
