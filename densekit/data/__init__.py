"""Data: the batch schema, datasets (one reader per on-disk format), embedded synthetic scenes, transforms."""

from .datamodule import DenseDataModule
from .datasets import SyntheticScenes, to_tensors
from .schema import IGNORE_INDEX, check_sample
from .seg_datasets import ADE20KSeg, BadSampleWarning, CityscapesSeg, FolderSeg, SegDataset, VOCSeg
from .synthetic import CLASS_NAMES, SceneConfig, generate_scene, generate_volume

DATASETS = {
    "synthetic": SyntheticScenes,
    "cityscapes": CityscapesSeg,
    "ade20k": ADE20KSeg,
    "voc": VOCSeg,
    "folder": FolderSeg,
}


def build_dataset(name: str, split: str, **kwargs):
    """Dataset ``name`` for ``split``; kwargs are the dataset's own constructor arguments."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {sorted(DATASETS)}")
    return DATASETS[name](split=split, **kwargs)


__all__ = [
    "ADE20KSeg", "BadSampleWarning", "CLASS_NAMES", "CityscapesSeg", "DATASETS", "DenseDataModule", "FolderSeg",
    "IGNORE_INDEX", "SceneConfig", "SegDataset", "SyntheticScenes", "VOCSeg", "build_dataset", "check_sample",
    "generate_scene", "generate_volume", "to_tensors",
]
