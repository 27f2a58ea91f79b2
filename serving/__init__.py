"""Serving: the BentoML service over the registry's champion models, its ANN index and its request log."""
