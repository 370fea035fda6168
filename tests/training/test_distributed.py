"""Data-parallel training with real ranks on the CPU (torchrun, horovodrun and srun's
environment), and stopping and resuming scripts/train.py at any step."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import read_tsv, write_json, write_tsv
from cohortseg.training.checkpoints import EXIT_INTERRUPTED, weights_digest
from cohortseg.training.distributed import first_host, init, rank_device, slurm_rendezvous
from tests.conftest import default_config, make_small_plan, write_phantoms
from tests.training.test_loop import make_inputs

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# A configuration where 2 ranks with batch 1 must take the same steps as 1 rank with batch 2:
# instance norm (no batch statistics), a mean-reduced loss, per-sample augmentation seeds, no
# conv bias in front of the norm (its true gradient is 0), and float64 throughout. Why float64:
# the two runs sum the same per-sample gradients in different orders, so they agree only to the
# rounding of those sums; AdamW's step m / (sqrt(v) + eps) turns a gradient difference d of a
# near-zero gradient into a step difference of up to lr · d / eps (lr / eps = 1e6 here). In
# float32 (d ~ 1e-9 measured) that is a step of order lr, and which weight it hits depends on
# the CPU's kernels (seen on Intel, not on AMD); in float64 (d ~ 1e-18) at most ~1e-12 per step.
CONFIG = {
    "model": {
        "name": "UNet",
        "channels": [4, 8, 16],
        "strides": [2, 2],
        "num_res_units": 0,
        "kwargs": {"bias": False},
    },
    "training": {
        **default_config()["training"],
        "epochs": 3,
        "steps_per_epoch": 16,
        "batch_size": 2,
        "learning_rate": 0.01,
        "weight_decay": 1e-4,
        "seed": 7,
        "num_workers": 0,
        "val_every": 1,
        "device": "cpu",
        "backend": "single",
        "lr_scaling": "none",
        "checkpoint_every": 5,
        "precision": "float64",
    },
    "inference": {"overlap": 0.25, "sw_batch_size": 2},
}
# 48 steps of at most ~1e-12 each, with margin for their growth through the steps; measured
# 1e-15 to 3e-15 (Intel and AMD, with and without ATEN_CPU_CAPABILITY=default); one step that
# differed would move a weight by about the learning rate, 1e-2.
RANKS_ATOL = 1e-8
CHECKPOINT_LINE = re.compile(r"checkpoint \S+: epoch (\d+), step (\d+) of")


def config(**training) -> dict:
    return {**CONFIG, "training": {**CONFIG["training"], **training}}


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without launcher variables, one thread per rank, unbuffered."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "HOROVOD_", "TORCHELASTIC_"))
        and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """Three small subjects' patch stores (4 patches each), one validation subject, a plan."""
    tmp = tmp_path_factory.mktemp("inputs")
    plan = make_small_plan()
    files = write_phantoms(tmp)
    stores, val = make_inputs(tmp, files, plan)
    write_json(tmp / "plan.json", plan)
    write_tsv(tmp / "val.tsv", [vars(v) for v in val], ["subject", "split", "image", "label"])
    return {"plan": str(tmp / "plan.json"), "stores": stores, "val": str(tmp / "val.tsv")}


def train_args(inputs: dict, cfg: dict, out: Path) -> list[str]:
    return [
        str(REPO / "scripts" / "train.py"),
        "--plan",
        inputs["plan"],
        "--stores",
        *inputs["stores"],
        "--val",
        inputs["val"],
        "--config",
        json.dumps(cfg),
        "--out-dir",
        str(out),
    ]


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env or clean_env(), timeout=300)
    assert proc.returncode == 0, f"{cmd[:6]} failed ({proc.returncode}):\n{proc.stderr[-5000:]}"
    return proc


def start(cmd: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """Start a training process; its stderr is readable line by line unless ``log`` is given."""
    if log is None:
        return subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
    with open(log, "w") as handle:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=handle, env=env)


def wait_for_checkpoint(proc: subprocess.Popen, min_epoch: int) -> tuple[int, int, str]:
    """Read ``proc``'s log until it reports a checkpoint in epoch ``min_epoch`` or later at a
    step > 0 (mid-epoch); returns (epoch, step, log so far)."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        match = CHECKPOINT_LINE.search(line)
        if match and int(match[1]) >= min_epoch and int(match[2]) > 0:
            return int(match[1]), int(match[2]), "".join(seen)
    proc.wait()
    raise AssertionError(f"no mid-epoch checkpoint in epoch {min_epoch}:\n{''.join(seen)[-3000:]}")


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert list(a) == list(b)
    if atol == 0.0:
        for key in a:
            assert torch.equal(a[key], b[key]), key
        return
    worst = max(a, key=lambda k: float((a[k] - b[k]).abs().max()))
    difference = float((a[worst] - b[worst]).abs().max())
    assert difference <= atol, f"{worst}: max |difference| {difference:.3g} > {atol}"


def assert_ranks_agree(state: dict, world_size: int) -> None:
    digests = state["rank_weight_digests"]
    assert len(digests) == world_size
    assert set(digests) == {weights_digest(state["model_state"])}


@pytest.fixture(scope="module")
def single_run(inputs, tmp_path_factory) -> dict:
    """The uninterrupted reference: one process, batch 2."""
    out = tmp_path_factory.mktemp("single")
    run([sys.executable, *train_args(inputs, CONFIG, out)])
    return load(out / "last.pt")


@pytest.fixture(scope="module")
def ddp_run(inputs, tmp_path_factory) -> dict:
    """Two DDP ranks with batch 1 each, started by torchrun."""
    out = tmp_path_factory.mktemp("ddp")
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2"]
    run([*cmd, *train_args(inputs, config(backend="ddp", batch_size=1), out)])
    return load(out / "last.pt")


# ------------------------------------------------------------------ rendezvous, no processes


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [
        ("node17", "node17"),
        ("gpu[07-09,12]", "gpu07"),
        ("gpu[3,5-7],cpu1", "gpu3"),
        ("a1,b2", "a1"),
        ("rack[2-3]-n[001-004]", "rack2-n001"),
    ],
)
def test_first_host_of_a_slurm_node_list(nodelist, host):
    assert first_host(nodelist) == host


def test_srun_tasks_find_rank_0_from_slurms_environment():
    env = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_NODELIST": "gpu[04-07]",
        "SLURM_JOB_ID": "1234567",
    }
    rdv = slurm_rendezvous(env)
    assert rdv == {
        "rank": 5,
        "world_size": 8,
        "local_rank": 1,
        "master_addr": "gpu04",
        "master_port": 20000 + 1234567 % 20000,
    }
    assert slurm_rendezvous({**env, "SLURM_STEP_NUM_TASKS": "6"})["world_size"] == 6
    launch_ip = {**env, "SLURM_LAUNCH_NODE_IPADDR": "10.0.0.9"}
    del launch_ip["SLURM_JOB_NODELIST"]
    assert slurm_rendezvous(launch_ip)["master_addr"] == "10.0.0.9"
    chosen = {**env, "MASTER_ADDR": "head", "MASTER_PORT": "29400"}
    assert slurm_rendezvous(chosen)["master_addr"] == "head"
    assert slurm_rendezvous(chosen)["master_port"] == 29400


def test_unknown_backend_is_a_cohortseg_error():
    with pytest.raises(CohortsegError, match="training.backend: 'mpi'"):
        init("mpi", "cpu")


def test_a_rank_asking_for_cuda_where_there_is_none_is_told_so():
    assert rank_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert rank_device("auto") == torch.device("cpu")
    with pytest.raises(CohortsegError, match=r"training.device: 'cuda:1', but .* no CUDA device"):
        rank_device("cuda:1", local_rank=1)


# ------------------------------------------------------------------ real ranks


@pytest.mark.slow
def test_ddp_ranks_agree_and_match_one_rank_with_twice_the_batch(single_run, ddp_run):
    assert ddp_run["world_size"] == 2 and ddp_run["backend"] == "ddp"
    assert ddp_run["global_step"] == single_run["global_step"] == 48
    assert_ranks_agree(ddp_run, 2)
    assert_same_weights(ddp_run["model_state"], single_run["model_state"], atol=RANKS_ATOL)


@pytest.mark.slow
def test_horovod_ranks_agree_match_one_rank_with_twice_the_batch_and_resume(
    inputs, single_run, ddp_run, tmp_path
):
    pytest.importorskip("horovod.torch", reason="install with scripts/install_horovod.sh")
    hvd = [str(BIN / "horovodrun"), "--gloo", "-np", "2", "-H", "localhost:2", sys.executable]
    cmd = [*hvd, *train_args(inputs, config(backend="horovod", batch_size=1), tmp_path)]
    proc = start(cmd, clean_env())
    try:
        wait_for_checkpoint(proc, min_epoch=2)
        proc.send_signal(signal.SIGTERM)  # horovodrun passes it on to the ranks
        _, rest = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert "Exit code: 75" in rest, rest[-3000:]
    stopped = load(tmp_path / "last.pt")
    assert not stopped["finished"] and stopped["step"] > 0
    assert_ranks_agree(stopped, 2)

    log = run(cmd).stderr
    assert f"resumed from {tmp_path / 'last.pt'}: epoch {stopped['epoch'] + 1}" in log
    state = load(tmp_path / "last.pt")
    assert state["world_size"] == 2 and state["backend"] == "horovod"
    assert state["finished"] and state["global_step"] == 48
    assert_ranks_agree(state, 2)
    assert_same_weights(state["model_state"], single_run["model_state"], atol=RANKS_ATOL)
    # two ranks average gradients exactly alike in both backends ((a + b) / 2 = a/2 + b/2 in
    # binary floating point), so the resumed run must equal DDP's uninterrupted one bit for bit
    assert_same_weights(state["model_state"], ddp_run["model_state"])


@pytest.mark.slow
def test_killed_mid_epoch_resumes_and_ends_bitwise_equal(inputs, single_run, tmp_path):
    cmd = [sys.executable, *train_args(inputs, CONFIG, tmp_path)]
    proc = start(cmd, clean_env())
    try:
        epoch, step, _ = wait_for_checkpoint(proc, min_epoch=2)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed = load(tmp_path / "last.pt")
    assert not killed["finished"] and killed["epoch"] >= 1 and killed["step"] > 0

    log = run(cmd).stderr
    resumed = re.search(r"resumed from \S+: epoch (\d+), step (\d+)", log)
    assert resumed, log[-3000:]
    assert int(resumed[1]) == killed["epoch"] + 1 and int(resumed[2]) == killed["step"] > 0
    assert "epoch 1/3:" not in log  # no epoch before the checkpoint's is trained again
    assert f"epoch {killed['epoch'] + 1}/3:" in log and "epoch 3/3:" in log
    assert [r["epoch"] for r in read_tsv(tmp_path / "training_log.tsv")] == ["1", "2", "3"]
    final = load(tmp_path / "last.pt")
    assert final["finished"] and final["global_step"] == 48
    assert_same_weights(final["model_state"], single_run["model_state"])
    assert not list(tmp_path.glob(".*.pt*")), "temporary files left behind"


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits_with_75(inputs, tmp_path):
    ckpt = tmp_path / "checkpoints"
    cmd = [sys.executable, *train_args(inputs, CONFIG, tmp_path), "--checkpoint-dir", str(ckpt)]
    proc = start(cmd, clean_env())
    try:
        wait_for_checkpoint(proc, min_epoch=1)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED == 75, rest[-3000:]
    assert "SIGTERM: stopped after epoch" in rest
    state = load(ckpt / "last.pt")
    assert not state["finished"] and 0 < state["global_step"] < 48
    assert not (tmp_path / "last.pt").exists()  # results appear only when training is done


def free_port_job_id() -> int:
    """A SLURM job id whose derived port (20000 + id % 20000) is free here."""
    while True:
        job = random.randrange(1, 10**7)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 20000 + job % 20000))
            except OSError:
                continue
        return job


@pytest.mark.slow
def test_ddp_under_srun_stops_together_on_one_ranks_signal_and_resumes_bitwise(
    inputs, ddp_run, tmp_path
):
    job = free_port_job_id()
    cmd = [sys.executable, *train_args(inputs, config(backend="ddp", batch_size=1), tmp_path)]

    def srun_task(rank: int) -> dict[str, str]:
        return clean_env(
            SLURM_PROCID=str(rank),
            SLURM_NTASKS="2",
            SLURM_LOCALID=str(rank),
            SLURM_JOB_NODELIST="localhost",
            SLURM_JOB_ID=str(job),
        )

    rank0 = start(cmd, srun_task(0))
    rank1 = start(cmd, srun_task(1), log=tmp_path / "rank1.log")
    try:
        wait_for_checkpoint(rank0, min_epoch=2)
        rank1.send_signal(signal.SIGUSR1)  # only rank 1 is told: rank 0 must stop with it
        _, rest = rank0.communicate(timeout=120)
        rank1.wait(timeout=120)
    finally:
        rank0.kill()
        rank1.kill()
    rank1_log = (tmp_path / "rank1.log").read_text()
    assert rank0.returncode == rank1.returncode == EXIT_INTERRUPTED, rest[-2000:] + rank1_log
    stopped = load(tmp_path / "last.pt")
    assert not stopped["finished"] and stopped["global_step"] < 48
    assert_ranks_agree(stopped, 2)

    rank0 = start(cmd, srun_task(0))
    rank1 = start(cmd, srun_task(1), log=tmp_path / "rank1.log")
    _, log = rank0.communicate(timeout=300)
    rank1.wait(timeout=60)
    assert rank0.returncode == rank1.returncode == 0, log[-3000:]
    assert f"resumed from {tmp_path / 'last.pt'}: epoch {stopped['epoch'] + 1}" in log
    final = load(tmp_path / "last.pt")
    assert final["finished"] and final["global_step"] == 48
    assert_ranks_agree(final, 2)
    assert_same_weights(final["model_state"], ddp_run["model_state"])
