"""Losses, trainer, named configurations and evaluation (the paper's metrics)."""
