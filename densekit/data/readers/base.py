"""The shared base of every file reader (segmentation, depth, flow, volume): listing, loading, the
bad-sample policy and the conversion to the batch schema.

A reader lists its samples at construction (cheap: directory listings only, so a 20k-image split opens
instantly) and checks contents when a sample is loaded: readable files, matching sizes, values the format
defines. A bad sample is a ``BadSampleError`` naming the file, or, with ``skip_bad=True``, is replaced by
the next good sample (deterministic, so epochs stay reproducible), counted, and reported with a
``BadSampleWarning`` carrying the count (each DataLoader worker process keeps its own count, as it holds
its own copy of the dataset).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ...errors import DataError
from ...schema import check_sample
from ..transforms.image import apply_augment, build_augment, check_resize

README = "datasets/README.md"
log = logging.getLogger(__name__)
_SAID: set[str] = set()  # notes already logged by this process (train and val readers share some)


class BadSampleWarning(UserWarning):
    """A sample was skipped because its files are unreadable or inconsistent (``skip_bad=True``)."""


class BadSampleError(DataError):
    """A sample's files are unreadable or inconsistent; the message names the file."""


def missing(path: Path, what: str) -> FileNotFoundError:
    """The error for an absent dataset directory/file: where we looked, and where the layout is described."""
    return FileNotFoundError(f"{what} not found: looked for {path.resolve()}; see {README} for where to put it")


def to_tensors(sample: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """numpy HWC sample -> schema tensors: image(s) (3,H,W), mask (H,W) int64, depth (1,H,W), flow (2,H,W),
    valid / noc (H,W) bool."""
    out = {}
    for key, value in sample.items():
        if key in ("image", "image2", "flow"):
            out[key] = torch.from_numpy(np.ascontiguousarray(value.transpose(2, 0, 1))).float()
        elif key == "depth":
            out[key] = torch.from_numpy(np.ascontiguousarray(value))[None].float()
        elif key == "mask":
            out[key] = torch.from_numpy(np.ascontiguousarray(value)).long()
        elif key in ("valid", "noc"):
            out[key] = torch.from_numpy(np.ascontiguousarray(value)).bool()
    return out


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


def open_image(path: Path, what: str) -> Image.Image:
    """A decoded image (the caller closes it); a truncated or corrupt file is a ``BadSampleError`` here."""
    img = None
    try:
        img = Image.open(path)
        img.load()  # decode now: a truncated or corrupt file fails here, not somewhere later
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if img is not None:
            img.close()
        raise BadSampleError(f"{path}: unreadable {what} ({type(exc).__name__}: {exc})") from None
    return img


def read_rgb(path: Path, what: str = "image") -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB."""
    # convert("RGB") also accepts the few greyscale / CMYK JPEGs real datasets contain
    with open_image(path, what) as image:
        return np.asarray(image.convert("RGB"))


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


class ReaderDataset(Dataset):
    """Base of the 2D file readers (segmentation, depth, flow). Subclasses set ``splits``, ``default_root``
    and ``required`` (the keys every sample holds), implement ``check_targets(targets)``,
    ``_samples(split)`` (one entry per sample, setting ``self.listed`` to what it read) and ``load(i)``
    (sample ``i`` as numpy HWC arrays, checked), and may override ``make_augment`` / ``apply``.

    Arguments shared by every reader:
      split       one of the reader's ``splits`` (``split_aliases`` maps other names onto them)
      root        the dataset folder (see datasets/README.md); None = ``default_root``
      augment     train-only random ops; other splits get the deterministic part only (``resize``)
      targets     what the task asks for; a reader refuses targets it does not provide
      skip_bad    replace unreadable/inconsistent samples by the next good one instead of raising
      length      samples per epoch: fewer than the split caps it, more repeats it; None = the split
      resize      short side in pixels for every split (deterministic), or None for the native size
    """

    splits: tuple[str, ...] = ("train", "val")
    split_aliases: ClassVar[dict[str, str]] = {}
    default_root = "datasets"  # relative to the working directory, like data.root
    required: tuple[str, ...] = ("image",)

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        augment: dict | None = None,
        targets: tuple[str, ...] = (),
        skip_bad: bool = False,
        length: int | None = None,
        resize: int | None = None,
    ):
        name = type(self).__name__
        split = self.split_aliases.get(split, split)
        if self.splits and split not in self.splits:
            raise ValueError(f"{name}: split must be one of {list(self.splits)}, got {split!r}")
        targets = tuple(targets)
        self.check_targets(targets)
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise ValueError(f"{name}: length must be a positive int or null, got {length!r}")
        self.split, self.skip_bad = split, bool(skip_bad)
        self.root = Path(root if root is not None else self.default_root).expanduser()
        if not self.root.is_dir():
            raise missing(self.root, f"{name} root")
        # the config is checked before any file is touched: a typo should not wait for a directory listing
        self.resize = check_resize(resize)
        self.is_train = split == self.split_aliases.get("train", "train")
        self.augment = self.make_augment(augment, targets)
        self.listed = self.root  # what _samples read (a folder or a list file), for the empty-split error
        self.files = self._samples(split)
        if not self.files:
            raise ValueError(f"{name}: split {split!r} is empty: no samples in {Path(self.listed).resolve()}")
        self.length = len(self.files) if length is None else int(length)
        self.skipped: dict[int, str] = {}  # index into files -> why it was skipped (this process)
        self.notes: list[str] = []  # facts about the data worth one log line (and the run summary)

    # -- what a subclass provides ------------------------------------------------------------------------
    def check_targets(self, targets: tuple[str, ...]) -> None:
        """Refuse targets this reader does not provide (a ValueError naming them)."""

    def _samples(self, split: str) -> list:
        raise NotImplementedError

    def load(self, i: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def make_augment(self, augment: dict | None, targets: tuple[str, ...]):
        """The augmentation of this split: the random ops on train, only ``resize`` elsewhere."""
        train = build_augment(augment, resize=self.resize, targets=targets)  # checks the config for every split
        return train if self.is_train else build_augment(None, resize=self.resize)

    def apply(self, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return apply_augment(self.augment, sample)

    # -- shared --------------------------------------------------------------------------------------------
    def note(self, text: str) -> None:
        """Record ``text`` in ``self.notes`` and say it once in the log."""
        if text not in self.notes:
            self.notes.append(text)
        if text not in _SAID:
            _SAID.add(text)
            log.info("%s %s: %s", type(self).__name__, self.split, text)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.apply(load_or_skip(self, index, len(self.files)))
        return check_sample(to_tensors(sample), required=self.required)


__all__ = [
    "BadSampleError",
    "BadSampleWarning",
    "ReaderDataset",
    "label_lut",
    "list_files",
    "load_or_skip",
    "missing",
    "open_image",
    "pair_by_key",
    "read_rgb",
    "spread",
    "to_tensors",
]
