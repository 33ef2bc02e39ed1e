"""Datasets (tfds builders generated or read locally) and the grain input pipeline."""
from mmjax.data.pipeline import DATASETS, ExampleReader, eval_batches, prepare, train_batches

__all__ = ["DATASETS", "ExampleReader", "eval_batches", "prepare", "train_batches"]
