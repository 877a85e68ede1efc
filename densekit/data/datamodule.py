"""LightningDataModule over any pair of densekit datasets (the only lightning import in ``data``).

Loaders are built for exact resumption and exact distributed evaluation (``densekit.data.samplers``):
the training order and every sample's augmentation are functions of ``(seed, epoch, index)``, the
datamodule records in each checkpoint how far into its epoch training was and skips that part on resume,
and the
validation split is sharded over processes without padding. Lightning must not replace the samplers
(``Trainer(use_distributed_sampler=False)``, set by ``densekit.train``): the processes are read from the
attached trainer (``world_size``, ``global_rank``).
"""

from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
from torch.utils.data import BatchSampler, DataLoader, Dataset

from .samplers import EpochSampler, EvenShardBatchSampler, SeededSamples


class ResumableLoader(DataLoader):
    """The train DataLoader. Its position in the epoch is saved and restored by ``DenseDataModule``
    (``state_dict`` / ``load_state_dict``): Lightning restores a datamodule before it builds the train
    loader, whereas a loader's own state would be restored after the loader was built and already iterated
    (``Trainer.estimated_stepping_batches`` builds it while the optimisers are configured). These two
    methods only tell Lightning that the loader resumes mid-epoch (no "not resumable" warning)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class DenseDataModule(pl.LightningDataModule):
    """Wraps a dataset factory ``make_dataset(split) -> Dataset`` with the loaders Lightning asks for.

    ``seed`` fixes the training order and augmentation (``densekit.data.samplers``).
    """

    def __init__(
        self,
        make_dataset: Callable[[str], Dataset],
        batch_size: int = 8,
        num_workers: int = 0,
        val_batch_size: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.make_dataset = make_dataset
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.seed = int(seed)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._train_sampler: EpochSampler | None = None
        self._resume: dict | None = None  # from a checkpoint, applied to the next train sampler

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self.make_dataset("train")
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = self.make_dataset("val")

    def _processes(self) -> tuple[int, int]:
        """(rank, world size) of the attached trainer; (0, 1) without one."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    # -- resumable position: saved with every checkpoint, restored before the train loader is built --------
    def state_dict(self) -> dict:
        sampler = self._train_sampler
        if sampler is None or self.trainer is None:
            return {}
        batches = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed  # trained in this epoch
        # counted in samples over all processes, so a resume with another process count lands on the same
        # place in the epoch's permutation (exact when the count divides it)
        return {"epoch": sampler.epoch, "samples": batches * self.batch_size * sampler.world_size,
                "seed": sampler.seed, "length": sampler.length}

    def load_state_dict(self, state: dict) -> None:
        self._resume = dict(state) if state else None

    def _apply_resume(self, sampler: EpochSampler) -> None:
        state, self._resume = self._resume, None
        if state is None:
            return
        if (state.get("seed"), state.get("length")) != (sampler.seed, sampler.length):
            raise ValueError(
                f"the checkpoint's train data had seed={state.get('seed')} and {state.get('length')} "
                f"samples; this run has seed={sampler.seed} and {sampler.length}: resuming would not continue "
                f"the same sample order (start a new run, or use init_from=... to take the weights only)"
            )
        epoch, skip = int(state["epoch"]), int(state["samples"]) // sampler.world_size
        if skip >= len(sampler) - len(sampler) % self.batch_size:
            epoch, skip = epoch + 1, 0  # the checkpoint closed its epoch: the next one starts afresh
        sampler.resume(epoch, skip)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._processes()
        if len(self.train_set) < self.batch_size * world:
            # drop_last would otherwise make an empty epoch: training would silently do nothing
            per = "" if world == 1 else f" x {world} processes"
            raise ValueError(
                f"the train split has {len(self.train_set)} samples, "
                f"fewer than batch_size={self.batch_size}{per}"
            )
        self._train_sampler = EpochSampler(len(self.train_set), seed=self.seed, shuffle=True, rank=rank,
                                           world_size=world)
        self._apply_resume(self._train_sampler)
        return ResumableLoader(
            SeededSamples(self.train_set, seed=self.seed),
            batch_sampler=BatchSampler(self._train_sampler, self.batch_size, drop_last=True),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        rank, world = self._processes()
        return DataLoader(
            self.val_set,
            batch_sampler=EvenShardBatchSampler(len(self.val_set), self.val_batch_size, rank, world),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
