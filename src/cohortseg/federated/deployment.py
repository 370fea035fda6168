"""A Flower federation on one machine, really started: one SuperLink (the coordinator) and one
SuperNode per site as separate processes on the loopback interface, and the Flower App run on
it with ``flwr run`` (Flower's Deployment Engine, as at real sites). Insecure mode (allowed on
loopback only), or TLS with SuperNode authentication as in a real deployment
(:mod:`cohortseg.federated.credentials`), each SuperNode then in a working directory of its own."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from cohortseg.core.cohort import DEFAULT_SITE
from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import copy_atomically, read_json, write_json, write_text, write_tsv

log = logging.getLogger(__name__)


LOOPBACK = "127.0.0.1"


#: The Flower App that federated training runs (its ServerApp and ClientApp:
#: cohortseg.federated.server_app).
APP_DIR = Path(__file__).resolve().parents[3] / "workflow" / "flower"


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    """Send ``signum`` to ``process``'s process group (the process, started in a session of its
    own, and what it started: a SuperNode's SuperExec and ClientApp processes, which would
    otherwise finish their round's training after the SuperNode stopped)."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:  # the whole group is gone
        pass


def _stop_groups(processes: list[subprocess.Popen], timeout_s: float = 15.0) -> None:
    """SIGTERM to every process group of ``processes``, then SIGKILL to the groups of those
    still running after ``timeout_s`` seconds."""
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(process, signal.SIGKILL)


def threads_per_site(n_sites: int, environ: Mapping[str, str] = os.environ) -> int:
    """CPU threads for each site's processes when ``n_sites`` SuperNodes share this machine:
    the machine's (``OMP_NUM_THREADS`` if set, else the CPUs this process may run on) divided
    among them, at least 1. Without it every site's ClientApp would start a thread per core
    and the sites' threads would oversubscribe the cores: measured on 2 cores with 3 sites,
    a 16-step round took 20–25 s instead of 3.5 s."""
    available = int(environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)) or 1)
    return max(1, available // max(1, n_sites))


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
    """A SuperNode's ``--node-config`` (or ``flwr run --run-config``): ``key="value"`` pairs
    (strings quoted, booleans lower case, as TOML)."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = f'"{value}"' if isinstance(value, str | Path) else str(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def write_connection(flwr_home: str | os.PathLike[str], address: str, ca: str | None) -> Path:
    """The ``flwr`` CLI's ``config.toml`` in ``flwr_home``: the SuperLink connection
    ``cohortseg`` at ``address``, over TLS verified with the CA certificate ``ca``, or insecure
    when ``ca`` is None."""
    home = Path(flwr_home)
    home.mkdir(parents=True, exist_ok=True)
    security = f'root-certificates = "{Path(ca).resolve()}"' if ca else "insecure = true"
    path = home / "config.toml"
    write_text(
        path,
        '[superlink]\ndefault = "cohortseg"\n\n[superlink.cohortseg]\n'
        f'address = "{address}"\n{security}\n',
    )
    return path


def register_supernode(
    flwr_home: str | os.PathLike[str], public_key: str | os.PathLike[str]
) -> str:
    """Register a site's SuperNode public key with the SuperLink (``flwr supernode register``,
    Flower's CLI-managed SuperNode authentication), through the connection of ``flwr_home``.
    Returns Flower's answer. Raises ``CohortsegError`` if it refuses."""
    proc = subprocess.run(
        [_bin("flwr"), "supernode", "register", str(public_key), "cohortseg"],
        capture_output=True,
        text=True,
        env={**os.environ, "FLWR_HOME": str(flwr_home)},
        timeout=120,
    )
    if proc.returncode != 0 or "registered successfully" not in proc.stdout:
        raise CohortsegError(
            f"the SuperLink refused SuperNode key {public_key}: {proc.stdout[-500:]}"
            f"{proc.stderr[-500:]}"
        )
    return proc.stdout.strip().splitlines()[-1]


def _security(credentials: Mapping | None, site: str | None = None) -> list[str]:
    """Command-line flags of the SuperLink (``site`` None) or a site's SuperNode."""
    if credentials is None:
        return ["--insecure"]
    if site is None:
        return [
            "--ssl-ca-certfile",
            str(credentials["ca"]),
            "--ssl-certfile",
            str(credentials["certificate"]),
            "--ssl-keyfile",
            str(credentials["key"]),
            "--enable-supernode-auth",
        ]
    return [
        "--root-certificates",
        str(credentials["ca"]),
        "--auth-supernode-private-key",
        str(credentials["nodes"][site]["private"]),
    ]


@contextmanager
def local_federation(
    sites: Mapping[str, Mapping[str, object]],
    workdir: str | os.PathLike[str],
    timeout_s: float = 60,
    credentials: Mapping | None = None,
    site_workdirs: Mapping[str, str | os.PathLike[str]] | None = None,
) -> Iterator[dict[str, object]]:
    """Start a SuperLink and one SuperNode per site (``sites``: site → its node config), yield
    what :func:`run_app` needs (the SuperLink's address, FLWR_HOME, the CA certificate, the
    processes), and stop them all on leaving.

    ``credentials`` (None: insecure, on loopback): ``ca``, ``certificate``, ``key`` (the
    SuperLink's TLS files, :func:`cohortseg.federated.credentials.write_tls_certificates`) and
    ``nodes`` (site → ``private``, ``public``:
    :func:`cohortseg.federated.credentials.write_node_keys`); every site's public key is registered
    before its SuperNode starts, and only registered SuperNodes may connect. A site's SuperNode runs
    in ``site_workdirs[site]`` (its own working directory, as at a hospital; default ``workdir``),
    with the machine's CPU threads shared among the sites (:func:`threads_per_site`). Logs go to
    ``workdir/superlink.log`` and ``{site's workdir}/supernode-{site}.log``."""
    work = Path(workdir).resolve()  # the processes run in it: FLWR_HOME must not be relative
    work.mkdir(parents=True, exist_ok=True)
    # Flower's processes start others by name (flower-superexec, flwr-serverapp…): this
    # interpreter's bin directory first, as for the entry points started here
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "FLWR_HOME": str(work / "flwr"), "PATH": path}
    threads = str(threads_per_site(len(sites)))
    site_env = {**env, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    port = free_port()
    address = f"{LOOPBACK}:{port}"
    ca = str(credentials["ca"]) if credentials is not None else None
    processes: dict[str, subprocess.Popen] = {}
    handles = []
    try:
        out = open(work / "superlink.log", "w")  # noqa: SIM115 (closed below)
        handles.append(out)
        processes["superlink"] = subprocess.Popen(
            [_bin("flower-superlink"), *_security(credentials)]
            + ["--host", LOOPBACK, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work,
            start_new_session=True,  # its group: the processes it starts stop with it
        )
        _wait_for_port(port, processes["superlink"], timeout_s, "flower-superlink")
        write_connection(env["FLWR_HOME"], address, ca)
        for site, values in sites.items():
            site_work = Path((site_workdirs or {}).get(site, work)).resolve()
            if credentials is not None:
                register_supernode(env["FLWR_HOME"], credentials["nodes"][site]["public"])
            out = open(site_work / f"supernode-{site}.log", "w")  # noqa: SIM115
            handles.append(out)
            processes[f"supernode-{site}"] = subprocess.Popen(
                [_bin("flower-supernode"), *_security(credentials, site)]
                + ["--superlink", address, "--host", LOOPBACK, "--port", str(free_port())]
                + ["--node-config", node_config({"site": site, **values})],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**site_env, "FLWR_HOME": str(site_work / f"flwr-{site}")},
                cwd=site_work,
                start_new_session=True,  # with its SuperExec and ClientApp processes
            )
        yield {
            "address": address,
            "flwr_home": env["FLWR_HOME"],
            "ca": ca,
            "processes": processes,
        }
    finally:
        _stop_groups(list(processes.values()))
        for handle in handles:
            handle.close()


def run_timeout_s(timeout_h: float | None) -> float | None:
    """``federated.timeout_h`` (hours, or None: no limit) in seconds, as :func:`run_app`
    takes it."""
    return None if timeout_h is None else float(timeout_h) * 3600


def run_app(
    federation: Mapping[str, object],
    run_config: Mapping[str, object],
    log_path: str | os.PathLike[str],
    app_dir: str | os.PathLike[str] = APP_DIR,
    timeout_s: float | None = None,
) -> None:
    """``flwr run`` the Flower App on the federation, streaming its log to ``log_path``, with
    ``run_config`` overriding the app's ``[tool.flwr.app.config]``, for as long as it takes
    or at most ``timeout_s`` seconds (``federated.timeout_h``: :func:`run_timeout_s`).

    Raises
    ------
    CohortsegError
        If it fails, or does not finish in ``timeout_s`` (the rounds saved until then stay,
        and a rerun resumes after them).
    """
    home = Path(str(federation["flwr_home"]))
    ca = federation.get("ca")
    write_connection(home, str(federation["address"]), str(ca) if ca else None)
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
            raise CohortsegError(
                f"flwr run did not finish in {timeout_s:.0f} s ({timeout_s / 3600:.3g} h,"
                " federated.timeout_h): the rounds saved so far stay and a rerun resumes after"
                f" them; raise federated.timeout_h, or set it to null for no limit; see {log_path}"
            ) from None
    if proc.returncode != 0:
        reasons = [
            line.split("CohortsegError: ", 1)[1].strip()
            for line in Path(log_path).read_text(errors="replace").splitlines()
            if "CohortsegError: " in line
        ]
        why = f": {reasons[-1]}" if reasons else ""
        raise CohortsegError(f"flwr run failed ({proc.returncode}){why}; see {log_path}")


def site_folder(site: str) -> Path:
    """Where a site's own inputs of federated training live on one machine (at a real site:
    the site's storage)."""
    return Path("results") / "sites" / site


def prepare_sites(
    cohort,
    stores: Sequence[str],
    val: Sequence,
    config: Mapping,
    plan_path: str,
) -> dict[str, dict[str, object]]:
    """Each site's node config for federated training: its patch stores (``stores``: a list
    file), its validation subjects (``val``: a manifest), the config and the plan, all written
    into :func:`site_folder`. ``cohort`` is the run's WorkflowCohort (subjects' ``site``)."""
    site_of = {s.subject: s.site or DEFAULT_SITE for s in cohort.subjects}
    by_site: dict[str, list[str]] = {}
    for store in stores:
        by_site.setdefault(site_of[Path(store).name.removesuffix(".h5")], []).append(store)
    sites = {}
    for site in sorted(by_site):
        folder = site_folder(site) / "federated"
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "stores.txt", "".join(f"{os.path.abspath(p)}\n" for p in by_site[site]))
        rows = [
            {
                "subject": s.subject,
                "split": s.split,
                "image": os.path.abspath(s.image),
                "label": os.path.abspath(s.label),
            }
            for s in val
            if site_of[s.subject] == site
        ]
        write_tsv(folder / "val.tsv", rows, ["subject", "split", "image", "label"])
        write_json(folder / "config.json", dict(config))
        write_json(folder / "plan.json", read_json(plan_path))
        sites[site] = {
            "stores": str((folder / "stores.txt").resolve()),
            "val": str((folder / "val.tsv").resolve()),
            "config": str((folder / "config.json").resolve()),
            "plan": str((folder / "plan.json").resolve()),
        }
    return sites


def supernode_script(site: str, values: Mapping[str, object]) -> str:
    """The shell script a site's admin runs to start its SuperNode against the coordinator
    (README "A real federation"): ``flower-supernode`` over TLS with the site's key, given
    only the site's own files (``values``: its node config from :func:`prepare_sites`). The
    coordinator's address, its CA certificate and the site's private key come from the
    environment (``SUPERLINK``, ``CA``, ``KEY``, as ``profiles/slurm/federation/supernode.sbatch``
    takes them). The site is known by its name, which the coordinator's ``sites=`` list of
    ``flwr run`` holds."""
    node = shlex.quote(node_config({"site": site, **values}))
    return (
        "#!/bin/sh\n"
        f"# The SuperNode of site {site}: its own patch stores and validation subjects only.\n"
        "# SUPERLINK=coordinator.example.org:9092 CA=ca.crt KEY=keys/site.key sh supernode.sh\n"
        "set -eu\n"
        f"NODE_CONFIG={node}\n"
        'exec flower-supernode --superlink "${SUPERLINK:?the coordinator host:port}"'
        ' --root-certificates "${CA:?the CA certificate of the coordinator}"'
        ' --auth-supernode-private-key "${KEY:?the private key of this site}"'
        ' --node-config "$NODE_CONFIG"\n'
    )


def write_site_supernode(
    cohort,
    site: str,
    stores: Sequence[str],
    val: Sequence,
    config: Mapping,
    plan_path: str,
) -> Path:
    """At a site of a real federation: its SuperNode inputs (:func:`prepare_sites` with its
    own ``stores`` and ``val`` subjects, into :func:`site_folder`) and ``supernode.sh``
    (:func:`supernode_script`) beside them. Returns the script's path. Raises
    ``CohortsegError`` when the site has no patch store (no training subject)."""
    site_of = {s.subject: s.site or DEFAULT_SITE for s in cohort.subjects}
    own = [p for p in stores if site_of[Path(p).name.removesuffix(".h5")] == site]
    if not own:
        raise CohortsegError(
            f"site {site} has no patch store: its SuperNode would have nothing to train on"
            " (check the sample sheet's split and site columns)"
        )
    sites = prepare_sites(cohort, own, val, config, plan_path)
    path = site_folder(site) / "federated" / "supernode.sh"
    write_text(path, supernode_script(site, sites[site]))
    return path


def train_federated(
    config: Mapping,
    plan_path: str,
    cohort,
    stores: Sequence[str],
    val: Sequence,
    out_dir: str | os.PathLike[str],
    checkpoint_dir: str | os.PathLike[str],
) -> None:
    """``training.backend: federated`` on one machine: a SuperLink and one SuperNode per site
    of the cohort (the sample sheet's ``site`` column), ``federated.rounds`` rounds of the
    Flower App, then ``best.pt``, ``last.pt`` (the same global model), ``training_log.tsv``
    (one row per round, with each site's validation Dice) and ``learning_curve.png`` in
    ``out_dir``. The rounds' checkpoints stay in ``checkpoint_dir`` until then: a rerun after a
    killed job resumes after the last saved round; ``federated.timeout_h`` (null: none) limits
    how long the rounds may take."""
    from cohortseg.federated.task import resume_point
    from cohortseg.viz.figures import plot_learning_curve

    federated = config["federated"]
    sites = prepare_sites(cohort, stores, val, config, plan_path)
    work = Path(checkpoint_dir)
    model_dir = work / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    write_json(work / "config.json", dict(config))
    copy_atomically(Path(plan_path), work / "plan.json")
    min_sites = federated["min_sites"] or len(sites)
    run_config = {
        "config": str((work / "config.json").resolve()),
        "plan": str((work / "plan.json").resolve()),
        "out-dir": str(model_dir.resolve()),
        "rounds": int(federated["rounds"]),
        "local-steps": int(federated["local_steps"]),
        "proximal-mu": float(federated["proximal_mu"]),
        "keep-optimizer": bool(federated["keep_optimizer_state"]),
        "server-learning-rate": float(federated["server_learning_rate"]),
        "min-sites": int(min_sites),
        "sites": ",".join(sites),
    }
    log.info(
        "federated training: %d site(s) %s, %d rounds",
        len(sites),
        ", ".join(sites),
        run_config["rounds"],
    )
    with local_federation(sites, work / "flower") as federation:
        timeout_s = run_timeout_s(federated["timeout_h"])
        run_app(federation, run_config, work / "flwr-run.log", timeout_s=timeout_s)
    done, _ = resume_point(model_dir)
    if done < run_config["rounds"]:
        raise CohortsegError(
            f"federated training stopped after round {done} of {run_config['rounds']};"
            f" see {work / 'flwr-run.log'} and {work / 'flower'}/*.log"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"epoch": r["round"], **r} for r in read_json(model_dir / "rounds_log.json")]
    classes = read_json(plan_path)["classes"]
    columns = sorted(
        {k for r in rows for k in r}, key=lambda k: (k not in ("epoch", "round", "train_loss"), k)
    )
    write_tsv(out / "training_log.tsv", rows, columns)
    plot_learning_curve(rows, classes, out / "learning_curve.png")
    copy_atomically(model_dir / "best.pt", out / "best.pt")
    copy_atomically(model_dir / "best.pt", out / "last.pt")
