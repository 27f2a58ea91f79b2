"""Data side of the loop: ingest, splits, augmentation and fusion."""
