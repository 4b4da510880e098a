"""Thin MONAI Label tasks (datastore, batch infer, infer/train/strategy) around the method in ``lib``."""
