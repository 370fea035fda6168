"""Deterministic sampling: batch order and augmentation seeds as pure functions of (seed,
epoch, position), split among ranks exactly as one rank with the global batch sees them."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from cohortseg.training.batches import EpochBatchSampler, sample_seed, seed_everything


def test_batch_order_is_a_function_of_seed_epoch_and_step():
    one = EpochBatchSampler(10, batch_size=4, steps=5, seed=3)
    ranks = [EpochBatchSampler(10, 2, 5, 3, rank=r, world_size=2) for r in range(2)]
    for epoch in range(2):
        one.set_epoch(epoch)
        batches = list(one)
        assert len(batches) == 5 and all(len(b) == 4 for b in batches)
        for step, batch in enumerate(batches):  # the ranks split each global batch
            assert ranks[0].batch(epoch, step) + ranks[1].batch(epoch, step) == batch
            seeds = ranks[0].sample_seeds(epoch, step) + ranks[1].sample_seeds(epoch, step)
            assert seeds == one.sample_seeds(epoch, step)
        order = one.global_order(epoch)  # every patch once before any twice
        assert sorted(order[:10]) == list(range(10)) and sorted(order[10:]) == list(range(10))
        one.set_epoch(epoch, start_step=3)  # resuming within the epoch gives the rest of it
        assert list(one) == batches[3:] and len(one) == 2
    fresh = EpochBatchSampler(10, 4, 5, seed=3)
    assert list(fresh.global_order(1)) == list(one.global_order(1))
    assert list(fresh.global_order(0)) != list(fresh.global_order(1))
    assert list(EpochBatchSampler(10, 4, 5, seed=4).global_order(0)) != list(fresh.global_order(0))


@pytest.mark.parametrize("world_size", [1, 3, 4])
def test_ranks_partition_each_global_batch(world_size):
    ranks = [
        EpochBatchSampler(7, 2, 6, 11, rank=r, world_size=world_size) for r in range(world_size)
    ]
    order = ranks[0].global_order(1)
    assert len(order) == 6 * 2 * world_size
    for step in range(6):
        positions = [p for r in ranks for p in r.positions(step)]
        start = step * 2 * world_size
        assert positions == list(range(start, start + 2 * world_size))  # each position once
        assert [i for r in ranks for i in r.batch(1, step)] == list(order[positions])


def test_set_epoch_starts_iteration_at_the_step_given():
    sampler = EpochBatchSampler(12, 3, 4, seed=0)
    sampler.set_epoch(2)
    whole = list(sampler)
    for start in range(5):
        sampler.set_epoch(2, start_step=start)
        assert list(sampler) == whole[start:] and len(sampler) == 4 - start
    assert [sampler.batch(2, s) for s in range(4)] == whole


def test_sample_seeds_are_stable_distinct_and_63_bit():
    # a checkpoint resumed by a later version must see the same augmentations
    assert sample_seed(0, 0, 0) == 7896617691693857887
    assert sample_seed(7, 2, 13) == 3383191066466375486
    seeds = {sample_seed(s, e, p) for s in range(3) for e in range(3) for p in range(50)}
    assert len(seeds) == 3 * 3 * 50
    assert all(0 <= s < 2**63 for s in seeds)
    sampler = EpochBatchSampler(5, 2, 3, seed=9, rank=1, world_size=2)
    assert sampler.sample_seeds(4, 1) == [sample_seed(9, 4, 6), sample_seed(9, 4, 7)]


def test_seed_everything_repeats_python_numpy_and_torch_draws():
    def draws() -> tuple:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    seed_everything(2**40 + 5)  # NumPy takes it modulo 2³²
    first = draws()
    seed_everything(2**40 + 5)
    assert draws() == first
    seed_everything(6)
    assert draws() != first
