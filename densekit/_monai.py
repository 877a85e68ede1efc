"""MONAI imports without the log noise of MONAI's eager package import.

``import monai.inferers`` (or any MONAI submodule) first runs ``monai/__init__.py``, which imports every
MONAI submodule (``load_submodules``), ``monai.apps.auto3dseg`` among them; that imports optuna
(``optional_import("optuna")``), optuna imports alembic, and alembic's plugin registry logs seven
``setup plugin alembic....`` lines at INFO while it is imported. Under Hydra's INFO logging those lines landed
in the middle of the first volume validation. Importing only a submodule cannot avoid it (the package
``__init__`` always runs), so the ``alembic`` logger is raised to WARNING for the duration of MONAI's
first import and restored afterwards: alembic's later messages (e.g. an optuna RDB storage migration in
a sweep) still show. optuna's SQLAlchemy deprecation warning (``MovedIn20Warning``), raised by the same
import, is ignored for its duration too.
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from types import ModuleType

__all__ = ["import_monai", "sliding_window_inference"]

# loggers that MONAI's package import makes speak at INFO (module docstring)
_IMPORT_TIME_LOGGERS = ("alembic",)


def import_monai(name: str = "monai") -> ModuleType:
    """``importlib.import_module(name)`` for ``monai`` or a submodule, without the import-time INFO lines
    of the packages MONAI's ``__init__`` pulls in."""
    if name != "monai" and not name.startswith("monai."):
        raise ValueError(f"import_monai: expected 'monai' or a 'monai.' submodule, got {name!r}")
    if "monai" not in sys.modules:
        loggers = [logging.getLogger(n) for n in _IMPORT_TIME_LOGGERS]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
        try:
            with warnings.catch_warnings():
                # optuna's SQLAlchemy models, imported by monai.apps.auto3dseg: a MovedIn20Warning
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"optuna(\.|$)")
                importlib.import_module("monai")
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
    return importlib.import_module(name)


def sliding_window_inference(*args, **kwargs):
    """``monai.inferers.sliding_window_inference`` (same arguments), imported quietly on first use."""
    return import_monai("monai.inferers").sliding_window_inference(*args, **kwargs)
