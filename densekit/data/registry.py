"""The dataset registry: every dataset registers where it is defined, with the facts train and evaluate ask.

    @DATASETS.register("cityscapes", tasks=("seg",), dims=2)
    class CityscapesSeg(SegDataset): ...

Facts: ``tasks`` (the tasks the dataset provides targets for) and ``dims`` (2: images, 3: volumes).
``DATASETS.fact(name, "tasks")`` answers which tasks a ``data.name`` serves.
"""

from __future__ import annotations

from ..registry import Registry

DATASETS = Registry("dataset")


def build_dataset(name: str, split: str, **kwargs):
    """Dataset ``name`` for ``split``; kwargs are the dataset's own constructor arguments."""
    return DATASETS.get_or_fail(name)(split=split, **kwargs)


__all__ = ["DATASETS", "build_dataset"]
