"""Training data: synthetic people rendered from a body model, and SPIN-format datasets."""
