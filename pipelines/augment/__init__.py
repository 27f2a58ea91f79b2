"""Synthetic data generators, their text-generation backends, and the manifest every output carries."""
