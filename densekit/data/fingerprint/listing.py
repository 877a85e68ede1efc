"""Folder layouts listed without their reader (``raw_listing``), for when the reader refuses the data at
construction: the fingerprint is then still taken, and says why the reader refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...schema import IGNORE_INDEX
from ..readers.nifti_folder import CHANNEL_FILE, LABEL_FILE
from ..readers.volume import LABEL_CONVENTIONS, VOLUME_CLASS_NAMES, select_split

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")


class RawFolder:
    """The files of a folder layout listed without its reader (``raw_listing``): what ``fingerprint``
    reads when the reader refused the data at construction. ``reader_error`` says why it refused."""

    def __init__(
        self,
        kind: str,
        split: str,
        root: Path,
        files=None,
        cases=None,
        class_names=None,
        lut=None,
        depth_scale=None,
        unpaired=(),
        reader_error: str | None = None,
        channels=None,
    ):
        self.fingerprint_kind, self.split, self.root = kind, split, Path(root)
        self.files, self.cases = files, cases
        self.class_names = tuple(class_names) if class_names else None
        self.lut, self.depth_scale, self.channels = lut, depth_scale, channels
        self.unpaired, self.reader_error = list(unpaired), reader_error

    def __len__(self) -> int:
        return len(self.files if self.files is not None else self.cases)


def _identity_lut(num_classes: int | None, label_map: dict | None) -> np.ndarray | None:
    if num_classes is None and not label_map:
        return None
    lut = np.full(256, -1, np.int16)
    for v in range(min(num_classes or 0, IGNORE_INDEX)):
        lut[v] = v
    lut[IGNORE_INDEX] = IGNORE_INDEX
    for raw, train in (label_map or {}).items():
        if 0 <= int(raw) < 256:
            lut[int(raw)] = int(train)
    return lut


def _pair_stems(a: dict[str, Path], b: dict[str, Path], what_a: str, what_b: str):
    pairs = [(a[k], b[k]) for k in sorted(set(a) & set(b))]
    lonely = [(a[k], f"{a[k]}: {what_a} without a {what_b}") for k in sorted(set(a) - set(b))]
    lonely += [(b[k], f"{b[k]}: {what_b} without an {what_a}") for k in sorted(set(b) - set(a))]
    return pairs, lonely


def _stems(directory: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    if not directory.is_dir():
        raise FileNotFoundError(f"folder not found: {directory.resolve()}")
    return {p.stem: p for p in sorted(directory.iterdir()) if p.is_file() and p.name.lower().endswith(suffixes)}


def _class_list(root: Path, classes) -> list[str] | None:
    if isinstance(classes, (list, tuple)):
        return [str(c) for c in classes]
    path = root / "classes.txt" if classes is None else Path(classes).expanduser()
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return None


def raw_listing(name: str, split: str, data: dict, reader_error: str | None = None) -> RawFolder | None:
    """List the files of split ``split`` of a folder layout (``name`` = folder, depth_folder or
    nifti_folder; ``data`` = the dataset kwargs of the config) without its reader; None for other
    datasets. Unpaired files become bad samples instead of an error."""
    root = Path(data.get("root") or f"datasets/{name}").expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root not found: {root.resolve()}")
    label_map = data.get("label_map") if isinstance(data.get("label_map"), dict) else None
    if name == "folder":
        names = _class_list(root, data.get("classes"))
        images = _stems(root / "images" / split, IMAGE_SUFFIXES)
        masks = _stems(root / "masks" / split, MASK_SUFFIXES)
        pairs, lonely = _pair_stems(images, masks, "image", "mask")
        return RawFolder(
            "seg",
            split,
            root,
            files=pairs,
            class_names=names,
            lut=_identity_lut(len(names) if names else None, label_map),
            unpaired=lonely,
            reader_error=reader_error,
        )
    if name == "depth_folder":
        images = _stems(root / "images" / split, IMAGE_SUFFIXES)
        depths = _stems(root / "depth" / split, (".png", ".npy"))
        pairs, lonely = _pair_stems(images, depths, "image", "depth map")
        return RawFolder(
            "depth",
            split,
            root,
            files=pairs,
            depth_scale=data.get("depth_scale"),
            unpaired=lonely,
            reader_error=reader_error,
        )
    if name == "nifti_folder":
        meta = {}
        if (root / "dataset.json").is_file():
            try:
                meta = json.loads((root / "dataset.json").read_text())
            except (OSError, ValueError):
                meta = {}
        image_dir, label_dir = root / "images", root / "labels"
        if not image_dir.is_dir() and (root / "imagesTr").is_dir():
            image_dir, label_dir = root / "imagesTr", root / "labelsTr"
        channels: dict[str, dict[int, Path]] = {}
        for p in sorted(image_dir.iterdir()) if image_dir.is_dir() else []:
            m = CHANNEL_FILE.match(p.name)
            if m:
                channels.setdefault(m["case"], {})[int(m["channel"])] = p
        labels = {}
        for p in sorted(label_dir.iterdir()) if label_dir.is_dir() else []:
            m = LABEL_FILE.match(p.name)
            if m:
                labels[m["case"]] = p
        listed = meta.get("channel_names", meta.get("modality")) if isinstance(meta, dict) else None
        n = data.get("channels") or (len(listed) if isinstance(listed, dict) and listed else None)
        n = n or (1 + max((max(ch) for ch in channels.values()), default=0))
        cases = sorted(set(channels) & set(labels))
        split_file = None if data.get("split_file") is None else root / data["split_file"]
        chosen = (
            select_split(
                cases,
                split,
                split_file,
                int(data.get("fold", 0)),
                data.get("val_fraction", 0.2),
                int(data.get("seed", 0)),
                "NiftiFolder",
            )
            if cases
            else []
        )
        lonely = [
            (image_dir / c, f"case {c}: images without a label file in {label_dir}")
            for c in sorted(set(channels) - set(labels))
        ]
        lonely += [
            (labels[c], f"case {c}: label file without images in {image_dir}")
            for c in sorted(set(labels) - set(channels))
        ]
        conv = data.get("labels")
        names = data.get("classes")
        if conv in LABEL_CONVENTIONS:
            lut = _identity_lut(None, LABEL_CONVENTIONS[conv])
            names = names or list(VOLUME_CLASS_NAMES)
        else:
            table = meta.get("labels") if isinstance(meta, dict) else None
            if not names and isinstance(table, dict):
                try:
                    if all(isinstance(v, int) for v in table.values()):  # v2: {name: id}
                        by_id = {int(v): str(k) for k, v in table.items()}
                    else:  # v1: {"id": name}
                        by_id = {int(k): str(v) for k, v in table.items()}
                    names = [by_id[k] for k in sorted(by_id)]
                except (TypeError, ValueError):
                    names = None
            lut = _identity_lut(len(names) if names else None, None)
        suffix = ".nii.gz"
        rows = [
            (c, [channels[c].get(i, image_dir / f"{c}_{i:04d}{suffix}") for i in range(n)], labels[c]) for c in chosen
        ]
        return RawFolder(
            "volume",
            split,
            root,
            cases=rows,
            class_names=names,
            lut=lut,
            unpaired=lonely,
            reader_error=reader_error,
            channels=n,
        )
    return None


__all__ = ["RawFolder", "raw_listing"]
