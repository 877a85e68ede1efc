"""Error kinds the command-line entry points report as one line (no traceback).

``ConfigError``: a config value or combination is wrong (exit status 2). ``DataError``: a dataset, file or
checkpoint is missing, unreadable or does not fit (exit status 1). Both subclass ``ValueError`` so code and
tests that expect a ``ValueError`` keep working. Anything else that escapes an entry point is treated as a
bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError"]


class ConfigError(ValueError):
    """A wrong config value or an incompatible combination; the message names the key, the value and
    what was expected."""


class DataError(ValueError):
    """A dataset, file or checkpoint that is missing, unreadable or does not fit the run; the message
    names the file."""
