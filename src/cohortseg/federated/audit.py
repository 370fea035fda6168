"""Which files a federated process opened (Python audit hooks), so that tests can check that no
site touched another's files and the coordinator touched no image."""

from __future__ import annotations

import sys
from pathlib import Path

_recording: set[str] = set()


def record_opened_files(log_path: str) -> None:
    """Append the path of every file this process opens from now on to ``log_path``: Python's
    ``open`` audit events, and ``cohortseg.open`` for the patch stores that HDF5 opens in C
    (:func:`cohortseg.preprocessing.patches.read_store`). Once per process and log (an audit hook
    cannot be removed)."""
    if not log_path or log_path in _recording:
        return
    _recording.add(log_path)
    handle = open(log_path, "a", buffering=1)  # noqa: SIM115 (open for the process's life)

    def hook(event: str, args: tuple) -> None:
        if event in ("open", "cohortseg.open") and args and isinstance(args[0], str | bytes | Path):
            path = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
            if path != log_path:
                handle.write(f"{path}\n")

    sys.addaudithook(hook)
