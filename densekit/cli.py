"""How the command-line entry points report errors: train.py and the Hydra scripts in scripts/ (evaluate.py,
export.py, inspect_data.py), each a ``hydra_entry``. A user error is one line on stderr (plus at most one
hint line), no traceback; a bug keeps its traceback.

User errors and their exit status:

  2  config: ``ConfigError``; Hydra's composition errors (unknown group choice or key, override syntax) and
     OmegaConf's (missing mandatory value, bad interpolation); a ``ValueError``/``RuntimeError`` raised while
     a config check runs (``check_config``, ``check_trainer``, a task's ``check_choices``, ``validate_config``,
     ``check_sweep_params``: incompatible choices, GPUs that are not there)
  1  data / runtime: ``DataError``, any other ``ValueError``; a missing, unreadable or unwritable file or
     directory (``FileNotFoundError``, ``NotADirectoryError``, ``IsADirectoryError``, ``PermissionError``,
     ``FileExistsError``, a full or read-only disk)

Anything else (``TypeError``, ``KeyError``, ``AttributeError``, ``RuntimeError`` from inside a library, ...) is
treated as a bug: re-raised with its traceback. ``HYDRA_FULL_ERROR=1`` in the environment, or ``debug=true`` on
the command line (taken off the arguments before Hydra parses them), shows the full traceback of user errors
too. ``SystemExit`` and ``KeyboardInterrupt`` pass through untouched (a script's own exit, Ctrl-C).

Hydra: ``@hydra.main`` catches what the task function raises and prints a traceback of its own; composition
errors happen before the task function runs. ``hydra_entry(main)`` therefore sets ``HYDRA_FULL_ERROR=1`` for
Hydra (so that Hydra re-raises instead of printing) and reports here, remembering the user's own choice in
``DENSEKIT_FULL_ERROR`` (which child processes, e.g. DDP ranks relaunching train.py, inherit). Inside the
task function ``report_errors()`` prints and raises ``SystemExit``, which Hydra lets through. A multirun
sweep is unaffected: ``densekit.sweeps.run_trial`` catches a failing trial itself and the sweep goes on.
``run_script(main, argv)`` is the same reporting for an entry point that is not a Hydra app.

Hydra-free: Hydra and OmegaConf exceptions are recognised by the module their class comes from.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .errors import ConfigError, DataError

__all__ = [
    "EXIT_CONFIG",
    "EXIT_DATA",
    "exit_code",
    "format_error",
    "full_trace_requested",
    "hydra_entry",
    "report_errors",
    "run_script",
    "take_debug_flag",
]

EXIT_CONFIG = 2
EXIT_DATA = 1
_FULL_ENV = "DENSEKIT_FULL_ERROR"  # the user's choice, kept while HYDRA_FULL_ERROR is set for Hydra's sake
_DEBUG_FLAGS = ("debug=true", "+debug=true", "debug=True", "+debug=True")
_FILE_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)
_DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT}  # full disk, read-only file system, quota
# config checks: a ValueError/RuntimeError raised while one of them runs (by it, or by a registry look-up it
# makes) is a config error
_CONFIG_CHECKS = {"check_config", "check_trainer", "check_choices", "validate_config", "check_sweep_params"}


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def full_trace_requested() -> bool:
    """True when the user asked for full tracebacks (``HYDRA_FULL_ERROR=1`` or ``debug=true``)."""
    if _FULL_ENV in os.environ:
        return _truthy(os.environ[_FULL_ENV])
    return _truthy(os.environ.get("HYDRA_FULL_ERROR"))


def take_debug_flag(argv: list[str]) -> bool:
    """Remove ``debug=true`` from ``argv`` (in place); True when it was there."""
    found = [a for a in argv if a in _DEBUG_FLAGS]
    for flag in found:
        argv.remove(flag)
    return bool(found)


def _from_library(err: BaseException, *prefixes: str) -> bool:
    return any(cls.__module__.split(".")[0] in prefixes for cls in type(err).__mro__)


def _raised_within(err: BaseException) -> set[str]:
    """The names of the functions the exception passed through, from where it was caught to where it was
    raised."""
    tb, names = err.__traceback__, set()
    while tb is not None:
        names.add(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return names


def exit_code(err: BaseException) -> int | None:
    """2 for a config error, 1 for a data/runtime user error, None for a bug (keep the traceback)."""
    if isinstance(err, (SystemExit, KeyboardInterrupt, GeneratorExit)):
        return None
    if isinstance(err, ConfigError):
        return EXIT_CONFIG
    if isinstance(err, DataError):
        return EXIT_DATA
    if _from_library(err, "hydra", "omegaconf"):
        return EXIT_CONFIG
    if isinstance(err, (ValueError, RuntimeError)) and _raised_within(err) & _CONFIG_CHECKS:
        return EXIT_CONFIG
    if isinstance(err, _FILE_ERRORS) or (isinstance(err, OSError) and err.errno in _DISK_ERRNOS):
        return EXIT_DATA
    if isinstance(err, ValueError) and not isinstance(err, UnicodeError):
        return EXIT_DATA
    return None


_NOISE = re.compile(r"^(full_key|object_type|reference_type|child_node)\s*[:=]")


def _lines(text: str) -> list[str]:
    return [line.strip() for line in str(text).splitlines() if line.strip() and not _NOISE.match(line.strip())]


def format_error(err: BaseException) -> tuple[str, str | None]:
    """(message, hint or None): the exception's first line, and one line of what follows (a Hydra
    "Available options in 'backbone':" list is joined into that one line)."""
    text = str(err)
    if isinstance(err, OSError) and err.errno is not None and err.strerror:
        text = err.strerror  # "[Errno 13] Permission denied" without the number; the file name follows below
    lines = _lines(text)
    cause = err.__cause__
    if _from_library(err, "hydra") and cause is not None and _from_library(cause, "omegaconf"):
        # "Could not override 'trainer.max_epochz'." + OmegaConf's "Key 'max_epochz' is not in struct"
        first = _lines(str(cause))[:1]
        if first and lines and first[0] not in lines[0]:
            lines[0] = f"{lines[0].rstrip('.')}: {first[0]}"
    override = getattr(err, "override", None)  # Hydra's OverrideParseException: which argument
    if isinstance(override, str) and lines and override not in lines[0]:
        lines[0] = f"cannot parse the override {override!r}: {lines[0]}"
    if not lines:
        lines = [type(err).__name__]
    message, rest = lines[0], lines[1:]
    hint = None
    if rest:
        hint = rest[0]
        if hint.endswith(":") and len(rest) > 1:  # a header and its list, one item per line, to the next header
            items = []
            for line in rest[1:]:
                if line.endswith(":"):
                    break
                items.append(line)
            hint = f"{hint} {', '.join(items)}"
        elif len(rest) > 1:
            hint = f"{hint} ..."
    missing = re.match(r"Missing mandatory value: ([\w.]+)$", message)
    if missing and hint is None:
        hint = f"set it on the command line: {missing.group(1)}=..."
    if isinstance(err, OSError) and err.filename and str(err.filename) not in message:
        message = f"{message}: {err.filename}"
    return message, hint


def _print_error(err: BaseException, stream=None) -> None:
    stream = stream or sys.stderr
    message, hint = format_error(err)
    try:
        sys.stdout.flush()  # what the run printed so far comes first
    except Exception:  # noqa: BLE001 - a closed stdout must not hide the error
        pass
    stream.write(f"error: {message}\n")
    if hint:
        stream.write(f"  {hint}\n")
    stream.flush()


@contextmanager
def report_errors(full: bool | None = None) -> Iterator[None]:
    """Turn a user error raised inside the block into one line on stderr and ``SystemExit(2 or 1)``;
    bugs (and everything with ``full`` / ``full_trace_requested()``) propagate unchanged."""
    try:
        yield
    except BaseException as err:  # noqa: BLE001 - classified, re-raised unless it is a user error
        code = exit_code(err)
        if code is None or (full if full is not None else full_trace_requested()):
            raise
        _print_error(err)
        raise SystemExit(code) from None


def hydra_entry(main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` function with one-line reporting of composition and task errors."""
    debug = take_debug_flag(sys.argv)
    if _FULL_ENV not in os.environ:  # the first process; a DDP rank inherits its parent's choice
        os.environ[_FULL_ENV] = "1" if debug or _truthy(os.environ.get("HYDRA_FULL_ERROR")) else "0"
    elif debug:
        os.environ[_FULL_ENV] = "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing its own traceback
    with report_errors():
        main()


def run_script(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> Any:
    """A script's ``main(argv)`` with one-line error reporting; ``debug=true`` shows tracebacks."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = take_debug_flag(args)
    with report_errors(full=True if debug else None):
        return main(args)
