"""Dataset fingerprint: what a dataset split holds, measured on an evenly spread sample, and the settings
it suggests (nnU-Net's fingerprint -> plan idea, for every densekit dataset, 2D and 3D).

``fingerprint(dataset, max_samples=64)`` reads up to ``max_samples`` items spread evenly over the split and
returns a JSON-serialisable dict: sample count, spatial sizes (min/median/max per axis: H x W, or D x H x W
for volumes, with the voxel spacing and orientation read from the NIfTI headers), channels, the on-disk
dtypes, intensity percentiles per channel (0.5/50/99.5; volumes also over the nonzero and the foreground
voxels, with the foreground mean/std), label statistics (raw mask values, class pixel frequencies, how
many samples hold each class, the ignore fraction), depth/flow value statistics, the bad samples found
(unreadable files, size mismatches; counted and listed, never raised) and warnings.

Where the dataset exposes its files (the segmentation, depth, flow and NIfTI readers), the raw files are
read, so dtypes and values are what is stored (a 16-bit PNG reports uint16, a 0/255 mask reports 0 and
255, before any conversion); otherwise (the embedded synthetic data, other datasets) the loaded samples'
tensors are measured. ``raw_listing`` lists a folder layout without its reader, for when the reader
refuses the data at construction: the fingerprint is then still taken, and says why the reader refused.

``suggest(fp, data_cfg, task)`` turns a fingerprint into config overrides, each with the reason:
crop/patch from the median size (a multiple of 32 in 2D, 64 for flow, 16 in 3D, capped by a memory budget
per step), batch size, ``num_workers`` for this machine, class weights when the classes are imbalanced
(median frequency), a label map for 0/255 masks, input channels, the intensity rule for 16-bit images.
``format_fingerprint(fp, suggestions)`` renders both as text. ``quick_check(dataset)`` is the cheap
variant for the start of a training run (a few samples; its warnings go to the log).

Modules: ``collect`` (raw file readers, the accumulator), ``sources`` (how each kind of dataset is read),
``listing`` (``raw_listing``), ``measure`` (``fingerprint``, ``quick_check``), ``suggest``, ``report``
(``format_fingerprint``) and ``inspect`` (what ``scripts/inspect_data.py`` runs). Pure Python/numpy/torch/PIL
(nibabel for volumes): no Hydra, no models.
"""

from .collect import PERCENTILES, sample_indices
from .inspect import OPTIONS, check_options, check_root, inspect_data
from .listing import RawFolder, raw_listing
from .measure import DEFAULT_MAX_SAMPLES, fingerprint, quick_check
from .report import format_fingerprint, format_value
from .sources import source_kind
from .suggest import CPU_BUDGET, GPU_BUDGET, suggest

__all__ = [
    "CPU_BUDGET",
    "DEFAULT_MAX_SAMPLES",
    "GPU_BUDGET",
    "OPTIONS",
    "PERCENTILES",
    "RawFolder",
    "check_options",
    "check_root",
    "fingerprint",
    "format_fingerprint",
    "format_value",
    "inspect_data",
    "quick_check",
    "raw_listing",
    "sample_indices",
    "source_kind",
    "suggest",
]
