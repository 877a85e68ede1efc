"""``FolderSeg``: your own segmentation folder (images + masks by stem, a class list, colour masks, label
maps, 16-bit images), with the checks that catch the usual first-contact mistakes (0/255 masks, colour masks
without a colour table) before training starts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import ConfigError, DataError
from ...schema import IGNORE_INDEX
from ..registry import DATASETS
from ..transforms.intensity import (
    GREY_MODES,
    SAMPLE,
    IntensityRule,
    is_wide,
    is_wide_colour_file,
    raw_pixels,
    read_wide_colour,
)
from .base import BadSampleError, label_lut, list_files, missing, open_image, pair_by_key, spread
from .seg import SegDataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")  # lossless only: JPEG artefacts would invent labels


@DATASETS.register("folder", tasks=("seg",), dims=2)
class FolderSeg(SegDataset):
    """A generic folder: ``root/images/<split>/<stem>.<jpg|png|tif|...>`` with
    ``root/masks/<split>/<stem>.png`` (same stem; masks lossless: png/bmp/tif). The class list is
    ``classes`` (names, or a path to a text file) or ``root/classes.txt``: one class per line, line i =
    class i, each line ``name`` or ``name r g b``
    (the class's colour in RGB colour masks).

    Masks, as annotation tools write them:
      * single-channel (L, I;16, 1) class indices 0..K-1, 255 = ignore;
      * palette PNGs (mode P): the palette *index* is the class, whatever colour the palette shows (the
        VOC convention); a colour table is not used for them;
      * RGB colour masks: each colour is looked up in the colour table (``name r g b`` lines, or
        ``palette=[[r, g, b], ...]``, one colour per class, which wins over classes.txt); an unknown colour
        is an error naming the file and the colour. An RGB mask whose three channels are equal everywhere
        is read as grey values; any other RGB mask without a colour table is refused in one line.
      * ``label_map={raw: train id}`` maps raw values (or colour-table indices) to train ids 0..K-1 or 255
        (ignore), over the default table (v -> v for v < K, 255 -> ignore): ``{255: 1}`` reads 0/255 binary
        masks. Without a map, masks whose values are only {0, 255} (with K >= 2 classes) are refused in one
        line naming a file, the values and the override: 255 would otherwise be read as ignore and the
        foreground never trained or scored. They are looked for in a sample of the split at construction
        (``MASK_SAMPLE`` masks spread over it) and, until a foreground value has been seen, on load.

    Images: 8-bit files become RGB / 255 as ever; 16-bit, 32-bit and float grey images, and 16-bit colour
    PNG/TIFF (read at full depth, not Pillow's 8-bit cut), are scaled by the ``intensity`` rule
    (``densekit.data.transforms.intensity``: by default the 0.5-99.5 percentiles of a sample of the
    train split). Grey images are replicated to 3 channels: ``in_channels`` is 3, ``source_channels`` 1.
    ``fit_crop=True`` (the conf/data/folder.yaml default) cuts the train crop per side to the largest train
    image of a sample, said in ``notes``.
    """

    default_root = "datasets/folder"
    splits = ()  # any split folder the user made (train, val, test, ...); a missing one names its path
    MASK_SAMPLE = 16

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        classes=None,
        label_map: dict | None = None,
        palette: list | None = None,
        intensity: dict | None = None,
        **kwargs,
    ):
        self.root = Path(root if root is not None else self.default_root).expanduser()
        if not self.root.is_dir():
            raise missing(self.root, "FolderSeg root")
        names, colours, source = self._read_classes(classes)
        self.class_names = tuple(names)
        self.colour_source = "data.palette" if palette is not None else source
        self.colours = check_palette(palette, len(names)) if palette is not None else colours
        self.label_map = check_label_map(label_map, len(names))
        self.lut = label_lut(
            {**{v: v for v in range(len(names))}, IGNORE_INDEX: IGNORE_INDEX, **(self.label_map or {})}
        )
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        if self.label_map is None:
            self.label_desc = (
                f"class indices 0..{len(names) - 1} ({shown}) or 255 (ignore); other raw values "
                f"can be mapped with data.label_map={{raw:id}}"
            )
        else:
            self.label_desc = (
                f"class indices 0..{len(names) - 1} ({shown}), 255 (ignore) or a key of data.label_map {self.label_map}"
            )
        self.intensity = IntensityRule(intensity)  # checked before any image is read
        self._foreground_seen = False  # a raw mask value other than 0/255 seen (ends the 0/255 check)
        super().__init__(split=split, root=root, **kwargs)
        self._check_mask_sample()
        self._inspect_images()

    # -- class list and colour table -------------------------------------------------------------------
    def _read_classes(self, classes) -> tuple[list[str], np.ndarray | None, str]:
        if classes is None or isinstance(classes, (str, Path)):
            path = self.root / "classes.txt" if classes is None else Path(classes).expanduser()
            if not path.is_file():
                raise missing(path, "class list (set data.class_names, or write one name per line to classes.txt)")
            lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            source = str(path)
        else:
            lines, source = [str(c).strip() for c in classes], "data.class_names"
        parsed = [_name_and_colour(line) for line in lines]
        names = [name for name, _ in parsed]
        if not 1 <= len(names) <= IGNORE_INDEX:
            raise ValueError(f"{source}: expected 1..{IGNORE_INDEX} class names (255 is ignore), got {len(names)}")
        if len(set(names)) != len(names):
            raise ValueError(f"{source}: class names must be unique, got {names}")
        with_colour = [i for i, (_, c) in enumerate(parsed) if c is not None]
        if not with_colour:
            return names, None, source
        if len(with_colour) != len(parsed):
            bare = next(i for i, (_, c) in enumerate(parsed) if c is None)
            raise ConfigError(
                f"{source}: line {with_colour[0] + 1} ({lines[with_colour[0]]!r}) gives a colour but line "
                f"{bare + 1} ({lines[bare]!r}) does not; write `name r g b` on every line or on none"
            )
        return names, check_palette([c for _, c in parsed], len(names), source), source

    # -- masks -------------------------------------------------------------------------------------------
    def read_mask(self, path: Path) -> np.ndarray:
        """Raw label values of a mask file, (H, W): indices (grey, palette) or colour-table indices (RGB)."""
        img = open_image(path, "mask")
        if img.mode == "LA":  # grey + alpha, as some editors save: the grey channel holds the values
            return np.asarray(img.getchannel("L"))
        if img.mode not in ("RGB", "RGBA"):
            return super().read_mask_image(img, path)
        rgb = np.asarray(img.convert("RGB"))
        if self.colours is not None:
            return self._colours_to_indices(rgb, path)
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return rgb[..., 0]  # a grey mask stored as RGB: its values, as in a grey PNG
        raise DataError(
            f"{path}: an RGB colour mask, but no colour table says which colour is which class: write "
            f"`name r g b` lines in {self.root / 'classes.txt'} or set data.palette=[[r,g,b],...] "
            f"(one colour "
            f"per class, in class order), or save masks as single-channel class indices"
        )

    def _colours_to_indices(self, rgb: np.ndarray, path: Path) -> np.ndarray:
        key = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]  # (H, W)
        colours, inverse = np.unique(key, return_inverse=True)
        table = {int(k): i for i, k in enumerate(_colour_keys(self.colours))}
        index = np.array([table.get(int(k), -1) for k in colours], np.int64)
        if (index < 0).any():
            unknown = [_rgb(int(k)) for k in colours[index < 0]]
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise BadSampleError(
                f"{path}: colour(s) {', '.join(map(str, unknown[:5]))}{more} are not in the colour table "
                f"({self.colour_source}: {len(self.colours)} colours, "
                f"e.g. {tuple(int(v) for v in self.colours[0])} "
                f"= {self.class_names[0]!r})"
            )
        return index[inverse.reshape(-1)].reshape(rgb.shape[:2]).astype(np.uint8)

    def _binary_255_error(self, path: Path, values, detail: str) -> DataError:
        names = self.class_names
        fix = "{255:1}" if len(names) == 2 else "{255:<class id>} (e.g. {255:1})"
        found = "{" + ", ".join(str(int(v)) for v in sorted(values)) + "}"
        return DataError(
            f"{path}: mask values are only {found} ({detail}) but the class list has {len(names)} classes "
            f"({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}): 255 would be read as ignore and "
            f"{names[1]!r} never trained or scored; if 255 marks a class set data.label_map={fix}, if 255 "
            f"really is ignore set data.label_map={{255:255}}"
        )

    def _watch_binary(self, raw: np.ndarray, path: Path, detail: str) -> None:
        """The 0/255 check of one mask's raw values (no label_map, K >= 2, no foreground seen yet)."""
        if self.label_map is not None or self.num_classes < 2 or self._foreground_seen:
            return
        values = np.unique(raw)
        if ((values != 0) & (values != IGNORE_INDEX)).any():
            self._foreground_seen = True
        elif IGNORE_INDEX in values:
            raise self._binary_255_error(path, values.tolist(), detail)

    def _check_mask_sample(self) -> None:
        """Read a sample of masks spread over the split: refuse 0/255 binary masks before training starts."""
        if self.label_map is not None or self.num_classes < 2:
            return
        seen, first_255 = set(), None
        picks = spread(len(self.files), self.MASK_SAMPLE)
        for i in picks:
            try:
                values = set(np.unique(self.read_mask(self.files[i][1])).tolist())
            except BadSampleError:
                continue  # unreadable or inconsistent: reported when the sample is loaded
            seen |= values
            if first_255 is None and IGNORE_INDEX in values:
                first_255 = self.files[i][1]
        if seen - {0, IGNORE_INDEX}:
            self._foreground_seen = True
        elif first_255 is not None:
            raise self._binary_255_error(first_255, seen, f"in all {len(picks)} sampled masks of split {self.split!r}")

    def encode(self, raw: np.ndarray, path: Path) -> np.ndarray:
        # on load too: the construction sample may have missed the 0/255 masks (a split of all-0 masks first)
        self._watch_binary(raw, path, "and no other mask value was seen so far")
        return super().encode(raw, path)

    # -- images --------------------------------------------------------------------------------------
    def read_image(self, path: Path) -> np.ndarray:
        return self.intensity.apply(self._raw_image(path))

    def _raw_image(self, path: Path) -> np.ndarray:
        """The stored pixel values: (H, W, 3) uint8 RGB for 8-bit files, (H, W) or (H, W, 3) of the file's
        dtype otherwise (16-bit colour PNG/TIFF at full depth: Pillow would cut them to 8 bits)."""
        if is_wide_colour_file(path):
            try:
                return read_wide_colour(path)
            except ValueError as exc:
                raise BadSampleError(str(exc)) from None
        with open_image(path, "image") as image:
            return raw_pixels(image)

    def _inspect_images(self) -> None:
        """Channels of a sample (header only) and, where the rule needs it, the train split's intensity
        range."""
        picks = [self.files[i][0] for i in spread(len(self.files), SAMPLE)]
        modes, wide = [], False
        for path in picks:
            try:
                with Image.open(path) as img:  # the header only
                    modes.append(img.mode)
            except (OSError, SyntaxError, ValueError):
                continue
            wide = wide or is_wide(img.mode) or is_wide_colour_file(path)
        if modes and all(m in GREY_MODES for m in modes):
            self.source_channels = 1
            self.note(
                f"grey images (mode {'/'.join(sorted(set(modes)))}): replicated to 3 channels for the "
                "RGB-pretrained stems (in_channels=3, source_channels=1)"
            )
        rule = self.intensity
        if not rule.needs_dataset_range:
            return
        if rule.cfg["mode"] == "auto" and not wide:
            return  # 8-bit only: / 255, nothing to measure
        train_paths, where = self._train_image_sample()
        n = rule.measure(train_paths, self._raw_or_none)
        if n:
            self.note(rule.note + ("" if where == "train" else f" [no train split: measured on {where!r}]"))

    def _train_image_sample(self) -> tuple[list[Path], str]:
        """Up to ``SAMPLE`` image paths spread over the train split (this split's where there is none)."""
        if self.split == "train":
            paths = [p for p, _ in self.files]
        else:
            directory = self.root / "images" / "train"
            paths = list_files(directory, IMAGE_SUFFIXES, "images folder") if directory.is_dir() else []
            paths.sort(key=lambda p: p.stem)  # the train reader's order (by stem), so both sample the same files
            if not paths:
                return [self.files[i][0] for i in spread(len(self.files), SAMPLE)], self.split
        return [paths[i] for i in spread(len(paths), SAMPLE)], "train"

    def _raw_or_none(self, path: Path):
        try:
            return self._raw_image(path)
        except BadSampleError:
            return None  # reported when the sample is loaded

    def _samples(self, split):
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
                        f"{directory}: two files share the stem {path.stem!r} "
                        f"({files[path.stem].name}, {path.name}); "
                        "images and masks are matched by stem, so stems must be unique"
                    )
                files[path.stem] = path
        return pair_by_key(images, masks, image_dir, mask_dir)


def _name_and_colour(line: str) -> tuple[str, tuple[int, int, int] | None]:
    """A class-list line: ``name`` or ``name r g b`` (the name may hold spaces:
    ``traffic light 250 170 30``)."""
    parts = line.split()
    if len(parts) >= 4 and all(p.isdigit() for p in parts[-3:]):
        return " ".join(parts[:-3]), tuple(int(p) for p in parts[-3:])
    return line, None


def _colour_keys(colours: np.ndarray) -> np.ndarray:
    return (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]


def _rgb(key: int) -> tuple[int, int, int]:
    return (key >> 16) & 255, (key >> 8) & 255, key & 255


def check_palette(palette, num_classes: int, source: str = "data.palette") -> np.ndarray:
    """A colour table (one [r, g, b] per class, in class order) -> (K, 3) int64; ConfigError naming
    ``source``."""
    if not isinstance(palette, (list, tuple)) or len(palette) != num_classes:
        got = len(palette) if isinstance(palette, (list, tuple)) else repr(palette)
        raise ConfigError(f"{source}: expected {num_classes} colours [r, g, b] (one per class), got {got}")
    for i, c in enumerate(palette):
        ok = (
            isinstance(c, (list, tuple))
            and len(c) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
        )
        if not ok:
            raise ConfigError(f"{source}: colour {i} is {c!r}; expected [r, g, b] with integers 0..255")
    colours = np.asarray(palette, np.int64).reshape(num_classes, 3)
    keys = _colour_keys(colours)
    if len(set(keys.tolist())) != len(keys):
        dup = next(tuple(c) for c, k in zip(colours.tolist(), keys) if (keys == k).sum() > 1)
        raise ConfigError(f"{source}: colour {dup} is given to two classes; each class needs its own colour")
    return colours


def check_label_map(label_map, num_classes: int) -> dict[int, int] | None:
    """``data.label_map`` -> {raw value: train id}; ConfigError naming the entry that is wrong."""
    if label_map is None:
        return None
    example = "e.g. data.label_map={255:1}"
    if not isinstance(label_map, dict) or not label_map:
        raise ConfigError(f"data.label_map must be a mapping {{raw value: train id}} ({example}), got {label_map!r}")
    out = {}
    for raw, train in label_map.items():
        key = int(raw) if isinstance(raw, str) and raw.strip().isdigit() else raw
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key <= 65535:
            raise ConfigError(f"data.label_map: key {raw!r} is not a raw mask value 0..65535 ({example})")
        if (
            isinstance(train, bool)
            or not isinstance(train, int)
            or not (0 <= train < num_classes or train == IGNORE_INDEX)
        ):
            raise ConfigError(
                f"data.label_map: {raw}: {train!r} is not a train id; "
                f"expected 0..{num_classes - 1} (the class "
                f"list) or {IGNORE_INDEX} (ignore)"
            )
        out[key] = train
    return out


__all__ = ["FolderSeg", "check_label_map", "check_palette"]
