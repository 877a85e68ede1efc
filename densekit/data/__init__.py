"""Data: the batch schema, datasets (one reader per on-disk format), embedded synthetic scenes, transforms."""

from .datamodule import DenseDataModule
from .datasets import SyntheticScenes, to_tensors
from .schema import IGNORE_INDEX, check_sample
from .synthetic import CLASS_NAMES, SceneConfig, generate_scene, generate_volume

DATASETS = {"synthetic": SyntheticScenes}


def build_dataset(name: str, split: str, **kwargs):
    """Dataset ``name`` for ``split``; kwargs are the dataset's own constructor arguments."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {sorted(DATASETS)}")
    return DATASETS[name](split=split, **kwargs)


__all__ = [
    "CLASS_NAMES", "DATASETS", "DenseDataModule", "IGNORE_INDEX", "SceneConfig", "SyntheticScenes",
    "build_dataset", "check_sample", "generate_scene", "generate_volume", "to_tensors",
]
