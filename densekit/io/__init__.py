"""File formats: optical flow (.flo, KITTI 16-bit PNG, .pfm), depth maps, NIfTI volumes.

Pure numpy/PIL readers and writers; errors name the file and what was expected. ``data`` builds its
datasets on these; users call them directly (``densekit.io.read_flow(path)``).
"""

# -- format modules (one import line per module) --
from .depth import read_depth, write_depth_png
from .flow import read_flo, read_flow, read_kitti_png, read_pfm, write_flo, write_flow, write_pfm
from .nifti import read_nifti, write_nifti

__all__ = [
    "read_depth",
    "read_flo",
    "read_flow",
    "read_kitti_png",
    "read_nifti",
    "read_pfm",
    "write_depth_png",
    "write_flo",
    "write_flow",
    "write_nifti",
    "write_pfm",
]
