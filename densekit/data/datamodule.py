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

import logging
import os
from collections.abc import Callable

import pytorch_lightning as pl
from torch.utils.data import BatchSampler, DataLoader, Dataset

from .samplers import EpochSampler, EvenShardBatchSampler, SeededSamples

log = logging.getLogger(__name__)


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask: a container or ``taskset`` limit counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_num_workers(value: int | str) -> int:
    """``data.num_workers``: ``"auto"`` = one loader process per available CPU minus the one that trains
    (at most 8; what ``scripts/inspect_data.py`` suggests too); an int above the CPU count is
    capped to it (more workers than CPUs only add switching, and torch warns about it), said in the log."""
    cpus = available_cpus()
    if value == "auto":
        return max(0, min(8, cpus - 1))
    try:
        workers = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"data.num_workers={value!r}: expected an int >= 0 or 'auto'") from None
    if workers < 0:
        raise ValueError(f"data.num_workers={value!r}: expected an int >= 0 or 'auto'")
    if workers > cpus:
        log.info("data.num_workers=%d but this machine has %d CPUs: %d loader workers are used", workers, cpus, cpus)
        return cpus
    return workers


def resolve_threads(value: int | str, num_workers: int, processes: int = 1) -> int:
    """Top-level ``threads``: torch intra-op threads of each training process. ``"auto"`` = the available
    CPUs left after ``num_workers`` loader processes per training process (each worker runs single-threaded),
    shared by the ``processes`` training processes of this machine (CPU DDP), at least 1: measured on 2 cores
    (``scripts/benchmark.py train``), 2 training threads beside a loader worker ran slower than 1, because
    OpenMP's threads wait for the one that shares its core. An int is used as given."""
    if value == "auto":
        processes = max(1, int(processes))
        return max(1, (available_cpus() - processes * int(num_workers)) // processes)
    try:
        threads = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"threads={value!r}: expected an int >= 1 or 'auto'") from None
    if threads < 1:
        raise ValueError(f"threads={value!r}: expected an int >= 1 or 'auto'")
    return threads


class Repeated(Dataset):
    """``dataset`` seen ``length`` times per epoch: index ``i`` is sample ``i % len(dataset)``. Each repeat
    has its own index, so ``SeededSamples`` gives it its own augmentation."""

    def __init__(self, dataset: Dataset, length: int):
        self.dataset, self.length = dataset, int(length)
        self.augment = getattr(dataset, "augment", None)  # SeededSamples seeds the wrapped dataset's augment

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.dataset[index % len(self.dataset)]


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
        num_workers: int | str = 0,
        val_batch_size: int | None = None,
        seed: int = 0,
        min_train_batches: int = 0,
    ):
        super().__init__()
        self.make_dataset = make_dataset
        self.notes: list[str] = []  # what was adapted to the data (batch shrunk, epoch repeated, workers capped)
        self.batch_size = int(batch_size)
        self.num_workers = resolve_num_workers(num_workers)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.seed = int(seed)
        # an epoch holds at least this many batches: a split smaller than that is repeated (every repeat
        # with its own augmentation), so that a small dataset still validates every
        # trainer.val_check_interval steps
        self.min_train_batches = int(min_train_batches or 0)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._train_sampler: EpochSampler | None = None
        self._resume: dict | None = None  # from a checkpoint, applied to the next train sampler

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            log.warning(text)

    def fit_to_split(self, world_size: int = 1) -> int:
        """Adapt the batch size and epoch length to the train split; returns the epoch length in samples
        (over all processes). Called by ``train_dataloader``; the composition root may call it earlier to
        know the epoch (the result is the same)."""
        n = len(self.train_set)
        if n < world_size:
            raise ValueError(f"the train split has {n} samples, fewer than the {world_size} training processes")
        if n < self.batch_size * world_size:
            # a batch larger than the split would drop every sample (drop_last): shrink instead of failing
            shrunk = max(1, n // world_size)
            self._note(
                f"the train split has {n} samples, fewer than data.batch_size={self.batch_size}"
                f"{'' if world_size == 1 else f' x {world_size} processes'}: batch size {shrunk} is used"
            )
            self.batch_size = shrunk
        length = n
        per_epoch = n // (self.batch_size * world_size)
        if self.min_train_batches and per_epoch < self.min_train_batches:
            length = self.min_train_batches * self.batch_size * world_size
            self._note(
                f"the train split has {n} samples = {per_epoch} batch(es) of {self.batch_size}, fewer than "
                f"trainer.val_check_interval={self.min_train_batches}: an epoch repeats the split to "
                f"{self.min_train_batches} batches ({length} samples, {length / n:.1f} passes, each with "
                f"its own augmentation); set data.train_length to choose the epoch yourself"
            )
        return length

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
        return {
            "epoch": sampler.epoch,
            "samples": batches * self.batch_size * sampler.world_size,
            "seed": sampler.seed,
            "length": sampler.length,
        }

    def load_state_dict(self, state: dict) -> None:
        self._resume = dict(state) if state else None

    def _apply_resume(self, sampler: EpochSampler) -> None:
        state, self._resume = self._resume, None
        if state is None:
            return
        if (state.get("seed"), state.get("length")) != (sampler.seed, sampler.length):
            raise ValueError(
                f"the checkpoint's train data had seed={state.get('seed')} and {state.get('length')} "
                f"samples; this run has seed={sampler.seed} and {sampler.length}: resuming would not "
                f"continue the same sample order (start a new run, or use init_from=... to take the weights "
                f"only)"
            )
        epoch, skip = int(state["epoch"]), int(state["samples"]) // sampler.world_size
        if skip >= len(sampler) - len(sampler) % self.batch_size:
            epoch, skip = epoch + 1, 0  # the checkpoint closed its epoch: the next one starts afresh
        sampler.resume(epoch, skip)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._processes()
        length = self.fit_to_split(world)
        self._train_sampler = EpochSampler(length, seed=self.seed, shuffle=True, rank=rank, world_size=world)
        self._apply_resume(self._train_sampler)
        dataset = self.train_set if length == len(self.train_set) else Repeated(self.train_set, length)
        return ResumableLoader(
            SeededSamples(dataset, seed=self.seed),
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
