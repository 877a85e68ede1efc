"""densekit: dense prediction (segmentation, depth, flow, 3D volumes) from mobile backbones.

The public names are imported on first use (PEP 562 ``__getattr__``): ``import densekit`` itself is cheap, so
a command-line entry point can check its config and report a mistake in a second instead of after torch,
timm and Lightning have loaded.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"
__all__ = ["Predictor", "create_backbone", "create_model", "metrics", "ops", "__version__"]

# public name -> (submodule, attribute in it; None = the submodule itself)
_LAZY = {
    "Predictor": ("inference", "Predictor"),
    "create_backbone": ("models", "create_backbone"),
    "create_model": ("builder", "create_model"),
    "metrics": ("metrics", None),
    "ops": ("ops", None),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'densekit' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(f".{module_name}", __name__)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
