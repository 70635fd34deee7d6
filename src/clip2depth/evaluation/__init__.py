"""Evaluation: the nine depth metrics and named crops, the protocol harness, spatial and temporal analyses."""
