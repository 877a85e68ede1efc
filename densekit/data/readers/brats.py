"""BraTS case folders as a volume reader: ``BraTSVolumes`` (sampling, splits, epochs:
``densekit.data.readers.volume``)."""

from __future__ import annotations

from pathlib import Path

from ..registry import DATASETS
from .volume import VOLUME_CLASS_NAMES, VolumeFiles

# BraTS file naming: <root>/<case>/<pattern> with {case} and {modality} filled in
BRATS_NAMINGS = {
    # 2018-2021: BraTS2021_00000/BraTS2021_00000_t1.nii.gz ... _seg.nii.gz
    "brats2021": {
        "pattern": "{case}_{modality}.nii.gz",
        "modalities": ("t1", "t1ce", "t2", "flair"),
        "seg": "seg",
        "labels": "brats2021",
    },
    # 2023 (GLI): BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1n.nii.gz ... -seg.nii.gz
    "brats2023": {
        "pattern": "{case}-{modality}.nii.gz",
        "modalities": ("t1n", "t1c", "t2w", "t2f"),
        "seg": "seg",
        "labels": "brats2023",
    },
}


@DATASETS.register("brats", tasks=("volume",), dims=3)
class BraTSVolumes(VolumeFiles):
    """BraTS case folders: ``<root>/<case>/<case><sep><modality>.nii.gz`` plus ``<case><sep>seg.nii.gz``.

    ``naming`` picks the release's file names, modality order and label convention (each overridable):
      brats2021 (2018-2021)  ``<case>_{t1,t1ce,t2,flair,seg}.nii.gz``, labels {0,1,2,4} (4 enhancing -> 3)
      brats2023              ``<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``, labels {0,1,2,3}
    ``modalities`` sets the channel order (and subset) of the image; ``pattern`` the file name with
    ``{case}`` and ``{modality}`` placeholders; ``seg`` the label map's modality name. Every non-hidden
    sub-folder of ``root`` is a case (the case name is the folder name).
    """

    class_names = VOLUME_CLASS_NAMES
    default_root = "datasets/brats"

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        naming: str = "brats2021",
        modalities: list[str] | None = None,
        pattern: str | None = None,
        seg: str | None = None,
        labels: str | None = None,
        **kwargs,
    ):
        if naming not in BRATS_NAMINGS:
            raise ValueError(f"BraTSVolumes: naming must be one of {sorted(BRATS_NAMINGS)}, got {naming!r}")
        preset = BRATS_NAMINGS[naming]
        self.modalities = tuple(modalities if modalities is not None else preset["modalities"])
        self.pattern = pattern if pattern is not None else preset["pattern"]
        self.seg = seg if seg is not None else preset["seg"]
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"BraTSVolumes: modalities must be a non-empty list of distinct names, got {modalities!r}")
        if "{case}" not in self.pattern or "{modality}" not in self.pattern:
            raise ValueError(
                f"BraTSVolumes: pattern needs {{case}} and {{modality}} placeholders, got {self.pattern!r}"
            )
        labels = labels if labels is not None else preset["labels"]
        if labels is None:
            raise ValueError("BraTSVolumes: labels must be 'brats2021' or 'brats2023'")
        super().__init__(split, root, labels=labels, **kwargs)

    def _cases(self) -> list[tuple[str, list[Path], Path]]:
        out = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            case = folder.name
            images = [folder / self.pattern.format(case=case, modality=m) for m in self.modalities]
            out.append((case, images, folder / self.pattern.format(case=case, modality=self.seg)))
        return out


__all__ = ["BRATS_NAMINGS", "BraTSVolumes"]
