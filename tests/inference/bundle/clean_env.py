"""A clean MONAI environment, as a collaborator who receives a bundle has: a virtual
environment with only the packages a bundle needs
(:func:`cohortseg.inference.bundle.metadata.runtime_requirements`: torch, monai, numpy,
nibabel, fire, pytorch-ignite at cohortseg's pins) and no cohortseg, made once per set of pins
and Python version and kept under ``~/.cache/cohortseg/`` (``COHORTSEG_BUNDLE_VENV_CACHE``).

Run as a script (python -m tests.inference.bundle.clean_env) to make or find it and print its
path and install time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from cohortseg.inference.bundle.metadata import runtime_requirements

CACHE = Path(os.environ.get("COHORTSEG_BUNDLE_VENV_CACHE", Path.home() / ".cache" / "cohortseg"))
DONE = ".complete.json"


def requirements() -> list[str]:
    """The clean environment's pins, ``name==version``."""
    return [f"{name}=={v}" for name, v in sorted(runtime_requirements().items())]


def venv_path(pins: list[str]) -> Path:
    """Where the environment of ``pins`` for this Python is kept."""
    key = "\n".join([*pins, sys.version.split()[0]])
    return CACHE / f"bundle-venv-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def clean_environ() -> dict[str, str]:
    """This process's environment without what would let the clean one see other packages
    (PYTHONPATH, user site-packages, an active virtual environment)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PYTHONNOUSERSITE": "1"}


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def clean_venv() -> tuple[Path, dict]:
    """The clean environment's folder (made if missing) and its record: the pins, the date it
    was made and ``install_s``, the seconds that making it took."""
    pins = requirements()
    venv = venv_path(pins)
    with _locked(venv.with_name(venv.name + ".lock")):
        if (venv / DONE).is_file():
            return venv, json.loads((venv / DONE).read_text())
        shutil.rmtree(venv, ignore_errors=True)
        start = time.monotonic()
        env = clean_environ()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-input", "-q"]
        subprocess.run([*pip, *pins], check=True, env=env)
        record = {
            "pins": pins,
            "python": sys.version.split()[0],
            "made": time.strftime("%Y-%m-%d %H:%M"),
            "install_s": round(time.monotonic() - start, 1),
        }
        (venv / DONE).write_text(json.dumps(record, indent=2))
        return venv, record


if __name__ == "__main__":
    path, made = clean_venv()
    print(path)
    print(json.dumps(made, indent=2))
