"""LightningDataModule over any pair of densekit datasets (the only lightning import in ``data``)."""

from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset


class DenseDataModule(pl.LightningDataModule):
    """Wraps a dataset factory ``make_dataset(split) -> Dataset`` with the loaders Lightning asks for."""

    def __init__(
        self,
        make_dataset: Callable[[str], Dataset],
        batch_size: int = 8,
        num_workers: int = 0,
        val_batch_size: int | None = None,
    ):
        super().__init__()
        self.make_dataset = make_dataset
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self.make_dataset("train")
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = self.make_dataset("val")

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle,
        )

    def train_dataloader(self) -> DataLoader:
        if len(self.train_set) < self.batch_size:
            # drop_last would otherwise make an empty epoch: training would silently do nothing
            raise ValueError(
                f"the train split has {len(self.train_set)} samples, fewer than batch_size={self.batch_size}"
            )
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)
