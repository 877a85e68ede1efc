"""Segmentation readers: the ``SegDataset`` base and the official on-disk layouts of Cityscapes, ADE20K and
Pascal VOC (datasets/README.md); ``FolderSeg`` (your own folder) is in ``densekit.data.readers.seg_folder``.

Each yields schema samples (image float32 (3, H, W) in [0, 1], mask int64 (H, W) train ids with 255 =
ignore, valid bool (H, W)) and exposes ``class_names`` / ``num_classes``. Listing, loading and the
bad-sample policy: ``densekit.data.readers.base``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from ..registry import DATASETS
from ..transforms.image import build_augment
from .base import (
    BadSampleError,
    ReaderDataset,
    label_lut,
    list_files,
    missing,
    open_image,
    pair_by_key,
    read_rgb,
    spread,
)
from .seg_labels import (
    ADE20K_CLASSES,
    ADE20K_LABEL_TO_TRAIN,
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_TO_TRAIN,
    VOC_CLASSES,
    VOC_LABEL_TO_TRAIN,
)

CROP_SAMPLE = 64  # train image headers read to fit the crop (headers only: milliseconds)


class SegDataset(ReaderDataset):
    """Base of the real segmentation readers. Subclasses set ``class_names``, ``splits`` and ``lut`` (raw
    mask value -> train id) and implement ``_samples(split)`` -> [(image path, mask path)] (setting
    ``self.listed`` to what it read).

    Arguments beyond the shared ones (``ReaderDataset``):
      targets     segmentation readers provide only "mask"
      fit_crop    cut the train crop per side to the largest (resized, zoomed) train image of a sample
                  (``CROP_SAMPLE`` headers): a crop larger than every image is padding only (a 512 crop of
                  80x96 images is 97 % padding); said once in the log and in ``notes``
    """

    class_names: tuple[str, ...] = ()
    lut: np.ndarray
    label_desc = ""  # the valid raw values, for error messages
    required = ("image", "mask", "valid")
    # single-channel label maps only: an RGB "mask" is a colour rendering, whose colours are not class ids
    mask_modes: tuple[str, ...] = ("L", "P", "I", "I;16", "1")
    # what the model gets (images are always RGB in the batch) and what the files hold (1: grey, replicated)
    in_channels = 3
    source_channels = 3

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        augment: dict | None = None,
        targets: tuple[str, ...] = ("mask",),
        skip_bad: bool = False,
        length: int | None = None,
        resize: int | None = None,
        fit_crop: bool = False,
    ):
        if not isinstance(fit_crop, bool):
            raise ValueError(f"{type(self).__name__}: fit_crop must be true or false, got {fit_crop!r}")
        super().__init__(split, root, augment, targets, skip_bad, length, resize)
        if self.is_train and fit_crop and augment and augment.get("crop") is not None:
            self._fit_crop(dict(augment), tuple(targets))

    def check_targets(self, targets):
        bad = [t for t in targets if t != "mask"]
        if bad:
            raise ValueError(
                f"{type(self).__name__} provides only the 'mask' target; the task asked for {list(targets)}"
            )

    def _fit_crop(self, augment: dict, targets: tuple[str, ...]) -> None:
        """Shrink ``augment.crop`` per side to the largest train image of a sample (after ``resize`` and the
        largest ``scale`` zoom), and rebuild the augmentation with it; validation is untouched."""
        sizes = []
        for i in spread(len(self.files), CROP_SAMPLE):
            try:
                with Image.open(self.files[i][0]) as img:  # the header only: no pixels decoded
                    sizes.append(img.size[::-1])  # (H, W)
            except (OSError, SyntaxError, ValueError):
                continue  # reported when the sample is loaded
        if not sizes:
            return
        zoom = float(augment["scale"][1]) if augment.get("scale") is not None else 1.0
        largest = [0, 0]
        for h, w in sizes:
            s = self.resize / min(h, w) if self.resize is not None else 1.0
            largest = [max(largest[0], math.ceil(h * s * zoom)), max(largest[1], math.ceil(w * s * zoom))]
        crop = [int(c) for c in augment["crop"]]
        fitted = [max(8, min(c, m)) for c, m in zip(crop, largest)]
        if fitted == crop:
            return
        augment["crop"] = fitted
        self.augment = build_augment(augment, resize=self.resize, targets=targets)
        self.note(
            f"train crop {crop[0]}x{crop[1]} -> {fitted[0]}x{fitted[1]} (HxW): the largest of {len(sizes)} "
            f"sampled train images is {largest[0]}x{largest[1]}"
            + (" after resize/scale" if self.resize is not None or zoom != 1.0 else "")
            + "; a larger crop would only add padding"
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # -- loading -------------------------------------------------------------------------------------
    def read_mask(self, path: Path) -> np.ndarray:
        """Raw label values of a mask file, (H, W) integer array."""
        return self.read_mask_image(open_image(path, "mask"), path)

    def read_mask_image(self, img: Image.Image, path: Path) -> np.ndarray:
        """Raw label values of a decoded single-channel mask; other modes are an error naming ``path``."""
        if img.mode not in self.mask_modes:
            raise BadSampleError(
                f"{path}: expected a single-channel label PNG of class indices "
                f"(mode {'/'.join(self.mask_modes)}), "
                f"got mode {img.mode} -- a colour rendering instead of label indices?"
            )
        return np.asarray(img).astype(np.uint8) if img.mode == "1" else np.asarray(img)  # "1": bilevel PNG

    def encode(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Raw mask values -> train ids in [0, K) or 255; unknown values are an error naming the file."""
        if raw.size and (raw.min() < 0 or raw.max() >= len(self.lut)):
            raise BadSampleError(f"{path}: label values up to {raw.max()} found; expected {self.label_desc}")
        mapped = self.lut[raw.astype(np.uint8) if len(self.lut) == 256 else raw.astype(np.intp)]
        if (mapped < 0).any():
            values = np.unique(raw[mapped < 0]).tolist()
            raise BadSampleError(
                f"{path}: label values {values[:10]} are outside the class list; expected {self.label_desc}"
            )
        return mapped.astype(np.int64)

    def load(self, i: int) -> dict[str, np.ndarray]:
        """Sample ``i`` of the file list as numpy (image uint8 or float32 HWC, mask int64 train ids),
        checked."""
        image_path, mask_path = self.files[i]
        rgb = self.read_image(image_path)
        mask = self.read_mask(mask_path)
        if mask.shape != rgb.shape[:2]:
            raise BadSampleError(
                f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image {image_path} is "
                f"{rgb.shape[1]}x{rgb.shape[0]}; they must match"
            )
        return {"image": rgb, "mask": self.encode(mask, mask_path), "valid": np.ones(mask.shape, bool)}

    def read_image(self, path: Path) -> np.ndarray:
        """An image file -> (H, W, 3): uint8 (divided by 255 later) or float32 in [0, 1]."""
        return read_rgb(path)


@DATASETS.register("cityscapes", tasks=("seg",), dims=2)
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

    def _samples(self, split):
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


@DATASETS.register("ade20k", tasks=("seg",), dims=2)
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

    def _samples(self, split):
        base = self.root / "ADEChallengeData2016" if (self.root / "ADEChallengeData2016").is_dir() else self.root
        image_dir, mask_dir = base / "images" / split, base / "annotations" / split
        self.listed = image_dir
        images = {p.stem: p for p in list_files(image_dir, (".jpg",), "ADE20K images folder")}
        masks = {p.stem: p for p in list_files(mask_dir, (".png",), "ADE20K annotations folder")}
        return pair_by_key(images, masks, image_dir, mask_dir)


@DATASETS.register("voc", tasks=("seg",), dims=2)
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

    def _samples(self, split):
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


__all__ = ["ADE20KSeg", "CityscapesSeg", "SegDataset", "VOCSeg"]
