"""File readers, one module per task family on one shared base (``base``): segmentation (``seg``,
``seg_folder``), depth (``depth``, ``depth_lists``, ``depth_mat``), optical flow (``flow``,
``flow_benchmarks``) and 3D volumes (``volume``, ``brats``, ``nifti_folder``). Each reader registers itself
in ``densekit.data.DATASETS`` where it is defined."""

from .base import BadSampleError, BadSampleWarning, ReaderDataset, to_tensors
from .brats import BraTSVolumes
from .depth import DepthDataset, DepthValueWarning, FolderDepth
from .depth_lists import KITTIDepth, NYUv2Folder
from .depth_mat import NYUv2Mat
from .flow import FlowDataset, FlowFiles, FolderFlow
from .flow_benchmarks import KITTI2015, FlyingChairs, FlyingThings3D, MPISintel
from .nifti_folder import NiftiFolder
from .seg import ADE20KSeg, CityscapesSeg, SegDataset, VOCSeg
from .seg_folder import FolderSeg, check_label_map, check_palette
from .volume import VOLUME_CLASS_NAMES, VolumeFiles, dhw_to_nifti, nifti_to_dhw

__all__ = [
    "ADE20KSeg",
    "BadSampleError",
    "BadSampleWarning",
    "BraTSVolumes",
    "CityscapesSeg",
    "DepthDataset",
    "DepthValueWarning",
    "FlowDataset",
    "FlowFiles",
    "FlyingChairs",
    "FlyingThings3D",
    "FolderDepth",
    "FolderFlow",
    "FolderSeg",
    "KITTI2015",
    "KITTIDepth",
    "MPISintel",
    "NYUv2Folder",
    "NYUv2Mat",
    "NiftiFolder",
    "ReaderDataset",
    "SegDataset",
    "VOCSeg",
    "VOLUME_CLASS_NAMES",
    "VolumeFiles",
    "check_label_map",
    "check_palette",
    "dhw_to_nifti",
    "nifti_to_dhw",
    "to_tensors",
]
