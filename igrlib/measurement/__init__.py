"""Measurements of a trained network at its selected checkpoint."""
