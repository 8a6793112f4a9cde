"""Errors a clinician-engineer can act on.

Every error medlens raises on bad input is a :class:`MedlensError`; the CLI prints its
message on one line, without a traceback, and exits with status 2.
"""

from __future__ import annotations


class MedlensError(Exception):
    """Base class: the message says what was expected, what was found and what to do."""


class ConfigError(MedlensError):
    """A study configuration is invalid (unknown field, wrong type, missing file)."""


class DataError(MedlensError):
    """An input file or table is unreadable or malformed; the message names the file."""


class LeakageError(MedlensError):
    """A patient appears in more than one of train / validation / test / external."""


class StageInputMissing(MedlensError):
    """A stage needs an artifact that an earlier stage or command creates."""


def did_you_mean(value: str, options: list[str] | tuple[str, ...]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest option, or an empty string."""
    import difflib

    close = difflib.get_close_matches(value, list(options), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""
