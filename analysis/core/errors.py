"""Errors that end a run with a one-paragraph message and a non-zero exit, no traceback.

The CLI catches `ReportError` subclasses, prints the message (and the hint) and exits
with the class's `exit_code`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ReportError(Exception):
    """A failure the user can act on. `hint` says what to do."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{msg}\nHint: {self.hint}" if self.hint else msg


class UsageError(ReportError):
    """Bad option value (neuron, profile, model name, path)."""


class DataError(ReportError):
    """A data file is missing, empty, unreadable or has the wrong checksum."""


class ModelUnavailableError(ReportError):
    """The model's weights cannot be obtained (offline and not cached, or a bad checkpoint)."""

    exit_code = 3
