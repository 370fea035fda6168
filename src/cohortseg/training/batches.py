"""Deterministic sampling: which patches each rank trains on at each step, and the seed that
draws each sample's augmentation, as pure functions of (seed, epoch, position in the epoch).

Because nothing here depends on history, a run resumed mid-epoch sees the same batches as one
that never stopped, and ``n`` ranks with batch ``b`` see the same samples, augmented the same
way, as one rank with batch ``n·b``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels.

    Parameters
    ----------
    seed
        The run's seed (``training.seed``); NumPy's global generator gets it modulo 2³².
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the sample at ``position`` of an epoch's global order.

    Parameters
    ----------
    seed
        The run's seed.
    epoch
        The epoch, 0-based.
    position
        The sample's position in the epoch's global order (over all ranks).

    Returns
    -------
    int
        A non-negative 63-bit integer, the same for the same arguments on every machine.
    """
    state = np.random.SeedSequence([seed, epoch, position]).generate_state(1, np.uint64)
    return int(state[0]) >> 1


class EpochBatchSampler(Sampler[list[int]]):
    """This rank's batches of patch indices, a pure function of (seed, epoch, step).

    An epoch's global order is a seeded concatenation of permutations of the ``n_items``
    patches, ``steps × batch_size × world_size`` long. Step ``s`` uses the global batch
    ``order[s·B : (s+1)·B]`` with ``B = batch_size × world_size``; rank ``r`` takes its
    ``r``-th slice of ``batch_size``, so the ranks partition each global batch, and one rank
    with batch ``B`` sees what ``world_size`` ranks with batch ``batch_size`` see together.
    ``set_epoch(epoch, start_step)`` selects the epoch and where in it iteration starts.

    Parameters
    ----------
    n_items
        Patches in the dataset.
    batch_size
        Patches per step on this rank.
    steps
        Steps per epoch.
    seed
        The run's seed.
    rank, world_size
        This rank and the number of ranks.
    """

    def __init__(
        self,
        n_items: int,
        batch_size: int,
        steps: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n_items, self.batch_size, self.steps, self.seed = n_items, batch_size, steps, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_step = 0, 0
        self._order: tuple[int, np.ndarray] | None = None

    @property
    def global_batch(self) -> int:
        """Patches per step over all ranks."""
        return self.batch_size * self.world_size

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Iterate over ``epoch`` (0-based) from ``start_step`` on."""
        self.epoch, self.start_step = epoch, start_step

    def global_order(self, epoch: int) -> np.ndarray:
        """The epoch's sample order over all ranks: (steps × global batch,) int64."""
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            need = self.steps * self.global_batch
            passes = math.ceil(need / self.n_items)
            order = np.concatenate([rng.permutation(self.n_items) for _ in range(passes)])
            self._order = (epoch, order[:need])
        return self._order[1]

    def positions(self, step: int) -> range:
        """Positions in the epoch's global order of this rank's samples at ``step``."""
        start = step * self.global_batch + self.rank * self.batch_size
        return range(start, start + self.batch_size)

    def batch(self, epoch: int, step: int) -> list[int]:
        """Patch indices of this rank's batch at ``step`` of ``epoch``."""
        order = self.global_order(epoch)
        return [int(order[p]) for p in self.positions(step)]

    def sample_seeds(self, epoch: int, step: int) -> list[int]:
        """Augmentation seeds of this rank's samples at ``step`` of ``epoch``."""
        return [sample_seed(self.seed, epoch, p) for p in self.positions(step)]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.steps):
            yield self.batch(self.epoch, step)

    def __len__(self) -> int:
        return self.steps - self.start_step
