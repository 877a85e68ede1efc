"""Readers for the real segmentation datasets, each in its official on-disk layout (datasets/README.md).

Each yields schema samples (image float32 (3, H, W) in [0, 1], mask int64 (H, W) train ids with 255 =
ignore, valid bool (H, W)) and exposes ``class_names`` / ``num_classes``. Shared arguments and the
bad-sample policy: ``densekit.data.seg_base.SegDataset``.
"""

from __future__ import annotations

from pathlib import Path

from .seg_base import BadSampleWarning, SegDataset, label_lut, list_files, missing, pair_by_key
from .seg_labels import (
    ADE20K_CLASSES,
    ADE20K_LABEL_TO_TRAIN,
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_TO_TRAIN,
    VOC_CLASSES,
    VOC_LABEL_TO_TRAIN,
)
from .schema import IGNORE_INDEX

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")  # lossless only: JPEG artefacts would invent labels


class CityscapesSeg(SegDataset):
    """Cityscapes fine annotations: ``root/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with
    ``root/gtFine/<split>/<city>/<name>_gtFine_labelIds.png``; labelIds -> the 19 train ids of
    cityscapesScripts, every other id -> 255. (The ``_gtFine_color/instanceIds/polygons`` files beside
    them are not read.)"""

    class_names = CITYSCAPES_CLASSES
    default_root = "datasets/cityscapes"
    splits = ("train", "val", "test")
    lut = label_lut(CITYSCAPES_LABEL_TO_TRAIN)
    label_desc = "Cityscapes labelIds 0..33 (gtFine_labelIds.png, not the color or trainIds file)"

    def _pairs(self, split):
        image_root = self.root / "leftImg8bit" / split
        mask_root = self.root / "gtFine" / split
        for path, what in ((image_root, "Cityscapes leftImg8bit split"), (mask_root, "Cityscapes gtFine split")):
            if not path.is_dir():
                raise missing(path, what)
        self.listed = image_root
        images, masks = {}, {}
        for city in sorted(p for p in image_root.iterdir() if p.is_dir()):
            for path in list_files(city, ("_leftimg8bit.png",), "city folder"):
                images[f"{city.name}/{path.name[: -len('_leftImg8bit.png')]}"] = path
        for city in sorted(p for p in mask_root.iterdir() if p.is_dir()):
            for path in list_files(city, ("_gtfine_labelids.png",), "city folder"):
                masks[f"{city.name}/{path.name[: -len('_gtFine_labelIds.png')]}"] = path
        return pair_by_key(images, masks, image_root, mask_root)


class ADE20KSeg(SegDataset):
    """ADE20K SceneParsing (``ADEChallengeData2016``): ``images/{training,validation}/*.jpg`` with
    ``annotations/{training,validation}/*.png``; value 0 -> 255 (ignore), 1..150 -> 0..149. ``root`` may
    be the ``ADEChallengeData2016`` folder or the folder holding it. ``train``/``val`` name the official
    ``training``/``validation`` splits."""

    class_names = ADE20K_CLASSES
    default_root = "datasets/ade20k"
    splits = ("training", "validation")
    split_aliases = {"train": "training", "val": "validation"}
    lut = label_lut(ADE20K_LABEL_TO_TRAIN)
    label_desc = "ADE20K values 0 (unlabelled, ignored) or 1..150"

    def _pairs(self, split):
        base = self.root / "ADEChallengeData2016" if (self.root / "ADEChallengeData2016").is_dir() else self.root
        image_dir, mask_dir = base / "images" / split, base / "annotations" / split
        self.listed = image_dir
        images = {p.stem: p for p in list_files(image_dir, (".jpg",), "ADE20K images folder")}
        masks = {p.stem: p for p in list_files(mask_dir, (".png",), "ADE20K annotations folder")}
        return pair_by_key(images, masks, image_dir, mask_dir)


class VOCSeg(SegDataset):
    """Pascal VOC 2012 segmentation: ids from ``ImageSets/Segmentation/<split>.txt``, images
    ``JPEGImages/<id>.jpg``, masks ``SegmentationClass/<id>.png`` -- palette ('P') PNGs whose indices are
    the 21 classes and 255 the object border (ignored). ``root`` may be ``VOC2012``, the ``VOCdevkit``
    holding it, or the folder holding ``VOCdevkit``."""

    class_names = VOC_CLASSES
    default_root = "datasets/voc"
    splits = ("train", "val", "trainval")
    lut = label_lut(VOC_LABEL_TO_TRAIN)
    label_desc = "VOC class indices 0..20 or 255 (border)"
    mask_modes = ("P",)  # the official SegmentationClass PNGs are palette images

    def _pairs(self, split):
        for base in (self.root, self.root / "VOC2012", self.root / "VOCdevkit" / "VOC2012"):
            if (base / "JPEGImages").is_dir():
                break
        else:
            raise missing(self.root / "VOCdevkit" / "VOC2012" / "JPEGImages", "VOC2012 JPEGImages folder")
        list_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not list_file.is_file():
            raise missing(list_file, f"VOC split list {split}.txt")
        self.listed = list_file
        ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        images = {i: base / "JPEGImages" / f"{i}.jpg" for i in ids}
        masks = {i: base / "SegmentationClass" / f"{i}.png" for i in ids}
        absent = [str(p) for i in ids for p in (images[i], masks[i]) if not p.is_file()]
        if absent:
            more = f" ... and {len(absent) - 5} more" if len(absent) > 5 else ""
            raise ValueError(f"{list_file} lists {len(absent)} file(s) that do not exist: {absent[:5]}{more}")
        return [(images[i], masks[i]) for i in ids]


class FolderSeg(SegDataset):
    """A generic folder: ``root/images/<split>/<stem>.<jpg|png|...>`` with ``root/masks/<split>/<stem>.png``
    (same stem; masks lossless: png/bmp/tif), each mask a single-channel PNG of class indices 0..K-1, 255 =
    ignore. The class list is ``classes`` (names, or a path to a text file) or ``root/classes.txt`` (one
    name per line, line i = class i)."""

    default_root = "datasets/folder"
    splits = ()  # any split folder the user made (train, val, test, ...); a missing one names its path

    def __init__(self, split: str = "train", root: str | Path | None = None, classes=None, **kwargs):
        self.root = Path(root if root is not None else self.default_root).expanduser()
        if not self.root.is_dir():
            raise missing(self.root, "FolderSeg root")
        names = self._read_classes(classes)
        self.class_names = tuple(names)
        self.lut = label_lut({**{v: v for v in range(len(names))}, IGNORE_INDEX: IGNORE_INDEX})
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        self.label_desc = f"class indices 0..{len(names) - 1} ({shown}) or 255 (ignore)"
        super().__init__(split=split, root=root, **kwargs)

    def _read_classes(self, classes) -> list[str]:
        if classes is None or isinstance(classes, (str, Path)):
            path = self.root / "classes.txt" if classes is None else Path(classes).expanduser()
            if not path.is_file():
                raise missing(path, "class list (set data.class_names, or write one name per line to classes.txt)")
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            source = str(path)
        else:
            names, source = [str(c) for c in classes], "the class list"
        if not 1 <= len(names) <= IGNORE_INDEX:
            raise ValueError(f"{source}: expected 1..{IGNORE_INDEX} class names (255 is ignore), got {len(names)}")
        if len(set(names)) != len(names):
            raise ValueError(f"{source}: class names must be unique, got {names}")
        return names

    def _pairs(self, split):
        image_dir, mask_dir = self.root / "images" / split, self.root / "masks" / split
        self.listed = image_dir
        images, masks = {}, {}
        for files, directory, suffixes, what in (
            (images, image_dir, IMAGE_SUFFIXES, "images folder"),
            (masks, mask_dir, MASK_SUFFIXES, "masks folder"),
        ):
            for path in list_files(directory, suffixes, f"FolderSeg {what}"):
                if path.stem in files:
                    raise ValueError(
                        f"{directory}: two files share the stem {path.stem!r} ({files[path.stem].name}, {path.name}); "
                        "images and masks are matched by stem, so stems must be unique"
                    )
                files[path.stem] = path
        return pair_by_key(images, masks, image_dir, mask_dir)


__all__ = ["ADE20KSeg", "BadSampleWarning", "CityscapesSeg", "FolderSeg", "SegDataset", "VOCSeg"]
