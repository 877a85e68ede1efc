"""What the ONNX and TorchScript exporters share: re-parameterisation, the checked output path, the input
and output names (the task's facts), example inputs, and the trace/probe sizes.

Why odd trace sizes: both exporters record the model by running it once, so Python branches on shapes
(DenseModel pads to a multiple of the stride only ``if`` the size is not one) are frozen at the example size.
A trace at a size that takes the padding branch (an odd size: every stride is even) records the pad amounts
as shape arithmetic, and the graph then serves every size; a trace at a multiple of the stride drops the
pad and is silently wrong at other sizes. The exporters therefore trace at ``trace_sizes`` and check the
file at ``probe_sizes``, a second size.
"""

from __future__ import annotations

import copy
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config_types import select

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17  # LayerNormalization is a single op from 17; onnxruntime 1.32 runs opsets up to 23
PARITY_ATOL = 1e-4  # float32 exported vs eager, absolute, on outputs of order 1


# -- re-parameterisation --------------------------------------------------------------------------------
def _reparam_modules(model: nn.Module) -> int:
    """Modules with a fusion hook that timm's ``reparameterize_model`` would act on."""
    hooks = ("fuse", "reparameterize", "switch_to_deploy")
    return sum(1 for m in model.modules() if m is not model and any(hasattr(m, a) for a in hooks))


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def reparameterize(
    model: nn.Module,
    example_inputs: tuple | None = None,
    atol: float = PARITY_ATOL,
    report: dict | None = None,
) -> nn.Module:
    """A deep copy in eval mode with MobileOne / RepMixer / RepCPE / large-kernel branches fused into single
    convolutions (timm's ``reparameterize_model``: conv+BN folding, RepVGG-style branch sums). Models
    without such branches come back as an unchanged eval-mode copy. The input model is not modified.

    With ``example_inputs`` (a tuple of tensors) the fused copy is run against the original: a max abs
    difference above ``atol * max(1, max|output|)`` is a RuntimeError (fusion changes float rounding only).
    ``report`` (a dict, optional) receives ``fused_modules``, ``params_before``, ``params_after`` and
    ``max_abs_diff`` (None without inputs).
    """
    from timm.utils.model import reparameterize_model

    model = model.eval()
    hooks, before = _reparam_modules(model), _num_params(model)
    fused = copy.deepcopy(model)
    if hooks:
        fused = reparameterize_model(fused, inplace=True)
    fused.eval()
    diff = None
    if example_inputs is not None:
        with torch.no_grad():
            ref, out = model(*example_inputs), fused(*example_inputs)
        diff = float((ref - out).abs().max())
        tol = atol * max(1.0, float(ref.abs().max()))
        if not diff <= tol:
            raise RuntimeError(
                f"re-parameterisation changed the outputs: max abs diff {diff:.3g} > {tol:.3g} "
                f"(inputs {[tuple(x.shape) for x in example_inputs]})"
            )
    info = {"fused_modules": hooks, "params_before": before, "params_after": _num_params(fused), "max_abs_diff": diff}
    log.info("reparameterize: %s", info)
    if report is not None:
        report.update(info)
    return fused


# -- the output file ---------------------------------------------------------------------------------------
def check_output_path(path: str | Path, inputs: tuple = (), what: str = "output") -> Path:
    """The file an export will write, checked before any model is built or exported: not one of ``inputs``
    (e.g. the checkpoint it is exported from), not a directory, its directory created and writable (a probe
    file is written and removed) and, if the file exists, replaceable. ``PermissionError`` / ``OSError``
    naming ``what`` otherwise; returns the path."""
    from ..errors import ConfigError
    from ..runs import check_writable

    path = Path(path).expanduser()
    target = path.resolve()
    for source in inputs:
        if Path(source).expanduser().resolve() == target:
            raise ConfigError(
                f"{what}={path} is the input {source} itself: the export would overwrite it; choose another {what}=..."
            )
    if path.is_dir():
        raise IsADirectoryError(f"{what}={path} is a directory; give a file name, e.g. {what}={path / 'model.onnx'}")
    blocking = next((p for p in path.parents if p.exists()), None)  # the nearest existing ancestor
    if blocking is not None and not blocking.is_dir():
        raise NotADirectoryError(f"{what}={path}: {blocking} is a file, not a directory")
    check_writable(path.parent, what=what)
    if path.exists():
        try:
            with open(path, "ab"):  # opened for appending, nothing written: the file is unchanged
                pass
        except OSError as err:
            raise PermissionError(
                f"{what}={path} exists and cannot be replaced ({err.strerror or err}); choose another {what}=..."
            ) from None
    return path


# -- inputs and names --------------------------------------------------------------------------------
def io_names(task: str | None, example_inputs: tuple) -> tuple[tuple[str, ...], str]:
    """(input names, output name): the task's ``inputs`` and ``output_name``. Without a task, the input names
    of the first registered task that takes as many inputs of that dimensionality (image / image1, image2 /
    volume), else input0, input1, ...; the output is then called "output"."""
    from ..tasks import TASKS, get_task  # here: only naming by task needs the task classes (and Lightning)

    if task is not None:
        cls = get_task(task)  # a ValueError listing the registered tasks
        if len(cls.inputs) != len(example_inputs):
            raise ValueError(
                f"task {task!r} takes {len(cls.inputs)} input(s) {list(cls.inputs)}, "
                f"got {len(example_inputs)} example input(s)"
            )
        return tuple(cls.inputs), cls.output_name
    dims = example_inputs[0].dim() - 2 if example_inputs else 0
    for cls in TASKS.values():
        if len(cls.inputs) == len(example_inputs) and cls.dims == dims:
            return tuple(cls.inputs), "output"
    return tuple(f"input{i}" for i in range(len(example_inputs))), "output"


def example_inputs_for(
    config: dict, height: int, width: int, depth: int | None = None, batch: int = 1, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Random example inputs for a run config's task (``DenseTask.example_inputs``): one tensor per task
    input, (B, C, H, W) images in [0, 1] or (B, C, D, H, W) volumes. C is ``backbone.in_channels`` where the
    config sets it (else the task's default); a volume's D is ``depth``, else the data patch's first size,
    else 32."""
    from ..tasks import get_task  # as in io_names

    task = get_task(config["task"]["name"])
    size: tuple[int, ...] = (int(height), int(width))
    if task.dims == 3:
        patch = select(config, "data.patch")
        size = (int(depth or (patch[0] if patch else 32)), *size)
    kwargs = {}
    channels = select(config, "backbone.in_channels")
    if channels:
        kwargs["in_channels"] = int(channels)
    generator = torch.Generator().manual_seed(seed)
    return tuple(task.example_inputs(batch=batch, size=size, generator=generator, **kwargs))


def check_inputs(example_inputs) -> tuple[torch.Tensor, ...]:
    if torch.is_tensor(example_inputs):
        example_inputs = (example_inputs,)
    if (
        not isinstance(example_inputs, (tuple, list))
        or not example_inputs
        or not all(torch.is_tensor(x) for x in example_inputs)
    ):
        raise TypeError(f"example_inputs must be a tuple of tensors, got {type(example_inputs).__name__}")
    for x in example_inputs:
        if x.dim() not in (4, 5):
            raise ValueError(f"expected inputs (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}")
    return tuple(x.float() for x in example_inputs)


def resize_spatial(inputs: tuple, sizes: list[int]) -> tuple:
    """The same tensors at other spatial sizes (replicate-padded or cropped at the end of each axis)."""
    out = []
    for x in inputs:
        spatial = list(x.shape[2:])
        pad = []
        for have, want in zip(reversed(spatial), reversed(sizes)):
            pad += [0, max(0, want - have)]
        y = F.pad(x, pad, mode="replicate") if any(pad) else x
        idx = (slice(None), slice(None)) + tuple(slice(0, s) for s in sizes)
        out.append(y[idx].contiguous())
    return tuple(out)


def trace_sizes(spatial: list[int]) -> list[int]:
    """Odd sizes: no stride (all powers of two) divides them, so every 'pad to a multiple' branch is traced.
    One pixel less than an even size: it pads back to the same multiple, so the trace costs no more."""
    return [s if s % 2 else max(1, s - 1) for s in spatial]


def probe_sizes(spatial: list[int], avoid: list[int]) -> list[int]:
    """A second size, smaller (cheap) and different from the export and trace sizes, to verify the graph."""
    sizes = []
    for s, a in zip(spatial, avoid):
        p = max(1, s - s // 4 - 1)
        sizes.append(p if p not in (s, a) else s + 3)
    return sizes


@contextmanager
def quiet_export():
    """The exporters' own deprecation notes and trace warnings (which the size probe makes moot) off."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        yield


def tolerance(ref, atol: float) -> float:
    """The allowed max abs difference to ``ref`` (a numpy array or tensor): ``atol * max(1, max|ref|)``."""
    return atol * max(1.0, float(abs(ref).max()))
