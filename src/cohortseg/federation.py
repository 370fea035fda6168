"""A Flower federation on one machine, really started: one SuperLink (the coordinator) and one
SuperNode per site as separate processes on the loopback interface, and the Flower App run on
it with ``flwr run`` (Flower's Deployment Engine, as at real sites; insecure mode, allowed on
loopback only)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from cohortseg.errors import CohortsegError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
#: The Flower App that federated training runs (its ServerApp and ClientApp: cohortseg.flowerapp).
APP_DIR = Path(__file__).resolve().parents[2] / "workflow" / "flower"


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CohortsegError(f"{what} exited with status {process.returncode} on start")
        with socket.socket() as s:
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.2)
    raise CohortsegError(f"{what} did not listen on {LOOPBACK}:{port} within {timeout_s:.0f} s")


def node_config(values: Mapping[str, object]) -> str:
    """A SuperNode's ``--node-config``: ``key="value"`` pairs (strings quoted, as TOML)."""
    parts = []
    for key, value in values.items():
        text = f'"{value}"' if isinstance(value, str | Path) else str(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


@contextmanager
def local_federation(
    sites: Mapping[str, Mapping[str, object]],
    workdir: str | os.PathLike[str],
    timeout_s: float = 60,
) -> Iterator[dict[str, object]]:
    """Start a SuperLink and one SuperNode per site (``sites``: site → its node config), yield
    what :func:`run_app` needs (the SuperLink's address, FLWR_HOME, the processes), and stop
    them all on leaving. Logs go to ``workdir/superlink.log`` and
    ``workdir/supernode-{site}.log``."""
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FLWR_HOME": str(work / "flwr")}
    port = free_port()
    processes: dict[str, subprocess.Popen] = {}
    handles = []
    try:
        out = open(work / "superlink.log", "w")  # noqa: SIM115 (closed below)
        handles.append(out)
        processes["superlink"] = subprocess.Popen(
            [_bin("flower-superlink"), "--insecure", "--host", LOOPBACK, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work,
        )
        _wait_for_port(port, processes["superlink"], timeout_s, "flower-superlink")
        for site, values in sites.items():
            out = open(work / f"supernode-{site}.log", "w")  # noqa: SIM115
            handles.append(out)
            processes[f"supernode-{site}"] = subprocess.Popen(
                [
                    _bin("flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"{LOOPBACK}:{port}",
                    "--host",
                    LOOPBACK,
                    "--port",
                    str(free_port()),
                    "--node-config",
                    node_config({"site": site, **values}),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**env, "FLWR_HOME": str(work / f"flwr-{site}")},
                cwd=work,
            )
        yield {
            "address": f"{LOOPBACK}:{port}",
            "flwr_home": env["FLWR_HOME"],
            "processes": processes,
        }
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        for handle in handles:
            handle.close()


def run_app(
    federation: Mapping[str, object],
    run_config: Mapping[str, object],
    log_path: str | os.PathLike[str],
    app_dir: str | os.PathLike[str] = APP_DIR,
    timeout_s: float = 3600,
) -> None:
    """``flwr run`` the Flower App on the federation, streaming its log to ``log_path``, with
    ``run_config`` overriding the app's ``[tool.flwr.app.config]``. Raises
    ``CohortsegError`` if it fails or does not finish in ``timeout_s``."""
    home = Path(str(federation["flwr_home"]))
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "cohortseg"\n\n[superlink.cohortseg]\n'
        f'address = "{federation["address"]}"\ninsecure = true\n'
    )
    overrides = node_config(run_config)
    cmd = [_bin("flwr"), "run", str(app_dir), "cohortseg", "--stream", "--run-config", overrides]
    with open(log_path, "w") as out:
        try:
            proc = subprocess.run(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "FLWR_HOME": str(home)},
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise CohortsegError(f"flwr run did not finish in {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        raise CohortsegError(f"flwr run failed ({proc.returncode}); see {log_path}")
