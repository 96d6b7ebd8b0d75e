"""Datasets, splits, loaders and seeding, image decoding, colour jitter."""
