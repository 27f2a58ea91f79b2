"""Shared base every folder may import: typed params, paths, canonical schema, safe IO, errors, the stage CLI.

core imports nothing from the stages (pipelines, features, monitoring, training, serving).
"""
