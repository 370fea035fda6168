"""Redaction of input paths in what the pipeline logs and writes (pseudonymised runs), so
that results and logs can be shared without naming the files they came from."""

from __future__ import annotations

import os
from collections.abc import Mapping

REDACT_ENV = "COHORTSEG_REDACT_PATHS"


def redacting() -> bool:
    """Whether input paths must be kept out of logs and tables (pseudonymised runs: the
    environment variable :data:`REDACT_ENV` is ``1``)."""
    return os.environ.get(REDACT_ENV) == "1"


def show_path(path: str | os.PathLike[str], kind: str = "file") -> str:
    """``path`` as it may appear in logs and tables: itself, or ``<kind>`` when redacting."""
    return f"<{kind}>" if redacting() else str(path)


def scrub(text: str, path: str | os.PathLike[str], kind: str = "file") -> str:
    """``text`` (a library's message, which may quote ``path``) with ``path`` shown as
    :func:`show_path` shows it."""
    return text.replace(str(path), f"<{kind}>") if redacting() else text


def shown_config(config: Mapping) -> dict:
    """The run's configuration as the report shows it: the sample sheet's path as
    :func:`show_path` shows it (redacted in pseudonymised runs)."""
    shown = {**config}
    if shown.get("samples", "demo") != "demo":
        shown["samples"] = show_path(shown["samples"], "sample sheet")
    return shown
