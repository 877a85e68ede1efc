"""Folders in the nnU-Net raw layout as a volume reader: ``NiftiFolder``, which takes channels, classes and
the label convention from ``dataset.json`` or the files (sampling, splits, epochs:
``densekit.data.readers.volume``).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np

from ...io.nifti import NIFTI_SUFFIXES as NIFTI_ENDINGS
from ...io.nifti import read_nifti
from ...schema import IGNORE_INDEX
from ..registry import DATASETS
from .base import missing
from .volume import LABEL_CONVENTIONS, VOLUME_CLASS_NAMES, VolumeFiles, plural

CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.nii(\.gz)?$", re.IGNORECASE)
LABEL_FILE = re.compile(r"^(?P<case>.+?)\.nii(\.gz)?$", re.IGNORECASE)


def _norm_name(name) -> str:
    return re.sub(r"[^a-z]", "", str(name).lower())


def brats_convention(by_id: dict[int, str]) -> str | None:
    """The BraTS label convention a dataset.json ``labels`` table ({id: name}) spells, else None.

    BraTS's table is 0 background, 1 necrotic (non-enhancing) core, 2 edema, enhancing 3 (2023:
    ``brats2023``) or 4 (2018-2021: ``brats2021``). Names are matched loosely (NCR / NETC / necrotic /
    non-enhancing; ED / SNFH / edema; ET / enhancing). The Medical Segmentation Decathlon's Task01 order
    (1 edema, 2 non-enhancing, 3 enhancing) is a different convention and is not matched."""
    conv = {(0, 1, 2, 3): "brats2023", (0, 1, 2, 4): "brats2021"}.get(tuple(sorted(by_id)))
    if conv is None:
        return None
    bg, core, edema, enh = (_norm_name(by_id[k]) for k in sorted(by_id))
    is_bg = "background" in bg or bg in ("bg", "bkg", "none")
    is_core = any(k in core for k in ("necro", "ncr", "netc", "nonenhanc")) or core == "net"
    is_edema = any(k in edema for k in ("edema", "oedema", "snfh")) or edema == "ed"
    is_enh = ("enhanc" in enh and "nonenhanc" not in enh) or enh == "et"
    return conv if is_bg and is_core and is_edema and is_enh else None


@functools.lru_cache(maxsize=4096)
def _label_values(path: str, size: int, mtime_ns: int) -> tuple[int, ...]:
    """The distinct values of a label file (size and mtime key the cache: a rewritten file is re-read)."""
    array, _ = read_nifti(path)
    if not np.issubdtype(array.dtype, np.integer):
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            bad = np.unique(array[rounded != array])[:5].tolist()
            raise ValueError(f"{path}: label map holds non-integer values {bad}; expected integer class ids")
        array = rounded
    return tuple(int(v) for v in np.unique(array))


@DATASETS.register("nifti_folder", tasks=("volume",), dims=3)
class NiftiFolder(VolumeFiles):
    """A folder in the nnU-Net raw layout: ``images/<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, ... (one
    file per channel, 4-digit channel index) and ``labels/<case>.nii.gz`` (``imagesTr``/``labelsTr``, the
    nnU-Net names, are used when ``images``/``labels`` are absent). ``.nii`` works as well as ``.nii.gz``.

    Everything defaults to what the data says (each inference is one of ``notes``):

    Channels (``in_channels``): ``channels`` if set (fewer than the files hold: the first ones), else the
    length of ``channel_names`` (nnU-Net v2) or ``modality`` (v1) in ``root/dataset.json`` (a channel file
    beyond it is an error naming both), else 1 + the highest channel index found. A case lacking a
    channel file is a bad case naming the file.

    Classes (``class_names``) and the label convention (``labels``):
      ``auto``     ``classes`` if given, else ``dataset.json`` ``labels`` ({name: id} in v2, {"id": name} in
                   v1; ids contiguous from 0); a table that spells BraTS's (``brats_convention``) also sets
                   ``labels`` to that convention, so the BraTS region metrics apply and raw 2021 value 4 is
                   train id 3. Without a table: ``expect_num_classes`` generic names, else the label files
                   are read once and the classes are 0..max value found (names ``class_<id>``).
      ``null``     as ``auto`` without the BraTS recognition: the files hold train ids 0..K-1.
      ``brats2021`` / ``brats2023``  that convention and the four BraTS classes.
    ``expect_num_classes`` (``data.num_classes``) is checked against the classes found: a disagreement
    is one line naming both. Image intensities are z-scored per channel over the voxels nonzero in any
    channel, whatever the file's dtype and range (16-bit, float, scaled integers), as in ``VolumeFiles``.
    """

    default_root = "datasets/nifti_folder"

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        labels: str | None = "auto",
        classes: list[str] | None = None,
        channels: int | None = None,
        expect_num_classes: int | None = None,
        **kwargs,
    ):
        root_path = Path(root if root is not None else self.default_root).expanduser()
        if not root_path.is_dir():
            raise missing(root_path, "NiftiFolder root")
        if labels != "auto" and labels is not None and labels not in LABEL_CONVENTIONS:
            raise ValueError(f"data.labels must be auto, null or one of {sorted(LABEL_CONVENTIONS)}, got {labels!r}")
        if expect_num_classes is not None and (
            isinstance(expect_num_classes, bool) or not isinstance(expect_num_classes, int) or expect_num_classes < 2
        ):
            raise ValueError(
                f"data.num_classes must be an int >= 2 (background + one) or null, got {expect_num_classes!r}"
            )
        self.notes = []
        self.root = root_path
        json_path = root_path / "dataset.json"
        meta = self._dataset_json(root_path)
        self._listing = self._list_files(root_path)
        found = len(self._listing[2])
        if not found:
            raise ValueError(f"NiftiFolder: no cases found under {self._listing[0].resolve()}; see datasets/README.md")
        listed = meta.get("numTraining")
        if isinstance(listed, int) and not isinstance(listed, bool) and listed != found:
            self.notes.append(
                f"NiftiFolder: {json_path} numTraining is {listed} but "
                f"{plural(found, 'case')} were found in {self._listing[0]}; using those found"
            )
        self.channels = self._channel_count(meta, json_path, channels)
        names, labels = self._classes(meta, json_path, labels, classes, expect_num_classes)
        self.class_names = tuple(names)
        super().__init__(split, root_path, labels=labels, **kwargs)

    # -- facts from dataset.json or the files ------------------------------------------------------------
    def _channel_count(self, meta: dict, json_path: Path, channels) -> int:
        image_dir, _, found, _ = self._listing
        top = max((max(ch), case) for case, ch in found.items()) if found else (0, None)
        have = top[0] + 1  # channels the files hold (the highest index + 1)
        listed = meta.get("channel_names", meta.get("modality"))
        from_json = len(listed) if isinstance(listed, dict) and listed else None
        key = "channel_names" if "channel_names" in meta else "modality"
        if channels is not None:
            if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
                raise ValueError(f"data.channels must be a positive int or null, got {channels!r}")
            if have > channels:
                self.notes.append(
                    f"NiftiFolder: data.channels={channels}: using channels 0..{channels - 1} "
                    f"of the {have} the image files hold"
                )
            return channels
        if from_json is not None:
            if have > from_json:
                extra = image_dir / f"{top[1]}_{top[0]:04d}.nii.gz"
                raise ValueError(
                    f"{json_path}: {key} lists {plural(from_json, 'channel')} but {extra} "
                    f"exists (channel index {top[0]}); list every channel in {key} or set "
                    f"data.channels"
                )
            self.notes.append(
                f"NiftiFolder: {plural(from_json, 'channel')} from {json_path} {key} {list(listed.values())}"
            )
            return from_json
        where = f"no dataset.json in {self.root}" if not json_path.is_file() else f"{json_path} has no {key}"
        self.notes.append(
            f"NiftiFolder: {where}: {plural(have, 'channel')} from the image files (highest _{top[0]:04d} index + 1)"
        )
        return have

    def _classes(self, meta: dict, json_path: Path, labels, classes, expect: int | None):
        """(class names, label convention or None) per the class docstring."""
        table = meta.get("labels")
        json_names, json_conv = None, None
        if isinstance(table, dict) and table:
            by_id = self._table(table, json_path)
            json_conv = brats_convention(by_id) if labels == "auto" else None
            ids = sorted(by_id)
            if json_conv is None and labels not in LABEL_CONVENTIONS and ids != list(range(len(ids))):
                raise ValueError(f"{json_path}: label ids must be contiguous from 0, got {ids}")
            json_names = [by_id[k] for k in ids]
        elif table is not None and not isinstance(table, dict):
            raise ValueError(f"{json_path}: 'labels' must be a table of class names and ids, got {table!r}")
        table_desc = f"{json_path} 'labels'"
        if labels in LABEL_CONVENTIONS:
            names = [str(c) for c in classes] if classes is not None else list(VOLUME_CLASS_NAMES)
            if len(names) != 4:
                raise ValueError(
                    f"NiftiFolder: labels={labels!r} has 4 classes but {len(names)} class names were given"
                )
            if json_names is not None and len(json_names) != 4:
                raise ValueError(
                    f"data.labels={labels} (the 4 BraTS classes) but {table_desc} lists "
                    f"{len(json_names)} classes {json_names}; set data.labels=auto to use the table"
                )
            conv, source = labels, f"data.labels={labels}"
        elif classes is not None:
            names, conv, source = [str(c) for c in classes], json_conv, "data.class_names"
            if json_names is not None and len(names) != len(json_names):
                raise ValueError(
                    f"data.class_names has {len(names)} names {names} but {table_desc} lists "
                    f"{len(json_names)} classes {json_names}; set data.class_names=null to use "
                    f"the table"
                )
        elif json_names is not None:
            names, conv, source = json_names, json_conv, table_desc
            brats = f" (BraTS's table: {conv} convention, region metrics WT/TC/ET)" if conv else ""
            self.notes.append(f"NiftiFolder: {plural(len(names), 'class')} from {table_desc}: {names}{brats}")
        elif expect is not None:
            names = ["background"] + [f"class_{k}" for k in range(1, expect)]
            conv, source = None, "data.num_classes"
            self.notes.append(
                f"NiftiFolder: no dataset.json 'labels' table: {expect} classes from "
                f"data.num_classes, named {names} (set data.class_names to name them)"
            )
        else:
            names, conv, source = self._classes_from_files(json_path), None, "the label files"
        if expect is not None and expect != len(names):
            raise ValueError(
                f"data.num_classes={expect} but the data has {len(names)} classes {names} (from "
                f"{source}); set data.num_classes={len(names)} or null (null takes it from the data)"
            )
        if len(names) < 2:
            raise ValueError(f"NiftiFolder: at least 2 classes (background + one) expected, got {names}")
        return names, conv

    def _classes_from_files(self, json_path: Path) -> list[str]:
        """Classes 0..max label value found in the label files (read once per process; cached)."""
        label_files = sorted(self._listing[3].values())
        values: set[int] = set()
        for path in label_files:
            stat = path.stat()
            found = _label_values(str(path), stat.st_size, stat.st_mtime_ns)
            if IGNORE_INDEX in found:
                raise ValueError(
                    f"{path}: label value {IGNORE_INDEX} (the ignore index, as in a 0/255 mask) and "
                    f"no {json_path.name} 'labels' table, so the classes are read from the values "
                    f"{list(found)}: store the foreground as 1..K-1"
                )
            bad = [v for v in found if v < 0 or v > IGNORE_INDEX]
            if bad:
                raise ValueError(
                    f"{path}: label values {bad[:5]} outside 0..{IGNORE_INDEX - 1}; expected integer class ids 0..K-1"
                )
            values.update(found)
        k = max(values) + 1
        if k < 2:
            raise ValueError(
                f"NiftiFolder: the {plural(len(label_files), 'label file')} in {self._listing[1]} "
                f"hold only background (0) and there is no dataset.json 'labels' table: "
                f"nothing to segment"
            )
        names = ["background"] + [f"class_{c}" for c in range(1, k)]
        where = f"no dataset.json in {self.root}" if not json_path.is_file() else f"{json_path} has no 'labels'"
        absent = sorted(set(range(k)) - values)
        self.notes.append(
            f"NiftiFolder: {where}: {plural(k, 'class')} from the label values "
            f"{{{', '.join(map(str, sorted(values)))}}} found in {plural(len(label_files), 'label file')} "
            f"(named {names}; a dataset.json 'labels' table or data.class_names names them)"
            + (f"; class ids {absent} never appear" if absent else "")
        )
        return names

    @staticmethod
    def _dataset_json(root: Path) -> dict:
        path = root / "dataset.json"
        if not path.is_file():
            return {}
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable dataset.json ({type(exc).__name__}: {exc})") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
        ending = meta.get("file_ending")
        if ending is not None and str(ending).lower() not in NIFTI_ENDINGS:
            raise ValueError(
                f"{path}: file_ending {ending!r}: this reader reads NIfTI ({', '.join(NIFTI_ENDINGS)}) "
                f"only; convert the images (e.g. SimpleITK) or use nnU-Net's own reader"
            )
        return meta

    @staticmethod
    def _table(table: dict, json_path: Path) -> dict[int, str]:
        """dataset.json ``labels`` -> {id: name}: v2 {name: id}, v1 {"id": name}."""
        try:
            if all(isinstance(v, int) and not isinstance(v, bool) for v in table.values()):  # v2
                by_id = {int(v): str(k) for k, v in table.items()}
            else:  # v1: {"0": "background", "1": "tumor"}
                by_id = {int(k): str(v) for k, v in table.items()}
        except (TypeError, ValueError):
            raise ValueError(
                f"{json_path}: 'labels' must map names to int ids (v2) or ids to names (v1) "
                f"(region-based label lists are not supported), got {table}"
            ) from None
        if len(by_id) != len(table):
            raise ValueError(f"{json_path}: 'labels' gives one id to several classes: {table}")
        return by_id

    @staticmethod
    def _list_files(root: Path) -> tuple[Path, Path, dict[str, dict[int, Path]], dict[str, Path]]:
        """(image dir, label dir, {case: {channel: path}}, {case: label path}); unpaired cases are an
        error."""
        image_dir, label_dir = root / "images", root / "labels"
        if not image_dir.is_dir() and (root / "imagesTr").is_dir():
            image_dir, label_dir = root / "imagesTr", root / "labelsTr"
        if not image_dir.is_dir():
            raise missing(image_dir, "NiftiFolder images folder")
        if not label_dir.is_dir():
            raise missing(label_dir, "NiftiFolder labels folder")
        channels: dict[str, dict[int, Path]] = {}
        for p in sorted(image_dir.iterdir()):
            if p.name.startswith(".") or not p.is_file():
                continue
            m = CHANNEL_FILE.match(p.name)
            if m is None:
                raise ValueError(
                    f"{p}: expected image files named <case>_<4-digit channel>.nii.gz (e.g. case1_0000.nii.gz)"
                )
            channels.setdefault(m["case"], {})[int(m["channel"])] = p
        labels = {}
        for p in sorted(label_dir.iterdir()):
            if p.name.startswith(".") or not p.is_file():
                continue
            m = LABEL_FILE.match(p.name)
            if m is None:
                raise ValueError(f"{p}: expected label files named <case>.nii.gz")
            labels[m["case"]] = p
        lonely = sorted(set(channels) ^ set(labels))
        if lonely:
            lines = [
                f"case {c}: image files without {label_dir / (c + '.nii.gz')}"
                if c in channels
                else f"case {c}: label file {labels[c]} without images in {image_dir}"
                for c in lonely[:5]
            ]
            raise ValueError(f"{len(lonely)} unpaired case(s): " + "; ".join(lines))
        return image_dir, label_dir, channels, labels

    def _cases(self) -> list[tuple[str, list[Path], Path]]:
        image_dir, _, channels, labels = self._listing
        n, suffix = self.channels, ".nii.gz"
        return [
            (case, [ch.get(c, image_dir / f"{case}_{c:04d}{suffix}") for c in range(n)], labels[case])
            for case, ch in sorted(channels.items())
        ]


__all__ = ["CHANNEL_FILE", "LABEL_FILE", "NiftiFolder", "brats_convention"]
