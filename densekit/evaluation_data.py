"""What evaluation scores on and against: the evaluation split of a plain data config (as training builds
it, never augmented; volumes whole) and the classical baselines, which are models (zero motion, OpenCV DIS,
the training mean depth) scored by the same ``trainer.validate`` as a checkpoint (``densekit.evaluation``)."""

from __future__ import annotations

import torch

from .builder import split_data_config
from .errors import DataError
from .models.baselines import ConstantDepth, DISFlow, ZeroFlow

__all__ = ["BASELINES", "eval_dataset", "train_mean_depth"]


class _First(torch.utils.data.Dataset):
    """The first ``n`` samples of ``dataset`` (``limit=N``); its other attributes (labels, class_names) show."""

    def __init__(self, dataset, n: int):
        self.dataset, self.n = dataset, min(int(n), len(dataset))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if index >= self.n:
            raise IndexError(index)
        return self.dataset[index]

    def __getattr__(self, name: str):
        return getattr(self.__dict__["dataset"], name)


def eval_dataset(data: dict, split: str, targets: tuple[str, ...], dims: int, limit: int | None = None):
    """``split`` of the dataset a plain data config describes, as training builds it but never augmented;
    volumes whole (the sliding window covers them); the first ``limit`` samples."""
    from .data import build_dataset

    name, kwargs, _, lengths = split_data_config(data)
    kwargs.pop("augment", None)
    if dims == 3:
        kwargs["val_patch"] = None
    if lengths.get(split):
        kwargs["length"] = lengths[split]
    dataset = build_dataset(name, split, targets=tuple(targets), **kwargs)
    return _First(dataset, limit) if limit else dataset


# -- baselines: models scored by the same validation ------------------------------------------------------
def train_mean_depth(data: dict, targets, limit: int) -> float:
    """Mean valid depth over the first ``limit`` train samples."""
    dataset = eval_dataset(data, "train", targets, 2, limit)
    total, count = 0.0, 0
    for i in range(len(dataset)):
        s = dataset[i]
        keep = s["valid"][None] & torch.isfinite(s["depth"]) & (s["depth"] > 0)
        total += float(s["depth"][keep].double().sum())
        count += int(keep.sum())
    if not count:
        raise DataError("baseline=train_mean: no valid depth in the train split")
    return total / count


def _train_mean(data, targets, opts):
    depth = train_mean_depth(data, targets, int(opts.get("limit") or 256))
    return ConstantDepth(depth), f"constant {depth:.3f} m (mean valid depth of the train split)", {"mean_depth": depth}


# baseline=<name> per task: (data config, targets, options) -> (model, description, extra results)
BASELINES = {
    "depth": {"train_mean": _train_mean},
    "flow": {
        "zero": lambda *_: (ZeroFlow(), "zero motion", {}),
        "dis": lambda *_: (DISFlow(), "OpenCV DIS optical flow (medium preset)", {}),
    },
}
