"""cohortseg: segment whole cohorts of 3D medical images."""

from cohortseg.core.errors import CohortsegError, InvalidInputError

__all__ = ["CohortsegError", "InvalidInputError"]
__version__ = "0.1.0"
