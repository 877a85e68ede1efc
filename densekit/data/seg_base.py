"""The shared machinery of the segmentation readers: pairing, loading, label mapping, bad-sample policy.

A reader lists (image, mask) file pairs at construction (cheap: directory listings only, so a 20k-image
split opens instantly) and checks contents when a sample is loaded: readable image, single-channel mask
of the same size, every label known to the format. A bad sample is a ``ValueError`` naming the file, or,
with ``skip_bad=True``, is replaced by the next good sample (deterministic, so epochs stay reproducible),
counted, and reported with a ``BadSampleWarning`` carrying the count (each DataLoader worker process
keeps its own count, as it holds its own copy of the dataset).
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DataError
from .datasets import to_tensors
from .schema import check_sample
from .transforms import apply_augment, build_augment, check_resize

README = "datasets/README.md"
log = logging.getLogger(__name__)
CROP_SAMPLE = 64  # train image headers read to fit the crop (headers only: milliseconds)
_SAID: set[str] = set()  # notes already logged by this process (train and val readers share some)


class BadSampleWarning(UserWarning):
    """A sample was skipped because its files are unreadable or inconsistent (``skip_bad=True``)."""


class BadSampleError(DataError):
    """A sample's files are unreadable or inconsistent; the message names the file."""


def missing(path: Path, what: str) -> FileNotFoundError:
    """The error for an absent dataset directory/file: where we looked, and where the layout is described."""
    return FileNotFoundError(f"{what} not found: looked for {path.resolve()}; see {README} for where to put it")


def label_lut(table: dict[int, int]) -> np.ndarray:
    """{raw value: train id} -> a lookup table of 256 entries (more if a raw value is larger, e.g. 16-bit
    masks); -1 marks raw values the format does not define."""
    lut = np.full(max(256, max(table, default=0) + 1), -1, np.int16)
    for raw, train in table.items():
        lut[raw] = train
    return lut


def spread(n: int, k: int) -> list[int]:
    """Up to ``k`` indices spread evenly over ``range(n)``, first and last included: a sample that sees
    every part of a split sorted by name (files named by date, class or source)."""
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, min(n, k))}) if n else []


def list_files(directory: Path, suffixes: tuple[str, ...], what: str) -> list[Path]:
    if not directory.is_dir():
        raise missing(directory, what)
    return sorted(p for p in directory.iterdir() if p.is_file() and p.name.lower().endswith(suffixes))


def pair_by_key(images: dict[str, Path], masks: dict[str, Path], image_dir: Path, mask_dir: Path) -> list:
    """Pair two {key: path} maps; any unpaired file is an error naming it (a silently dropped image or mask
    would quietly shrink the split)."""
    lonely_images = sorted(set(images) - set(masks))
    lonely_masks = sorted(set(masks) - set(images))
    if lonely_images or lonely_masks:
        lines = [f"image without a mask (expected one in {mask_dir}): {images[k]}" for k in lonely_images[:5]]
        lines += [f"mask without an image (expected one in {image_dir}): {masks[k]}" for k in lonely_masks[:5]]
        n = len(lonely_images) + len(lonely_masks)
        more = f"\n  ... and {n - len(lines)} more" if n > len(lines) else ""
        raise ValueError(f"{n} unpaired file(s):\n  " + "\n  ".join(lines) + more)
    return [(images[k], masks[k]) for k in sorted(images)]


def load_or_skip(dataset, index: int, n: int, what: str = "sample") -> dict:
    """``dataset.load(i)`` of the first good item at or after ``index`` (mod ``n``): the shared bad-sample
    policy of every reader. A ``BadSampleError`` propagates, or with ``dataset.skip_bad`` the item is
    recorded in ``dataset.skipped``, warned about with the running count, and the next item is tried, so a
    bad item always has the same deterministic substitute and epochs stay reproducible."""
    if not 0 <= index < dataset.length:
        raise IndexError(f"index {index} out of range for {dataset.length} samples")
    for step in range(n):
        i = (index + step) % n
        if i in dataset.skipped:
            continue
        try:
            return dataset.load(i)
        except BadSampleError as exc:
            if not dataset.skip_bad:
                raise
            dataset.skipped[i] = str(exc)
            warnings.warn(
                f"{type(dataset).__name__} {dataset.split}: skipping bad {what} ({exc}); "
                f"{len(dataset.skipped)} of {n} skipped so far (skip_bad=True)",
                BadSampleWarning,
                stacklevel=3,
            )
    raise ValueError(
        f"{type(dataset).__name__} {dataset.split}: all {n} {what}s under {dataset.root.resolve()} are bad; "
        f"first: {next(iter(dataset.skipped.values()))}"
    )


class SegDataset(Dataset):
    """Base of the real segmentation readers. Subclasses set ``class_names``, ``splits`` and ``lut`` (raw
    mask value -> train id) and implement ``_pairs(split)`` (setting ``self.listed`` to what it read).

    Arguments shared by every reader:
      split       one of the reader's ``splits``
      root        the dataset folder (see datasets/README.md); None = ``default_root``
      augment     train-only random ops (``densekit.data.transforms``); ignored for other splits
      resize      short side in pixels for every split (deterministic), or None for the native size
      targets     what the task asks for; segmentation readers provide only "mask"
      skip_bad    replace unreadable/inconsistent samples by the next good one instead of raising
      length      samples per epoch: fewer than the split caps it, more repeats it; None = the split
      fit_crop    cut the train crop per side to the largest (resized, zoomed) train image of a sample
                  (``CROP_SAMPLE`` headers): a crop larger than every image is padding only (a 512 crop of
                  80x96 images is 97 % padding); said once in the log and in ``notes``
    """

    class_names: tuple[str, ...] = ()
    splits: tuple[str, ...] = ("train", "val")
    split_aliases: dict[str, str] = {}
    lut: np.ndarray
    label_desc = ""  # the valid raw values, for error messages
    default_root = "datasets"  # relative to the working directory, like data.root
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
        name = type(self).__name__
        split = self.split_aliases.get(split, split)
        if self.splits and split not in self.splits:
            raise ValueError(f"{name}: split must be one of {list(self.splits)}, got {split!r}")
        bad = [t for t in targets if t != "mask"]
        if bad:
            raise ValueError(f"{name} provides only the 'mask' target; the task asked for {list(targets)}")
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise ValueError(f"{name}: length must be a positive int or null, got {length!r}")
        if not isinstance(fit_crop, bool):
            raise ValueError(f"{name}: fit_crop must be true or false, got {fit_crop!r}")
        self.split, self.skip_bad = split, bool(skip_bad)
        self.root = Path(root if root is not None else self.default_root).expanduser()
        if not self.root.is_dir():
            raise missing(self.root, f"{name} root")
        # the config is checked before any file is touched: a typo should not wait for a directory listing
        self.resize = check_resize(resize)
        train = build_augment(augment, resize=self.resize, targets=tuple(targets))
        is_train = split == self.split_aliases.get("train", "train")
        self.augment = train if is_train else build_augment(None, resize=self.resize)  # val: deterministic
        self.listed = self.root  # what _pairs read (a folder or a list file), for the empty-split error
        self.files = self._pairs(split)
        if not self.files:
            raise ValueError(f"{name}: split {split!r} is empty: no samples in {self.listed.resolve()}")
        self.length = len(self.files) if length is None else int(length)
        self.skipped: dict[int, str] = {}  # index into files -> why it was skipped (this process)
        self.notes: list[str] = []  # facts about the data worth one log line (and the run summary)
        if is_train and fit_crop and augment and augment.get("crop") is not None:
            self._fit_crop(dict(augment), tuple(targets))

    def note(self, text: str) -> None:
        """Record ``text`` in ``self.notes`` and say it once in the log."""
        if text not in self.notes:
            self.notes.append(text)
        if text not in _SAID:
            _SAID.add(text)
            log.info("%s %s: %s", type(self).__name__, self.split, text)

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
            f"train crop {crop[0]}x{crop[1]} -> {fitted[0]}x{fitted[1]} (HxW): the largest of {len(sizes)} sampled "
            f"train images is {largest[0]}x{largest[1]}"
            + (" after resize/scale" if self.resize is not None or zoom != 1.0 else "")
            + "; a larger crop would only add padding"
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _pairs(self, split: str) -> list[tuple[Path, Path]]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.length

    # -- loading -------------------------------------------------------------------------------------
    @staticmethod
    def _open(path: Path, what: str) -> Image.Image:
        img = None
        try:
            img = Image.open(path)
            img.load()  # decode now: a truncated or corrupt file fails here, not somewhere later
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            if img is not None:
                img.close()
            raise BadSampleError(f"{path}: unreadable {what} ({type(exc).__name__}: {exc})") from None
        return img

    def read_mask(self, path: Path) -> np.ndarray:
        """Raw label values of a mask file, (H, W) integer array."""
        return self.read_mask_image(self._open(path, "mask"), path)

    def read_mask_image(self, img: Image.Image, path: Path) -> np.ndarray:
        """Raw label values of a decoded single-channel mask; other modes are an error naming ``path``."""
        if img.mode not in self.mask_modes:
            raise BadSampleError(
                f"{path}: expected a single-channel label PNG of class indices (mode {'/'.join(self.mask_modes)}), "
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
        """Sample ``i`` of the file list as numpy (image uint8 or float32 HWC, mask int64 train ids), checked."""
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
        # convert("RGB") also accepts the few greyscale / CMYK JPEGs real datasets contain
        with self._open(path, "image") as image:
            return np.asarray(image.convert("RGB"))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = load_or_skip(self, index, len(self.files))
        sample = apply_augment(self.augment, sample)
        return check_sample(to_tensors(sample), required=("image", "mask", "valid"))
