"""Pseudonymisation of subject ids: the key, and the keyed hash that replaces each id, so that
results can be shared. (Keeping input paths out of logs and tables is
:mod:`cohortseg.core.redact`.)"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from cohortseg.core.errors import CohortsegError

if TYPE_CHECKING:  # only the type: cohort imports io, which imports errors
    from cohortseg.core.cohort import Subject


def load_key(privacy: Mapping, results_dir: str = "results") -> bytes:
    """The pseudonymisation key: the environment variable named by ``privacy.key_env``, else
    the file ``privacy.key_file`` (which must not lie under ``results_dir``)."""
    value = os.environ.get(privacy["key_env"], "")
    if value:
        return value.encode()
    key_file = privacy.get("key_file")
    if key_file:
        path = Path(key_file).resolve()
        if Path(results_dir).resolve() in path.parents:
            raise CohortsegError(f"privacy.key_file {key_file} must not lie under {results_dir}/")
        if not path.exists():
            raise CohortsegError(f"privacy.key_file {key_file} does not exist")
        return path.read_bytes().strip()
    raise CohortsegError(
        f"privacy.pseudonymize is on but no key: set ${privacy['key_env']} or privacy.key_file"
    )


def pseudonym(subject: str, key: bytes) -> str:
    """A stable pseudonym: ``sub-`` and 16 hex digits of HMAC-SHA256(key, subject id)."""
    return "sub-" + hmac.new(key, subject.encode(), hashlib.sha256).hexdigest()[:16]


def pseudonymize(subjects: Sequence[Subject], key: bytes) -> list[Subject]:
    """The same subjects with pseudonymous ids (files and splits unchanged)."""
    return [replace(s, subject=pseudonym(s.subject, key)) for s in subjects]
