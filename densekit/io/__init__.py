"""File formats: optical flow (.flo, KITTI 16-bit PNG, .pfm), depth maps, NIfTI volumes.

Pure numpy/PIL readers and writers; errors name the file and what was expected. ``data`` builds its
datasets on these; users call them directly (``densekit.io.read_flow(path)``).
"""

# -- format modules (one import line per module) --

__all__ = [name for name in dir() if not name.startswith("_")]
