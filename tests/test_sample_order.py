"""Exact sample order and seeding: what a resumed run relies on to see the samples an uninterrupted run sees
(the resume itself: test_resume.py)."""

import numpy as np
import pytest
import torch

from densekit.data.samplers import EpochSampler, EvenShardBatchSampler, SeededSamples


def test_epoch_sampler_order_depends_on_seed_and_epoch_only_and_resumes():
    s = EpochSampler(10, seed=3)
    s.set_epoch(1)
    full = list(s)
    assert sorted(i for _, i in full) == list(range(10)) and {e for e, _ in full} == {1}
    assert [i for _, i in full] == torch.randperm(
        10, generator=torch.Generator().manual_seed(int(np.random.SeedSequence([3, 1]).generate_state(1)[0]))
    ).tolist()
    torch.manual_seed(123)  # the global generator does not matter
    assert list(EpochSampler(10, seed=3).__class__(10, seed=3).order(1)) == [i for _, i in full]
    s.set_epoch(0)
    assert [i for _, i in s] != [i for _, i in full]
    s.resume(1, 4)
    assert list(s) == full[4:]  # the resumed epoch starts after its first 4 samples ...
    s.set_epoch(1)
    assert list(s) == full  # ... only once
    # two processes: disjoint equal shares of the same permutation, the odd tail sample dropped
    shards = [list(EpochSampler(11, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    order = EpochSampler(11, seed=3).order(0).tolist()
    assert [i for _, i in shards[0]] == order[0:10:2] and [i for _, i in shards[1]] == order[1:10:2]


def test_even_shard_batches_cover_each_sample_once_in_equal_batch_counts():
    one = list(EvenShardBatchSampler(9, 4))
    assert one == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    r0, r1 = list(EvenShardBatchSampler(9, 4, 0, 2)), list(EvenShardBatchSampler(9, 4, 1, 2))
    assert r0 == [[0, 1, 2], [3, 4]] and r1 == [[5, 6], [7, 8]]  # no sample padded in twice
    with pytest.raises(ValueError, match="fewer than the 3 processes"):
        EvenShardBatchSampler(2, 4, 0, 3)


class _Draws:
    """A dataset whose 'augmentation' is one draw from each generator SeededSamples seeds."""

    def __init__(self):
        import albumentations as A

        self.augment = A.Compose([], seed=0)

    def __len__(self):
        return 5

    def __getitem__(self, index):
        import random

        return (
            index,
            torch.rand(1).item(),
            float(np.random.rand()),
            random.random(),
            float(self.augment.random_generator.random()),
        )


def test_seeded_samples_are_a_function_of_seed_epoch_index_and_leave_the_caller_rng_alone():
    data = SeededSamples(_Draws(), seed=7)
    first = data[(2, 3)]
    torch.manual_seed(0)
    before = torch.get_rng_state()
    data[(0, 1)]
    assert torch.equal(torch.get_rng_state(), before)  # training's own stream is untouched
    assert data[(2, 3)] == first  # whatever was drawn in between
    assert data[(3, 3)] != first and SeededSamples(_Draws(), seed=8)[(2, 3)] != first
    assert len(set(first[1:])) == 4  # every generator was seeded (and differently)
