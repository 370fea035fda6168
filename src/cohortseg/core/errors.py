"""The exception types cohortseg raises for problems a user can fix."""

from __future__ import annotations

from cohortseg.core.redact import scrub, show_path


class CohortsegError(Exception):
    """A problem with the user's input or configuration, explained for a person."""


class InvalidInputError(CohortsegError):
    """A subject's file is missing, unreadable or inconsistent.

    Parameters
    ----------
    subject
        The subject id.
    path
        The offending file.
    problem
        What is wrong, in words.
    """

    def __init__(self, subject: str, path: str, problem: str) -> None:
        self.subject = subject
        self.path = show_path(path)
        self.problem = scrub(problem, path)  # a library's message may quote the path
        super().__init__(f"{subject}: {self.path}: {self.problem}")
