"""What ``input=`` names, as a list of items to predict on: a file, a folder (its files, not its sub-folders),
a glob pattern, or a video. Files are sorted by name with numbers in numeric order (frame_2 before frame_10),
so consecutive frames of a folder pair up as they were recorded.

Every file that is seen is accounted for: an item to predict on, or a ``Skipped`` entry saying why it was
left out (not an image, a video given to an image task, ...). Nothing is dropped silently.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
VOLUME_SUFFIXES = (".nii.gz", ".nii")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")  # nnU-Net raw: <case>_0000.nii.gz


@dataclass
class Skipped:
    path: Path
    why: str


@dataclass
class Inputs:
    """``items``: paths (images, videos) or, for volumes, (case name, [channel files]); ``skipped``: the rest."""

    kind: str  # "image" | "video" | "volume"
    items: list = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    root: Path | None = None  # the folder given (outputs may not go inside it)


def file_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    if name.endswith(VIDEO_SUFFIXES):
        return "video"
    if name.endswith(VOLUME_SUFFIXES):
        return "volume"
    return None


def stem(path: Path) -> str:
    """The file name without its suffix (both of ``.nii.gz``)."""
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _files(spec: str) -> tuple[list[Path], Path | None]:
    path = Path(spec).expanduser()
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
        if not files:
            raise FileNotFoundError(f"input={spec}: the folder holds no files")
        return sorted(files, key=natural_key), path
    if path.is_file():
        return [path], None
    if glob.has_magic(spec):
        files = [Path(p) for p in glob.glob(str(path)) if Path(p).is_file()]
        if not files:
            raise FileNotFoundError(f"input={spec}: the pattern matches no file")
        return sorted(files, key=natural_key), None
    raise FileNotFoundError(f"input={spec}: no such file, folder or glob match")


def collect(spec: str, task: str, wants: str, channels: int | None = None) -> Inputs:
    """The items of ``spec`` for a task that predicts on ``wants`` ("image", "pair" or "volume").

    image tasks take images; pair tasks (flow) take the consecutive images of a folder/glob, or one video;
    volume tasks take NIfTI files, grouped into nnU-Net channel sets (``<case>_0000.nii.gz`` ...) when the
    model takes ``channels`` > 1. A video given to an image or volume task is a ``ConfigError`` when it is the
    whole input, a skipped entry inside a folder."""
    files, root = _files(spec)
    want_kind = "volume" if wants == "volume" else "image"
    if len(files) == 1 and file_kind(files[0]) == "video":
        if wants != "pair":
            raise ConfigError(
                f"input={spec} is a video, but a task={task!r} checkpoint predicts on "
                f"{'volumes' if wants == 'volume' else 'single images'}; give images (e.g. frames extracted "
                "with ffmpeg) or a flow checkpoint"
            )
        return Inputs("video", [files[0]], root=root)
    out = Inputs(want_kind, root=root)
    for path in files:
        kind = file_kind(path)
        if kind == want_kind:
            out.items.append(path)
        elif kind == "video":
            why = "a video inside a folder (give it alone: input=<video>)" if wants == "pair" else "a video"
            out.skipped.append(Skipped(path, f"{why}; not an input of a task={task!r} checkpoint"))
        elif kind is not None:
            out.skipped.append(
                Skipped(
                    path,
                    f"{'a NIfTI volume' if kind == 'volume' else 'an image'}, "
                    f"not an input of a task={task!r} checkpoint",
                )
            )
        else:
            out.skipped.append(
                Skipped(
                    path,
                    f"not {'a NIfTI volume' if want_kind == 'volume' else 'an image'} "
                    f"(suffix {path.suffix or 'none'!s})",
                )
            )
    if want_kind == "volume":
        out.items = _cases(out.items, channels or 1, out.skipped)
    return out


def _cases(paths: list[Path], channels: int, skipped: list[Skipped]) -> list[tuple[str, list[Path]]]:
    """(case, channel files) in case order. With one channel, a file is a case (``<case>_0000`` names
    the case ``<case>``); with more, files group by ``<case>_<4-digit channel>``, and a case missing a
    channel is skipped, naming the channel."""
    groups: dict[str, dict[int, Path]] = {}
    for path in paths:
        m = _CHANNEL.match(stem(path))
        if channels == 1:
            case = m["case"] if m and m["channel"] == "0000" else stem(path)
            if m and m["channel"] != "0000":
                skipped.append(Skipped(path, f"channel {int(m['channel'])} of case {m['case']!r}; the model takes 1"))
                continue
            groups.setdefault(case, {})[0] = path
        elif m is None:
            skipped.append(
                Skipped(
                    path,
                    f"not named <case>_<4-digit channel>.nii.gz; the model takes {channels} "
                    "channels, one file each (e.g. case1_0000.nii.gz ... case1_0001.nii.gz)",
                )
            )
        else:
            groups.setdefault(m["case"], {})[int(m["channel"])] = path
    cases = []
    for case, by_channel in groups.items():
        missing = [c for c in range(channels) if c not in by_channel]
        extra = sorted(c for c in by_channel if c >= channels)
        if missing:
            for p in by_channel.values():
                skipped.append(Skipped(p, f"case {case!r} lacks channel file(s) {missing} (_{missing[0]:04d})"))
            continue
        for c in extra:
            skipped.append(Skipped(by_channel[c], f"channel {c} of case {case!r}; the model takes {channels}"))
        cases.append((case, [by_channel[c] for c in range(channels)]))
    return cases
