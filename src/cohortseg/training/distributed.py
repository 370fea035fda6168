"""Data-parallel training behind one small interface: one process, torch DDP or Horovod.

``init(backend, device)`` returns a :class:`Distributed` that knows this process's rank, the
world size, its local rank and its device, and does the few collective operations training
needs: wrapping the model and optimizer so that gradients are averaged over ranks,
broadcasting parameters and optimizer state from rank 0, summing metrics, gathering and
broadcasting small Python objects, a barrier and the shutdown. Training code calls these the
same way whatever the backend.

Backends
--------
``single``
    One process, no communication.
``ddp``
    ``torch.distributed`` with NCCL on GPU and Gloo on CPU, the model wrapped in
    ``DistributedDataParallel``. Ranks come from torchrun's environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), else from SLURM's when
    started by ``srun`` (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``; the address of
    rank 0 is the first host of the step's node list, the port ``20000 + job id % 20000``),
    else the process is a world of one.
``horovod``
    ``horovod.torch`` (started by ``horovodrun``): ``hvd.DistributedOptimizer`` averages the
    gradients, ``hvd.broadcast_parameters`` and ``hvd.broadcast_optimizer_state`` copy rank 0's
    state.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from cohortseg.core.errors import CohortsegError
from cohortseg.networks.device import pick_device

log = logging.getLogger(__name__)


BACKENDS = ("single", "ddp", "horovod")


# Rank 0 validates while the others wait at a barrier: the timeout must outlast a validation.
COLLECTIVE_TIMEOUT = timedelta(hours=2)


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list, e.g. ``gpu[07-09,12],cpu1`` → ``gpu07``."""
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            end = i
            break
    item = nodelist[:end].strip()
    host = re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[,-]", m.group(1))[0], item)
    if not host or "[" in host or "]" in host:
        raise CohortsegError(f"cannot read the first host of the SLURM node list {nodelist!r}")
    return host


def slurm_rendezvous(environ: Mapping[str, str]) -> dict[str, Any]:
    """Rank, world size, local rank and rank 0's address and port of a task started by
    ``srun``, from SLURM's environment (``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS`` or
    ``SLURM_NTASKS``, ``SLURM_LOCALID``).

    ``MASTER_ADDR`` and ``MASTER_PORT``, where set, take precedence; otherwise the address is
    the first host of ``SLURM_STEP_NODELIST`` (or ``SLURM_JOB_NODELIST``, or
    ``SLURM_LAUNCH_NODE_IPADDR``) and the port ``20000 + SLURM_JOB_ID % 20000``, so every task
    of a job step derives the same values without talking to the others.
    """
    nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST")
    addr = environ.get("MASTER_ADDR")
    if not addr:
        if nodelist:
            addr = first_host(nodelist)
        elif environ.get("SLURM_LAUNCH_NODE_IPADDR"):
            addr = environ["SLURM_LAUNCH_NODE_IPADDR"]
        else:
            raise CohortsegError(
                "training.backend ddp under SLURM: neither SLURM_JOB_NODELIST nor "
                "SLURM_LAUNCH_NODE_IPADDR is set, so rank 0's address is unknown; set MASTER_ADDR"
            )
    port = environ.get("MASTER_PORT")
    if not port:
        job = environ.get("SLURM_JOB_ID", "")
        port = 20000 + int(job) % 20000 if job.isdigit() else 29500
    return {
        "rank": int(environ["SLURM_PROCID"]),
        # the step's tasks (srun -n may start fewer than the job has), else the job's
        "world_size": int(environ.get("SLURM_STEP_NUM_TASKS") or environ["SLURM_NTASKS"]),
        "local_rank": int(environ.get("SLURM_LOCALID", "0")),
        "master_addr": addr,
        "master_port": int(port),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_device(device: str, local_rank: int = 0) -> torch.device:
    """The device a rank trains on: ``training.device`` as
    :func:`cohortseg.networks.device.pick_device` reads it, where ``auto``/``cuda`` give the
    local rank's GPU (modulo the GPUs this process sees, so one GPU per task from SLURM's
    binding works too).

    Raises
    ------
    CohortsegError
        If ``device`` asks for CUDA and this process sees no CUDA device.
    """
    dev = pick_device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise CohortsegError(
            f"training.device: {device!r}, but this process sees no CUDA device (torch "
            f"{torch.__version__}, CUDA_VISIBLE_DEVICES={visible!r}); ask the job for a GPU,"
            " or set training.device: auto (the GPU if there is one) or cpu"
        )
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def _to_cpu(obj: Any) -> Any:
    """A copy of a nested state with every tensor on the CPU (for pickled broadcasts)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


@dataclass
class Distributed:
    """This process's place among the ranks and the collectives training uses; a world of one.

    Attributes
    ----------
    backend
        ``single``, ``ddp`` or ``horovod``.
    rank, world_size, local_rank
        Global rank, number of ranks, rank within this node.
    device
        Where this rank's model and batches live.
    """

    backend: str
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0, the one that validates and writes files."""
        return self.rank == 0

    def wrap(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """The model and optimizer to train with, averaging gradients over ranks. Keep the
        unwrapped model for ``state_dict`` and validation."""
        return model, optimizer

    def broadcast_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Copy rank 0's parameters and buffers, and its optimizer state if it has any, to all
        ranks (the unwrapped model and the wrapped optimizer)."""

    def allreduce_sum(self, values: Sequence[float]) -> list[float]:
        """Sum ``values`` element-wise over ranks; every rank gets the sums."""
        return [float(v) for v in values]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` (picklable), in rank order, on rank 0; ``None`` elsewhere."""
        return [obj]

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (picklable) on every rank."""
        return obj

    def barrier(self) -> None:
        """Wait until every rank is here."""

    def shutdown(self) -> None:
        """Leave the process group."""


class _TorchDDP(Distributed):
    def wrap(self, model, optimizer):
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids), optimizer

    def broadcast_state(self, model, optimizer):
        import torch.distributed as dist

        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)
        # One process group decides for all: every rank resumed from the same checkpoint or
        # none did, so the optimizer state is empty everywhere or nowhere.
        if optimizer.state_dict()["state"]:
            state = self.broadcast_object(_to_cpu(optimizer.state_dict()))
            if not self.is_main:
                optimizer.load_state_dict(state)

    def _tensor(self, values: Sequence[float]) -> torch.Tensor:
        device = self.device if self.device.type == "cuda" else torch.device("cpu")
        return torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)

    def allreduce_sum(self, values):
        import torch.distributed as dist

        tensor = self._tensor(values)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu().tolist()

    def gather(self, obj):
        import torch.distributed as dist

        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast_object(self, obj):
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self):
        import torch.distributed as dist

        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def shutdown(self):
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class _Horovod(Distributed):
    def __init__(self, hvd: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hvd = hvd

    def wrap(self, model, optimizer):
        hvd = self._hvd
        wrapped = hvd.DistributedOptimizer(
            optimizer, named_parameters=model.named_parameters(), op=hvd.Average
        )
        return model, wrapped

    def broadcast_state(self, model, optimizer):
        hvd = self._hvd
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        # hvd.broadcast_optimizer_state fills an empty state with one zero-gradient step,
        # which moves AdamW's weights (decay) and its step count; a fresh state is empty on
        # every rank anyway, so only a resumed one is broadcast.
        if optimizer.state_dict()["state"]:
            hvd.broadcast_optimizer_state(optimizer, root_rank=0)

    def allreduce_sum(self, values):
        hvd = self._hvd
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
        return hvd.allreduce(tensor, op=hvd.Sum, name="cohortseg.evaluation.metrics").tolist()

    # Horovod matches collectives by name, and names default to the object's type, which
    # differs between rank 0 (the object) and the others (None): the names must be fixed.
    def gather(self, obj):
        out = self._hvd.allgather_object(obj, name="cohortseg.gather")
        return list(out) if self.is_main else None

    def broadcast_object(self, obj):
        return self._hvd.broadcast_object(obj, root_rank=0, name="cohortseg.broadcast")

    def barrier(self):
        self._hvd.barrier()

    def shutdown(self):
        if self._hvd.is_initialized():
            self._hvd.shutdown()


def _init_ddp(device: str) -> Distributed:
    import torch.distributed as dist

    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun (also when torchrun runs under srun)
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", "0"))
        init_method, source = "env://", "torchrun environment"
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        rdv = slurm_rendezvous(env)
        rank, world, local_rank = rdv["rank"], rdv["world_size"], rdv["local_rank"]
        init_method = f"tcp://{rdv['master_addr']}:{rdv['master_port']}"
        source = f"SLURM environment, rank 0 at {rdv['master_addr']}:{rdv['master_port']}"
    else:
        rank, world, local_rank = 0, 1, 0
        init_method = f"tcp://127.0.0.1:{_free_port()}"
        source = "no launcher (neither torchrun nor srun): a world of one"
    dev = rank_device(device, local_rank)
    pg_backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(
        pg_backend,
        init_method=init_method,
        rank=rank,
        world_size=world,
        timeout=COLLECTIVE_TIMEOUT,
    )
    log.info("ddp (%s): rank %d of %d on %s, from the %s", pg_backend, rank, world, dev, source)
    return _TorchDDP("ddp", rank, world, local_rank, dev)


def _init_horovod(device: str) -> Distributed:
    try:
        import horovod.torch as hvd
    except ImportError as exc:
        raise CohortsegError(
            "training.backend horovod: horovod.torch cannot be imported "
            f"({exc}); install it with scripts/install_horovod.sh PYTHON, or use backend ddp"
        ) from exc
    hvd.init()
    rank, world, local_rank = hvd.rank(), hvd.size(), hvd.local_rank()
    dev = rank_device(device, local_rank)
    log.info("horovod: rank %d of %d on %s", rank, world, dev)
    return _Horovod(
        hvd, backend="horovod", rank=rank, world_size=world, local_rank=local_rank, device=dev
    )


def init(backend: str = "single", device: str = "auto") -> Distributed:
    """Join the ranks of ``backend`` (``single``, ``ddp`` or ``horovod``) and pick this rank's
    device (``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ``auto`` and ``cuda`` give each local
    rank its own GPU)."""
    if backend == "single":
        return Distributed("single", 0, 1, 0, rank_device(device, 0))
    if backend == "ddp":
        return _init_ddp(device)
    if backend == "horovod":
        return _init_horovod(device)
    raise CohortsegError(f"training.backend: {backend!r} is not one of {', '.join(BACKENDS)}")
