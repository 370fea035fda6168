"""Stopping and resuming training exactly: checkpoints written atomically, the key that says
whether a checkpoint belongs to this run, every process's random state, digests of the
weights, and the stop signals (SIGTERM, SIGUSR1) that make a run write one and exit with
:data:`EXIT_INTERRUPTED`.
"""

from __future__ import annotations

import hashlib
import logging
import random
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cohortseg.core.io import atomic_write
from cohortseg.preprocessing.patches import PatchDataset

log = logging.getLogger(__name__)


#: Exit status of ``scripts/train.py`` when SIGTERM/SIGUSR1 stopped training after writing a
#: checkpoint (EX_TEMPFAIL of sysexits.h: run the same command again to resume).
EXIT_INTERRUPTED = 75


#: What SLURM sends with ``--signal`` before the time limit, and what requeueing sends.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


#: ``training`` keys that may change between an interrupted run and its resumption.
RESUME_IGNORES = ("num_workers", "checkpoint_every", "backend", "device", "launcher", "ranks")


class TrainingInterrupted(Exception):
    """Training stopped on a signal after writing ``checkpoint``; rerun to resume.

    Attributes
    ----------
    checkpoint
        The ``last.pt`` written.
    epoch, step
        Completed epochs and steps into the next epoch at the stop.
    """

    def __init__(self, checkpoint: Path, epoch: int, step: int, signal_name: str) -> None:
        self.checkpoint, self.epoch, self.step = checkpoint, epoch, step
        super().__init__(
            f"{signal_name}: stopped after epoch {epoch} + {step} steps; "
            f"checkpoint {checkpoint}; run the same command again to resume"
        )


def save_checkpoint(path: str | Path, state: Mapping) -> None:
    """Write a checkpoint atomically: ``path`` appears only once complete."""
    with atomic_write(path) as tmp:
        torch.save(dict(state), tmp)


def remove_partial_files(directory: Path, names: Sequence[str]) -> None:
    """Remove the temporary files that a process killed while writing one of ``names`` in
    ``directory`` left there (:func:`cohortseg.core.io.atomic_write` names them ``.NAME.*``)."""
    for name in names:
        for partial in directory.glob(f".{name}.*"):
            partial.unlink(missing_ok=True)


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a network's ``state_dict()`` (names and exact bytes of every tensor)."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def rng_state() -> dict:
    """This process's Python, NumPy, torch (and CUDA) random states."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    """Restore what :func:`rng_state` returned (CUDA states for as many devices as there are)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)


def resume_key(
    config: Mapping, plan: Mapping, dataset: PatchDataset, world_size: int
) -> dict[str, Any]:
    """What must be equal for a checkpoint to be resumed: the plan, the model, the training
    config (but for keys in :data:`RESUME_IGNORES`), the patch stores and the number of ranks.

    Parameters
    ----------
    config
        The ``model`` and ``training`` config sections (others are ignored).
    plan
        The preprocessing plan (its ``hash``).
    dataset
        The patch stores trained on.
    world_size
        The number of ranks.
    """
    training = config["training"]
    return {
        "plan_hash": plan["hash"],
        "model": dict(config["model"]),
        "training": {k: v for k, v in training.items() if k not in RESUME_IGNORES},
        "stores": dataset.subjects(),
        "n_patches": len(dataset),
        "world_size": world_size,
    }


def _key_differences(a: Mapping, b: Mapping, prefix: str = "") -> list[str]:
    """``key (then, now)`` for every (nested, dot-joined) key whose value differs."""
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            out += _key_differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k} ({x!r} then, {y!r} now)")
    return out


def load_resumable(path: Path, key: Mapping) -> dict | None:
    """The checkpoint at ``path`` if it exists and was written with ``key``, else ``None``
    (with a warning that says why when there is a file: unreadable, without resume
    information, or written for another run, listing what differs)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a checkpoint we cannot read is one we cannot resume
        log.warning("%s is unreadable (%s): training starts afresh", path, exc)
        return None
    if "resume_key" not in state:
        log.warning("%s has no resume information: training starts afresh", path)
        return None
    differences = _key_differences(state["resume_key"], key)
    if differences:
        log.warning(
            "%s was written for another run (%s): training starts afresh and overwrites it",
            path,
            "; ".join(differences),
        )
        return None
    return state


class StopRequest:
    """Within the block, SIGTERM and SIGUSR1 set ``signal_name`` instead of ending the
    process; the previous handlers come back on exit."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        for sig in STOP_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals cannot be caught here
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def ignore_stop_signals(worker_id: int) -> None:
    """``worker_init_fn`` of the DataLoader: its workers ignore the stop signals."""
    # DataLoader workers share the job's process group, so SLURM's signal reaches them too;
    # the main process decides when to stop and ends them itself.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
