"""Data: the batch schema, datasets (one reader per on-disk format), embedded synthetic scenes, transforms."""

from .datamodule import DenseDataModule
from .datasets import SyntheticScenes, to_tensors
from .flow_datasets import FlowDataset, FlyingChairs, FlyingThings3D, FolderFlow, KITTI2015, MPISintel, StereoMotorcycle
from .depth_datasets import DepthDataset, DepthValueWarning, FolderDepth, KITTIDepth, NYUv2Folder, NYUv2Mat
from .schema import IGNORE_INDEX, check_sample
from .seg_datasets import ADE20KSeg, BadSampleWarning, CityscapesSeg, FolderSeg, SegDataset, VOCSeg
from .synthetic import CLASS_NAMES, SceneConfig, generate_scene, generate_volume
from .volumes import BraTSVolumes, NiftiFolder, SyntheticVolumes, VOLUME_CLASS_NAMES

DATASETS = {
    "synthetic": SyntheticScenes,
    "cityscapes": CityscapesSeg,
    "ade20k": ADE20KSeg,
    "voc": VOCSeg,
    "folder": FolderSeg,
    "chairs": FlyingChairs,
    "things": FlyingThings3D,
    "sintel": MPISintel,
    "kitti15": KITTI2015,
    "flow_folder": FolderFlow,
    "motorcycle": StereoMotorcycle,
    "nyuv2": NYUv2Folder,
    "nyuv2_mat": NYUv2Mat,
    "kitti": KITTIDepth,
    "depth_folder": FolderDepth,
    "synthetic_volume": SyntheticVolumes,
    "brats": BraTSVolumes,
    "nifti_folder": NiftiFolder,
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
    "FlowDataset", "FlyingChairs", "FlyingThings3D", "FolderFlow", "KITTI2015", "MPISintel", "StereoMotorcycle",
    "DepthDataset", "DepthValueWarning", "FolderDepth", "KITTIDepth", "NYUv2Folder", "NYUv2Mat",
    "BraTSVolumes", "NiftiFolder", "SyntheticVolumes", "VOLUME_CLASS_NAMES",
]
