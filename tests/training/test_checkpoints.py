"""Stopping and resuming: atomic checkpoints, resume keys that name what changed, random
states and weight digests that round-trip, stop signals caught only within the block."""

from __future__ import annotations

import logging
import pickle
import random
import signal

import numpy as np
import pytest
import torch

from cohortseg.core.io import copy_atomically
from cohortseg.training.checkpoints import (
    EXIT_INTERRUPTED,
    RESUME_IGNORES,
    STOP_SIGNALS,
    StopRequest,
    TrainingInterrupted,
    ignore_stop_signals,
    load_resumable,
    remove_partial_files,
    resume_key,
    rng_state,
    save_checkpoint,
    set_rng_state,
    weights_digest,
)


class Stores:
    """What resume_key reads of a PatchDataset: its subjects and its number of patches."""

    def __init__(self, subjects: list[str], n_patches: int) -> None:
        self._subjects, self._n = subjects, n_patches

    def subjects(self) -> list[str]:
        return self._subjects

    def __len__(self) -> int:
        return self._n


def key(world_size: int = 1, **training) -> dict:
    config = {
        "model": {"name": "UNet", "channels": [4, 8]},
        "training": {
            "seed": 7,
            "num_workers": 0,
            "augmentation": {"gamma_probability": 0.3},
            **training,
        },
    }
    return resume_key(config, {"hash": "abc"}, Stores(["sub-00", "sub-01"], 8), world_size)


def test_resume_key_leaves_out_what_may_change_between_runs():
    k = key(num_workers=4, checkpoint_every=5, backend="ddp", device="cuda", ranks=2)
    assert k == {
        "plan_hash": "abc",
        "model": {"name": "UNet", "channels": [4, 8]},
        "training": {"seed": 7, "augmentation": {"gamma_probability": 0.3}},
        "stores": ["sub-00", "sub-01"],
        "n_patches": 8,
        "world_size": 1,
    }
    assert set(RESUME_IGNORES) >= {"num_workers", "checkpoint_every", "backend", "device"}


def test_a_checkpoint_of_its_own_run_is_resumed(tmp_path, caplog):
    path = tmp_path / "last.pt"
    assert load_resumable(path, key()) is None  # no file: nothing to say
    save_checkpoint(path, {"resume_key": key(), "epoch": 3})
    caplog.set_level(logging.WARNING, logger="cohortseg")
    state = load_resumable(path, key(num_workers=8))
    assert state is not None and state["epoch"] == 3
    assert caplog.text == ""


def test_another_runs_checkpoint_is_not_resumed_and_the_differences_are_listed(tmp_path, caplog):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"resume_key": key(), "epoch": 3})
    caplog.set_level(logging.WARNING, logger="cohortseg")
    now = key(world_size=2, seed=8, augmentation={"gamma_probability": 0.5})
    assert load_resumable(path, now) is None
    assert (
        "was written for another run (training.augmentation.gamma_probability (0.3 then, 0.5 "
        "now); training.seed (7 then, 8 now); world_size (1 then, 2 now)): training starts "
        "afresh" in caplog.text
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a checkpoint", "is unreadable"),
        (None, "has no resume information"),
    ],
)
def test_an_unusable_checkpoint_starts_training_afresh(tmp_path, caplog, content, message):
    path = tmp_path / "last.pt"
    if content is None:
        torch.save({"model_state": {}}, path)  # e.g. written by an older version
    else:
        path.write_bytes(content)
    caplog.set_level(logging.WARNING, logger="cohortseg")
    assert load_resumable(path, key()) is None
    assert f"{path} {message}" in caplog.text and "training starts afresh" in caplog.text


def test_atomic_save_and_copy_leave_no_temporaries(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "weights": torch.arange(4)})
    copy_atomically(path, tmp_path / "best.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]
    assert torch.equal(torch.load(tmp_path / "best.pt")["weights"], torch.arange(4))
    with pytest.raises((AttributeError, pickle.PicklingError)):  # a lambda does not pickle
        save_checkpoint(path, {"step": 2, "unpicklable": lambda: None})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]
    assert torch.load(path)["step"] == 1  # the previous checkpoint is intact


def test_partial_files_of_a_killed_writer_are_removed(tmp_path):
    names = [".last.pt.x1y2.pt", ".best.pt.abc.pt", ".other.pt.abc.pt", "last.pt", "keep.txt"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    remove_partial_files(tmp_path, ["last.pt", "best.pt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.pt.abc.pt", "keep.txt", "last.pt"]


def test_random_states_round_trip():
    state = rng_state()
    first = random.random(), float(np.random.rand()), torch.rand(3)
    set_rng_state(state)
    again = random.random(), float(np.random.rand()), torch.rand(3)
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_weights_digest_sees_every_bit_and_name():
    weights = {
        "a": torch.arange(6, dtype=torch.float32),
        "b": torch.ones(2, 2, dtype=torch.float64),
    }
    digest = weights_digest(weights)
    assert weights_digest({k: v.clone() for k, v in weights.items()}) == digest
    nudged = weights["a"].clone()
    nudged[3] = torch.nextafter(nudged[3], torch.tensor(10.0))
    assert weights_digest({**weights, "a": nudged}) != digest
    assert weights_digest({"c": weights["a"], "b": weights["b"]}) != digest


def test_stop_request_catches_the_stop_signals_and_restores_the_handlers():
    seen = []

    def previous(signum, frame):
        seen.append(signum)

    before = {sig: signal.signal(sig, previous) for sig in STOP_SIGNALS}
    try:
        with StopRequest() as stop:
            assert stop.signal_name is None
            signal.raise_signal(signal.SIGUSR1)  # the process goes on; the request is noted
            assert stop.signal_name == "SIGUSR1"
            signal.raise_signal(signal.SIGTERM)
            assert stop.signal_name == "SIGTERM"
        assert all(signal.getsignal(sig) is previous for sig in STOP_SIGNALS)
        assert seen == []
        signal.raise_signal(signal.SIGUSR1)
        assert seen == [signal.SIGUSR1]
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_loader_workers_ignore_the_stop_signals():
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        ignore_stop_signals(0)
        assert all(signal.getsignal(sig) is signal.SIG_IGN for sig in STOP_SIGNALS)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_an_interruption_says_where_it_stopped_and_how_to_go_on(tmp_path):
    exc = TrainingInterrupted(tmp_path / "last.pt", 2, 5, "SIGTERM")
    assert (exc.epoch, exc.step, exc.checkpoint) == (2, 5, tmp_path / "last.pt")
    assert str(exc).startswith("SIGTERM: stopped after epoch 2 + 5 steps")
    assert "run the same command again to resume" in str(exc)
    assert EXIT_INTERRUPTED == 75  # EX_TEMPFAIL of sysexits.h: try again
