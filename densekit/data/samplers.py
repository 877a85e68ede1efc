"""Samplers that make training resumable and distributed evaluation exact.

Training order and augmentation are pure functions of ``(seed, epoch, index)``:

* :class:`EpochSampler` draws the epoch's permutation from a generator seeded with ``(seed, epoch)`` only
  (never from the global torch stream), shards it over the processes and can start an epoch part-way
  through (``resume``), so a run restarted from a mid-epoch checkpoint sees exactly the batches an
  uninterrupted run would have seen next.
* :class:`SeededSamples` wraps a dataset: it receives ``(epoch, index)`` keys from the sampler and runs
  ``dataset[index]`` with every random generator the sample may touch (torch, numpy, ``random`` and the
  dataset's ``augment`` object when it has ``set_random_seed``) seeded from ``(seed, epoch, index)``. The
  same sample therefore gets the same augmentation whatever the number of DataLoader workers or processes,
  and whatever came before it -- which is what makes skipping the finished part of an epoch exact.

Evaluation is sharded without padding: :class:`EvenShardBatchSampler` gives each process a contiguous,
disjoint slice of the split (sizes differ by at most one) and cuts every slice into the same number of
batches, so the processes stay in step and no sample is counted twice. torch's ``DistributedSampler``
(which Lightning inserts by default) pads the last shard with repeated samples, which would bias
sum-reduced metrics.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for sample ``index`` of ``epoch`` (numpy's SeedSequence mixes the three ints)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1)[0])


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys for this process's share of one epoch.

    The order is ``randperm(length)`` from a generator seeded with ``(seed, epoch)`` (identity when
    ``shuffle=False``); the tail that does not divide evenly over ``world_size`` processes is dropped, so
    every process gets ``length // world_size`` keys (DDP needs the same number of steps on every process;
    a different tail is dropped each epoch). Process ``rank`` takes every ``world_size``-th key.

    ``set_epoch(e)`` is called by Lightning at each epoch start. ``resume(epoch, skip)`` makes the next
    iteration over ``epoch`` start after its first ``skip`` keys (the batches a checkpoint had finished).
    """

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        if length < world_size:
            raise ValueError(f"{length} samples cannot be shared by {world_size} processes")
        self.length, self.seed, self.shuffle = int(length), int(seed), bool(shuffle)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume(self, epoch: int, skip: int) -> None:
        if skip < 0 or skip > len(self):
            raise ValueError(f"cannot skip {skip} of the {len(self)} samples of epoch {epoch}")
        self.epoch = int(epoch)
        self._resume = (int(epoch), int(skip))

    def __len__(self) -> int:
        return self.length // self.world_size

    def order(self, epoch: int) -> torch.Tensor:
        """The whole epoch's order (all processes), before sharding: (length,) int64."""
        if not self.shuffle:
            return torch.arange(self.length)
        seed = int(np.random.SeedSequence([self.seed, int(epoch)]).generate_state(1)[0])
        gen = torch.Generator().manual_seed(seed)
        return torch.randperm(self.length, generator=gen)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        used = len(self) * self.world_size
        mine = self.order(epoch)[:used][self.rank :: self.world_size]  # (length // world_size,)
        skip = 0
        if self._resume is not None and self._resume[0] == epoch:
            skip = self._resume[1]
            self._resume = None  # only the resumed epoch starts part-way
        for index in mine[skip:].tolist():
            yield epoch, index


class SeededSamples(Dataset):
    """``dataset`` indexed by ``(epoch, index)``: the sample is drawn with all random generators seeded from
    ``sample_seed(seed, epoch, index)``; the caller's generator states are restored afterwards, so loading
    in the main process (``num_workers=0``) leaves the training stream (dropout, ...) untouched."""

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        try:
            epoch, index = key
        except (TypeError, ValueError):
            raise TypeError(f"SeededSamples takes (epoch, index) keys (EpochSampler), got {key!r}") from None
        seed = sample_seed(self.seed, epoch, index)
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                np.random.seed(seed)
                random.seed(seed)
                augment = getattr(self.dataset, "augment", None)
                if hasattr(augment, "set_random_seed"):  # albumentations Compose, FlowAugment
                    augment.set_random_seed(seed)
                return self.dataset[index]
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


class EvenShardBatchSampler(Sampler):
    """Evaluation batches of process ``rank``: a contiguous slice of ``range(length)`` (slice sizes differ by
    at most one, nothing repeated or dropped), cut into ``ceil(largest slice / batch_size)`` batches of
    near-equal size, so every process runs the same number of batches when its slice allows it.

    With one process this is plain in-order batching (``batch_size`` per batch, a smaller last one).
    """

    def __init__(self, length: int, batch_size: int, rank: int = 0, world_size: int = 1):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if length < world_size:
            raise ValueError(
                f"the evaluation split has {length} samples, fewer than the {world_size} processes: "
                f"some process would have nothing to evaluate"
            )
        self.length, self.batch_size = int(length), int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        base, extra = divmod(self.length, world_size)
        self.start = rank * base + min(rank, extra)
        self.stop = self.start + base + (1 if rank < extra else 0)
        largest = base + (1 if extra else 0)
        self.num_batches = min(math.ceil(largest / self.batch_size), self.stop - self.start)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        if self.world_size == 1:
            for lo in range(self.start, self.stop, self.batch_size):
                yield list(range(lo, min(lo + self.batch_size, self.stop)))
            return
        for part in np.array_split(np.arange(self.start, self.stop), self.num_batches):
            yield part.tolist()
