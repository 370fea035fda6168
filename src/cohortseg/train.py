"""Training: patches from the HDF5 stores, Dice + cross-entropy, AdamW, validation Dice each
epoch, best and last checkpoints and a per-epoch log; data-parallel over ranks
(``training.backend``) and resumable from ``last.pt`` at any step.

Batch order and augmentation are pure functions of the seed, the epoch and the position in the
epoch's global sample order, so a run resumed mid-epoch from a checkpoint ends with the same
weights, bit for bit on the CPU, as one that never stopped, and ``n`` ranks with batch ``b``
see the same samples, augmented the same way, as one rank with batch ``n·b``.

Stopping: SIGTERM or SIGUSR1 (what SLURM sends with ``--signal`` before the time limit) makes
every rank finish the current step; rank 0 writes ``last.pt`` and :func:`train` raises
:class:`TrainingInterrupted`, which ``scripts/train.py`` turns into exit status
:data:`EXIT_INTERRUPTED` (75). Running the same command again resumes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import shutil
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from torch.utils.checkpoint import checkpoint
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from cohortseg import distributed
from cohortseg.augment import AUGMENTATION_DEFAULTS, augment
from cohortseg.errors import CohortsegError
from cohortseg.infer import predict_probabilities
from cohortseg.io import atomic_write, load_nifti, write_tsv
from cohortseg.metrics import dice_hd95
from cohortseg.models import build_network
from cohortseg.patches import PatchDataset
from cohortseg.report import plot_learning_curve

log = logging.getLogger(__name__)

#: Exit status of ``scripts/train.py`` when SIGTERM/SIGUSR1 stopped training after writing a
#: checkpoint (EX_TEMPFAIL of sysexits.h: run the same command again to resume).
EXIT_INTERRUPTED = 75

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

#: Values of the ``training`` keys that older configs may lack.
TRAINING_DEFAULTS: dict[str, Any] = {
    "steps_per_epoch": None,
    "backend": "single",
    "lr_scaling": "none",
    "checkpoint_every": None,
    "activation_checkpointing": False,
    "precision": "float32",
    "device": "auto",
    "augmentation": AUGMENTATION_DEFAULTS,
}

#: ``training`` keys that may change between an interrupted run and its resumption.
RESUME_IGNORES = ("num_workers", "checkpoint_every", "backend", "device", "launcher", "ranks")


#: ``training.precision`` → the dtype of weights, activations and gradients.
PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


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


@dataclass
class ValidationSubject:
    """A preprocessed validation subject (image and label on the plan's grid)."""

    subject: str
    image: str
    label: str


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the sample at ``position`` of an epoch's global order (63 bit)."""
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
        return self.batch_size * self.world_size

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
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


def lr_at(epoch: int, epochs: int, base: float) -> float:
    """Polynomial (power 0.9) decay of the learning rate over the epochs, as in nnU-Net."""
    return base * (1 - epoch / max(epochs, 1)) ** 0.9


def scaled_learning_rate(learning_rate: float, lr_scaling: str, world_size: int) -> float:
    """The base learning rate for ``world_size`` ranks: ``linear`` multiplies it by the world
    size (the global batch grows with the ranks), ``none`` keeps it."""
    if lr_scaling == "linear":
        return learning_rate * world_size
    if lr_scaling == "none":
        return learning_rate
    raise CohortsegError(f"training.lr_scaling: {lr_scaling!r} is not none or linear")


def checkpoint_activations(net: torch.nn.Module) -> int:
    """Recompute the activations of the network's convolution blocks in the backward pass
    instead of keeping them (``torch.utils.checkpoint``), trading compute for memory in
    whole-volume training. The parameter names are unchanged, so checkpoints load into the
    plain network. Returns the number of blocks wrapped."""
    from monai.networks.blocks import Convolution, ResidualUnit
    from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetResBlock, UnetUpBlock

    kinds = (Convolution, ResidualUnit, UnetBasicBlock, UnetResBlock, UnetUpBlock)
    wrapped = 0

    def visit(module: torch.nn.Module) -> None:
        nonlocal wrapped
        for child in module.children():
            if isinstance(child, kinds):
                forward = child.forward

                def run(*args: Any, _forward: Any = forward, **kwargs: Any) -> Any:
                    if not torch.is_grad_enabled():
                        return _forward(*args, **kwargs)
                    return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

                child.forward = run
                wrapped += 1
            else:
                visit(child)

    visit(net)
    if wrapped == 0:
        log.warning("activation checkpointing: no known block in %s", type(net).__name__)
    return wrapped


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: torch.nn.Module,
    image: torch.Tensor,
    label: torch.Tensor,
) -> torch.Tensor:
    """One optimisation step on a batch already on the device: forward (bf16 autocast on
    CUDA), loss, backward (gradients averaged over ranks by the wrapped model or optimizer)
    and update; float64 batches (``training.precision``) run without autocast. Returns the
    detached loss."""
    device = image.device
    autocast = device.type == "cuda" and image.dtype == torch.float32
    optimizer.zero_grad()  # sets gradients to None (Horovod's optimizer takes no arguments)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = loss_fn(model(image), label)
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def validate(
    net: torch.nn.Module,
    subjects: Sequence[ValidationSubject],
    plan: Mapping,
    inference: Mapping,
    device: torch.device,
) -> list[float]:
    """Mean Dice per foreground class over the validation subjects (on the plan's grid)."""
    n_classes = len(plan["classes"]) + 1
    dtype = next(net.parameters()).dtype
    net.eval()
    scores = []
    for s in subjects:
        image, affine = load_nifti(s.image, s.subject)
        label, _ = load_nifti(s.label, s.subject, dtype=np.uint8)
        tensor = torch.as_tensor(image, device=device, dtype=dtype)[None]
        probs = predict_probabilities(net, tensor, plan, inference)
        pred = torch.argmax(probs, 0).to(torch.uint8).cpu().numpy()
        dice, _ = dice_hd95(pred, label, affine, n_classes)
        scores.append(dice)
    net.train()
    return np.mean(np.asarray(scores), axis=0).tolist() if scores else [math.nan] * (n_classes - 1)


def save_checkpoint(path: str | Path, state: Mapping) -> None:
    """Write a checkpoint atomically."""
    with atomic_write(path) as tmp:
        torch.save(dict(state), tmp)


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
    """Restore what :func:`rng_state` returned."""
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
    config (but for keys in ``RESUME_IGNORES``), the patch stores and the number of ranks."""
    training = {**TRAINING_DEFAULTS, **config["training"]}
    return {
        "plan_hash": plan["hash"],
        "model": dict(config["model"]),
        "training": {k: v for k, v in training.items() if k not in RESUME_IGNORES},
        "stores": dataset.subjects(),
        "n_patches": len(dataset),
        "world_size": world_size,
    }


def _key_differences(a: Mapping, b: Mapping, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            out += _key_differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k} ({x!r} then, {y!r} now)")
    return out


def _load_resumable(path: Path, key: Mapping) -> dict | None:
    """The checkpoint at ``path`` if it exists and was written with ``key``, else ``None``."""
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


def _ignore_stop_signals(worker_id: int) -> None:
    # DataLoader workers share the job's process group, so SLURM's signal reaches them too;
    # the main process decides when to stop and ends them itself.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@dataclass
class Progress:
    """Where training stands: completed epochs, steps into the next one, and the log so far."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    best: float = -math.inf


def train(
    config: Mapping,
    plan: Mapping,
    stores: Sequence[str],
    val_subjects: Sequence[ValidationSubject],
    out_dir: str | Path,
    checkpoint_dir: str | Path | None = None,
) -> dict:
    """Train a network on the patch stores and write ``best.pt``, ``last.pt``,
    ``training_log.tsv`` and ``learning_curve.png`` into ``out_dir``.

    Every rank of ``training.backend`` calls this; rank 0 validates and writes the files.
    ``last.pt`` is written to ``checkpoint_dir`` (default ``out_dir``) every
    ``training.checkpoint_every`` steps and at each epoch's end; if it exists there when
    training starts and was written for the same plan, model, training config, patch stores
    and number of ranks, training resumes from it. With a separate ``checkpoint_dir`` (one
    that Snakemake does not delete before rerunning the job) the resume files are removed once
    training has finished and its results are in ``out_dir``.

    Returns the final epoch's log row (rank 0's has the validation Dice).

    Raises
    ------
    TrainingInterrupted
        After SIGTERM or SIGUSR1, once the checkpoint is written.
    """
    cfg = {**TRAINING_DEFAULTS, **config["training"]}
    ctx = distributed.init(str(cfg["backend"]), str(cfg["device"]))
    try:
        with StopRequest() as stop:
            return _train(ctx, stop, config, plan, stores, val_subjects, out_dir, checkpoint_dir)
    finally:
        ctx.shutdown()


def _train(
    ctx: distributed.Distributed,
    stop: StopRequest,
    config: Mapping,
    plan: Mapping,
    stores: Sequence[str],
    val_subjects: Sequence[ValidationSubject],
    out_dir: str | Path,
    checkpoint_dir: str | Path | None,
) -> dict:
    out = Path(out_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else out
    cfg = {**TRAINING_DEFAULTS, **config["training"]}
    classes = list(plan["classes"])
    seed = int(cfg["seed"])
    seed_everything(seed)
    device = ctx.device
    dataset = PatchDataset(stores, plan_hash=plan["hash"])
    batch_size = int(cfg["batch_size"])
    steps = int(cfg["steps_per_epoch"] or math.ceil(len(dataset) / (batch_size * ctx.world_size)))
    sampler = EpochBatchSampler(len(dataset), batch_size, steps, seed, ctx.rank, ctx.world_size)
    workers = int(cfg["num_workers"])
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        worker_init_fn=_ignore_stop_signals,
    )
    dtype = PRECISIONS[str(cfg["precision"])]
    net = build_network(config["model"], len(classes) + 1).to(device=device, dtype=dtype)
    if cfg["activation_checkpointing"]:
        checkpoint_activations(net)
    base_lr = scaled_learning_rate(float(cfg["learning_rate"]), cfg["lr_scaling"], ctx.world_size)
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=base_lr, weight_decay=float(cfg["weight_decay"])
    )
    model, optimizer = ctx.wrap(net, optimizer)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    epochs = int(cfg["epochs"])
    checkpoint_every = int(cfg["checkpoint_every"] or 0)
    key = resume_key(config, plan, dataset, ctx.world_size)
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"

    progress = Progress()
    if ctx.is_main:  # temporary files of a run killed while writing
        for partial in [*ckpt_dir.glob(".last.pt.*"), *ckpt_dir.glob(".best.pt.*")]:
            partial.unlink(missing_ok=True)
    resumed = ctx.broadcast_object(_load_resumable(last_path, key) if ctx.is_main else None)
    if resumed is not None:
        net.load_state_dict(resumed["model_state"])
        optimizer.load_state_dict(resumed["optimizer_state"])
        progress = Progress(**resumed["progress"])
    elif ctx.is_main:  # files of another run must not pass for this one's
        for stale in (best_path, out / "best.pt"):
            stale.unlink(missing_ok=True)
    ctx.broadcast_state(net, optimizer)
    if resumed is not None:
        set_rng_state(resumed["rng_states"][ctx.rank])
        if ctx.is_main:
            log.info(
                "resumed from %s: epoch %d, step %d (global step %d)",
                last_path,
                progress.epoch + 1,
                progress.step,
                progress.global_step,
            )
        del resumed

    columns = ["epoch", "train_loss", "val_dice_mean"] + [f"val_dice_{c}" for c in classes]
    columns += ["learning_rate", "seconds"]
    if ctx.is_main:
        log.info(
            "training: %d epochs of %d steps, batch %d per rank × %d ranks (%s), %d patches",
            epochs,
            steps,
            batch_size,
            ctx.world_size,
            ctx.backend,
            len(dataset),
        )

    def write_checkpoint(path: Path, lr: float, finished: bool = False) -> None:
        # collective: every rank sends its random states and a digest of its weights
        per_rank = ctx.gather({"rng": rng_state(), "digest": weights_digest(net.state_dict())})
        if not ctx.is_main:
            return
        rows = progress.rows
        state = {
            "model_state": net.state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "grad_scaler_state": None,  # bf16 autocast needs no gradient scaler
            "lr_schedule": {"kind": "poly", "power": 0.9, "base_lr": base_lr, "epochs": epochs},
            "learning_rate": lr,
            "model_config": dict(config["model"]),
            "plan": dict(plan),
            "resume_key": key,
            "epoch": progress.epoch,
            "step": progress.step,
            "global_step": progress.global_step,
            "progress": vars(progress),
            "rng_states": [p["rng"] for p in per_rank],
            "rank_weight_digests": [p["digest"] for p in per_rank],
            "backend": ctx.backend,
            "world_size": ctx.world_size,
            "finished": finished,
            "val_dice_mean": rows[-1].get("val_dice_mean") if rows else None,
        }
        save_checkpoint(path, state)
        if finished:
            log.info("checkpoint %s: finished (global step %d)", path, progress.global_step)
            return
        log.info(
            "checkpoint %s: epoch %d, step %d of %d (global step %d)",
            path,
            progress.epoch + 1,
            progress.step,
            steps,
            progress.global_step,
        )

    def stop_requested() -> bool:
        return ctx.allreduce_sum([stop.signal_name is not None])[0] > 0

    def interrupt(lr: float) -> TrainingInterrupted:
        write_checkpoint(last_path, lr)
        ctx.barrier()  # no rank exits (and makes a launcher end the others) before the write
        exc = TrainingInterrupted(last_path, progress.epoch, progress.step, stop.signal_name or "")
        if ctx.is_main:
            log.warning("%s", exc)
        return exc

    model.train()
    for epoch in range(progress.epoch, epochs):
        start = time.perf_counter()
        lr = lr_at(epoch, epochs, base_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sampler.set_epoch(epoch, progress.step)
        batches = tqdm(
            loader,
            desc=f"epoch {epoch + 1}",
            initial=progress.step,
            total=steps,
            mininterval=30,
            disable=not ctx.is_main,
        )
        for step, (image, label) in enumerate(batches, start=progress.step):
            image = image.to(device, dtype=dtype, non_blocking=True)
            label = label.to(device, non_blocking=True)
            seeds = sampler.sample_seeds(epoch, step)
            image, label = augment(image, label, seeds, cfg["augmentation"])
            loss = train_step(model, optimizer, loss_fn, image, label)
            # one collective for the mean loss and whether any rank was told to stop
            loss_sum, stopping = ctx.allreduce_sum([loss.item(), stop.signal_name is not None])
            progress.epoch_losses.append(loss_sum / ctx.world_size)
            progress.step, progress.global_step = step + 1, progress.global_step + 1
            if stopping:
                raise interrupt(lr)
            if (
                checkpoint_every
                and progress.global_step % checkpoint_every == 0
                and step + 1 < steps
            ):
                write_checkpoint(last_path, lr)
        row: dict = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(progress.epoch_losses)),
            "learning_rate": lr,
        }
        if (epoch + 1) % int(cfg["val_every"]) == 0 or epoch + 1 == epochs:
            if ctx.is_main:
                dice = validate(net, val_subjects, plan, config["inference"], device)
                row["val_dice_mean"] = float(np.mean(dice))
                row.update({f"val_dice_{c}": d for c, d in zip(classes, dice, strict=True)})
            ctx.barrier()
        row["seconds"] = time.perf_counter() - start
        progress.rows.append(row)
        progress.epoch, progress.step, progress.epoch_losses = epoch + 1, 0, []
        if ctx.is_main:
            log.info(
                "epoch %d/%d: %s",
                epoch + 1,
                epochs,
                ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"),
            )
        score = row.get("val_dice_mean", -math.inf)
        improved = not math.isnan(score) and score > progress.best
        if improved:
            progress.best = score
        write_checkpoint(last_path, lr, finished=epoch + 1 == epochs)
        if ctx.is_main:
            if improved:
                _copy_atomically(last_path, best_path)
            write_tsv(out / "training_log.tsv", progress.rows, columns)
        if epoch + 1 < epochs and stop_requested():
            raise interrupt(lr)

    if ctx.is_main:
        _publish(out, ckpt_dir, progress.rows, classes, columns)
    ctx.barrier()
    return progress.rows[-1]


def _copy_atomically(src: Path, dst: Path) -> None:
    with atomic_write(dst) as tmp:
        shutil.copyfile(src, tmp)


def _publish(
    out: Path, ckpt_dir: Path, rows: Sequence[dict], classes: Sequence[str], columns: list[str]
) -> None:
    """Put the final ``last.pt``, ``best.pt``, log and learning curve into ``out``; remove the
    resume files from a separate checkpoint directory."""
    last, best = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    if not best.exists():  # no validation score was ever finite
        _copy_atomically(last, best)
    if ckpt_dir.resolve() != out.resolve():
        _copy_atomically(best, out / "best.pt")
        _copy_atomically(last, out / "last.pt")
        best.unlink()
        last.unlink()
    write_tsv(out / "training_log.tsv", rows, columns)
    plot_learning_curve(rows, classes, out / "learning_curve.png")
