"""dciodvfy (dicom3tools, Debian) as the tests' judge of a DICOM object: its errors against the
object's IOD; and dcmftest (dcmtk) that it is a DICOM Part 10 file. Without the tools a test
skips, unless ``COHORTSEG_REQUIRE_DICOM_TOOLS=1`` (CI sets it; .ci/run installs dicom3tools and
dcmtk) makes it fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable

import pytest

REQUIRE_ENV = "COHORTSEG_REQUIRE_DICOM_TOOLS"


def tool(name: str, package: str) -> str:
    """A Debian tool's binary; skips the test without it (fails it where required)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"no {name} on PATH and {REQUIRE_ENV}=1 (apt-get install {package})")
        pytest.skip(f"no {name} on PATH (apt-get install {package}; CI requires it)")
    return path


def dciodvfy_errors(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Every ``Error`` line dciodvfy reports, as ``file: line`` (warnings are not errors), and
    a line for each file dcmftest does not take for a DICOM Part 10 file."""
    dciodvfy, dcmftest = tool("dciodvfy", "dicom3tools"), tool("dcmftest", "dcmtk")
    errors = []
    for path in paths:
        proc = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
        errors += [
            f"{path}: {line}"
            for line in (proc.stdout + proc.stderr).splitlines()
            if line.startswith("Error")
        ]
        check = subprocess.run([dcmftest, str(path)], capture_output=True, text=True)
        if not check.stdout.startswith("yes"):
            errors.append(f"{path}: dcmftest: {check.stdout.strip()}")
    return errors
